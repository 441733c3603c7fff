// Feature losses on the host: MSE, cosine, attention maps and attention transfer
// (include/frugal/distill/feature.hpp). oneTBB over fixed chunks or rows; partial sums go to
// their own slots and are added in index order, so results do not depend on the thread count.
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "distill/distill_internal.hpp"

namespace frugal::distill::cpu {
namespace {

constexpr int64_t kChunk = 1 << 14;  // elements per MSE chunk (fixed: sums depend on n only)
constexpr double kCosEps = 1e-8;     // cosine: norms are clamped to at least this
constexpr double kAtEps = 1e-12;     // attention transfer: map norms clamped to at least this

double sum_in_order(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x;
  return s;
}

}  // namespace

double distill_mse(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                   const ExecContext& ctx) {
  return detail::visit_real(student.dtype, "distill_mse", [&]<class T>() -> double {
    const T* ps = student.data_as<T>();
    const T* pt = teacher.data_as<T>();
    T* pg = grad.data_as<T>();
    const int64_t n = student.numel();
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    const auto two_over_n = static_cast<T>(2.0 / static_cast<double>(n));
    std::vector<double> partial(static_cast<std::size_t>(chunks), 0.0);
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, chunks, 1),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          for (int64_t k = r.begin(); k < r.end(); ++k) {
                            const int64_t hi = std::min(n, (k + 1) * kChunk);
                            double acc = 0.0;
                            for (int64_t i = k * kChunk; i < hi; ++i) {
                              const T d = ps[i] - pt[i];
                              acc += static_cast<double>(d) * static_cast<double>(d);
                              pg[i] = d * two_over_n;
                            }
                            partial[k] = acc;
                          }
                        });
    });
    return sum_in_order(partial) / static_cast<double>(n);
  });
}

double distill_cosine(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                      const ExecContext& ctx) {
  return detail::visit_real(student.dtype, "distill_cosine", [&]<class T>() -> double {
    const T* ps = student.data_as<T>();
    const T* pt = teacher.data_as<T>();
    T* pg = grad.data_as<T>();
    const int64_t rows = student.rank() >= 2 ? student.shape[0] : 1;
    const int64_t d = student.numel() / rows;
    const double inv_rows = 1.0 / static_cast<double>(rows);
    std::vector<double> row_loss(static_cast<std::size_t>(rows), 0.0);
    const int64_t grain = std::max<int64_t>(1, kChunk / std::max<int64_t>(d, 1));
    ctx.run([&] {
      tbb::parallel_for(
          tbb::blocked_range<int64_t>(0, rows, grain), [&](const tbb::blocked_range<int64_t>& r) {
            for (int64_t i = r.begin(); i < r.end(); ++i) {
              const T* s = ps + i * d;
              const T* t = pt + i * d;
              double dot = 0.0, ss = 0.0, tt = 0.0;
              for (int64_t j = 0; j < d; ++j) {
                const auto sv = static_cast<double>(s[j]);
                const auto tv = static_cast<double>(t[j]);
                dot += sv * tv;
                ss += sv * sv;
                tt += tv * tv;
              }
              const double ns = std::sqrt(ss), nt = std::sqrt(tt);
              const double cs = std::max(ns, kCosEps), ct = std::max(nt, kCosEps);
              const double cosv = dot / (cs * ct);
              row_loss[i] = 1.0 - cosv;
              // d cos / ds = t / (|s| |t|) - cos s / |s|^2; below eps the clamp is a constant.
              const double a = -inv_rows / (cs * ct);
              const double b = ns > kCosEps ? inv_rows * cosv / (ss) : 0.0;
              for (int64_t j = 0; j < d; ++j) {
                pg[i * d + j] =
                    static_cast<T>(a * static_cast<double>(t[j]) + b * static_cast<double>(s[j]));
              }
            }
          });
    });
    return sum_in_order(row_loss) * inv_rows;
  });
}

void distill_attention_map(ConstTensorView features, TensorView map, const ExecContext& ctx) {
  detail::visit_real(features.dtype, "distill_attention_map", [&]<class T>() {
    const T* pf = features.data_as<T>();
    T* pm = map.data_as<T>();
    const int64_t n = features.shape[0], c = features.shape[1];
    const int64_t hw = features.shape[2] * features.shape[3];
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, 1),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          std::vector<double> acc(static_cast<std::size_t>(hw));
                          for (int64_t i = r.begin(); i < r.end(); ++i) {
                            std::fill(acc.begin(), acc.end(), 0.0);
                            for (int64_t ch = 0; ch < c; ++ch) {
                              const T* f = pf + (i * c + ch) * hw;
                              for (int64_t p = 0; p < hw; ++p) {
                                const auto v = static_cast<double>(f[p]);
                                acc[p] += v * v;
                              }
                            }
                            for (int64_t p = 0; p < hw; ++p)
                              pm[i * hw + p] = static_cast<T>(acc[p]);
                          }
                        });
    });
  });
}

double distill_attention_transfer(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                                  const ExecContext& ctx) {
  return detail::visit_real(student.dtype, "distill_attention_transfer", [&]<class T>() -> double {
    const T* ps = student.data_as<T>();
    const T* pt = teacher.data_as<T>();
    T* pg = grad.data_as<T>();
    const int64_t n = student.shape[0], cs = student.shape[1], ct = teacher.shape[1];
    const int64_t hw = student.shape[2] * student.shape[3];
    const double inv_n = 1.0 / static_cast<double>(n);
    std::vector<double> sample_loss(static_cast<std::size_t>(n), 0.0);
    ctx.run([&] {
      tbb::parallel_for(
          tbb::blocked_range<int64_t>(0, n, 1), [&](const tbb::blocked_range<int64_t>& r) {
            std::vector<double> as(static_cast<std::size_t>(hw)), at(as.size()), da(as.size());
            for (int64_t i = r.begin(); i < r.end(); ++i) {
              std::fill(as.begin(), as.end(), 0.0);
              std::fill(at.begin(), at.end(), 0.0);
              for (int64_t ch = 0; ch < cs; ++ch) {
                const T* f = ps + (i * cs + ch) * hw;
                for (int64_t p = 0; p < hw; ++p) as[p] += double(f[p]) * double(f[p]);
              }
              for (int64_t ch = 0; ch < ct; ++ch) {
                const T* f = pt + (i * ct + ch) * hw;
                for (int64_t p = 0; p < hw; ++p) at[p] += double(f[p]) * double(f[p]);
              }
              double ss = 0.0, tt = 0.0;
              for (int64_t p = 0; p < hw; ++p) {
                ss += as[p] * as[p];
                tt += at[p] * at[p];
              }
              const double ns = std::max(std::sqrt(ss), kAtEps);
              const double nt = std::max(std::sqrt(tt), kAtEps);
              double dd = 0.0;
              for (int64_t p = 0; p < hw; ++p) {
                da[p] = as[p] / ns - at[p] / nt;  // u_s - u_t
                dd += da[p] * da[p];
              }
              const double len = std::sqrt(dd);
              sample_loss[i] = len;
              // dL/da_s = (v - u_s (u_s . v)) / |a_s| with v = (u_s - u_t) / len.
              double proj = 0.0;
              if (len > 0.0) {
                for (int64_t p = 0; p < hw; ++p) {
                  da[p] /= len;
                  proj += as[p] / ns * da[p];
                }
              } else {
                std::fill(da.begin(), da.end(), 0.0);
              }
              const bool clamped = std::sqrt(ss) <= kAtEps;
              for (int64_t p = 0; p < hw; ++p) {
                da[p] = (clamped ? da[p] : da[p] - as[p] / ns * proj) / ns * 2.0 * inv_n;
              }
              for (int64_t ch = 0; ch < cs; ++ch) {
                const T* f = ps + (i * cs + ch) * hw;
                T* g = pg + (i * cs + ch) * hw;
                for (int64_t p = 0; p < hw; ++p) g[p] = static_cast<T>(double(f[p]) * da[p]);
              }
            }
          });
    });
    return sum_in_order(sample_loss) * inv_n;
  });
}

}  // namespace frugal::distill::cpu
