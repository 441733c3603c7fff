// Relation losses on the host: RKD distance and angle, and the row step of similarity-preserving
// KD (include/frugal/distill/relation.hpp). Batches are small (B up to a few hundred), so the
// pairwise quantities are held as B x B double matrices; oneTBB over rows, every sum in a fixed
// order (rows write their own slots, added in index order afterwards).
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "distill/distill_internal.hpp"

namespace frugal::distill::cpu {
namespace {

using detail::huber;
using detail::huber_grad;

/// Rows of x (B, D) as doubles.
template <class T>
std::vector<double> rows_of(ConstTensorView x) {
  const T* p = x.data_as<T>();
  std::vector<double> v(static_cast<std::size_t>(x.numel()));
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(p[i]);
  return v;
}

/// Pairwise distances d (B, B) of the rows of e (B, D), computed directly (no Gram cancellation).
std::vector<double> pairwise_distances(const std::vector<double>& e, int64_t b, int64_t d,
                                       const ExecContext& ctx) {
  std::vector<double> dist(static_cast<std::size_t>(b * b), 0.0);
  ctx.run([&] {
    tbb::parallel_for(int64_t{0}, b, [&](int64_t i) {
      for (int64_t j = 0; j < b; ++j) {
        if (j == i) continue;
        double acc = 0.0;
        for (int64_t k = 0; k < d; ++k) {
          const double diff = e[i * d + k] - e[j * d + k];
          acc += diff * diff;
        }
        dist[i * b + j] = std::sqrt(acc);
      }
    });
  });
  return dist;
}

double off_diagonal_mean(const std::vector<double>& m, int64_t b) {
  double s = 0.0;
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < b; ++j) {
      if (i != j) s += m[i * b + j];
    }
  }
  return s / static_cast<double>(b * (b - 1));
}

}  // namespace

void distill_rkd_distance(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                          double* out, const ExecContext& ctx) {
  detail::visit_real(student.dtype, "distill_rkd_distance", [&]<class T>() {
    const int64_t b = student.shape[0];
    const int64_t ds = student.numel() / b, dt = teacher.numel() / b;
    const std::vector<double> es = rows_of<T>(student), et = rows_of<T>(teacher);
    const std::vector<double> dist_s = pairwise_distances(es, b, ds, ctx);
    const std::vector<double> dist_t = pairwise_distances(et, b, dt, ctx);
    const double mu_s = off_diagonal_mean(dist_s, b), mu_t = off_diagonal_mean(dist_t, b);
    out[detail::kRkdMuStudent] = mu_s;
    out[detail::kRkdMuTeacher] = mu_t;
    out[detail::kRkdLoss] = 0.0;
    if (!(mu_s > 0.0) || !(mu_t > 0.0)) return;
    const double inv_b2 = 1.0 / static_cast<double>(b * b);
    // g_ij = dL/dpsi_ij; c = (1/P) sum g_ij psi_ij carries the gradient through mu_s.
    std::vector<double> g(static_cast<std::size_t>(b * b), 0.0);
    double loss = 0.0, c = 0.0;
    for (int64_t i = 0; i < b; ++i) {
      for (int64_t j = 0; j < b; ++j) {
        if (i == j) continue;
        const double ps = dist_s[i * b + j] / mu_s;
        const double x = ps - dist_t[i * b + j] / mu_t;
        loss += huber(x);
        g[i * b + j] = huber_grad(x) * inv_b2;
        c += g[i * b + j] * ps;
      }
    }
    c /= static_cast<double>(b * (b - 1));
    out[detail::kRkdLoss] = loss * inv_b2;
    // dL/dd_kl = (g_kl - c) / mu_s for each ordered pair; both (k, l) and (l, k) move with e_k:
    // grad_k = sum_l 2 (g_kl - c) / (mu_s d_kl) (e_k - e_l).
    T* pg = grad.data_as<T>();
    ctx.run([&] {
      tbb::parallel_for(int64_t{0}, b, [&](int64_t k) {
        std::vector<double> acc(static_cast<std::size_t>(ds), 0.0);
        for (int64_t l = 0; l < b; ++l) {
          const double d = dist_s[k * b + l];
          if (l == k || d == 0.0) continue;
          const double m = 2.0 * (g[k * b + l] - c) / (mu_s * d);
          for (int64_t q = 0; q < ds; ++q) acc[q] += m * (es[k * ds + q] - es[l * ds + q]);
        }
        for (int64_t q = 0; q < ds; ++q) pg[k * ds + q] = static_cast<T>(acc[q]);
      });
    });
  });
}

double distill_rkd_angle(ConstTensorView student, ConstTensorView teacher, TensorView grad,
                         const ExecContext& ctx) {
  return detail::visit_real(student.dtype, "distill_rkd_angle", [&]<class T>() -> double {
    const int64_t b = student.shape[0];
    const int64_t ds = student.numel() / b, dt = teacher.numel() / b;
    const std::vector<double> es = rows_of<T>(student), et = rows_of<T>(teacher);
    const double inv_b3 = 1.0 / static_cast<double>(b * b * b);
    std::vector<double> gacc(static_cast<std::size_t>(b * ds), 0.0);
    std::vector<double> us(static_cast<std::size_t>(b * ds)), ut(static_cast<std::size_t>(b * dt));
    std::vector<double> ns(static_cast<std::size_t>(b)), cs(static_cast<std::size_t>(b * b));
    std::vector<double> gm(static_cast<std::size_t>(b * b)), row_loss(static_cast<std::size_t>(b));
    std::vector<double> gv(static_cast<std::size_t>(b * ds));
    double loss = 0.0;
    // Anchors one after another (fixed order); rows in parallel inside each anchor.
    for (int64_t a = 0; a < b; ++a) {
      ctx.run([&] {
        // u_x = n(e_x - e_a) for student and teacher; n(0) = 0.
        tbb::parallel_for(int64_t{0}, b, [&](int64_t x) {
          double ss = 0.0, tt = 0.0;
          for (int64_t q = 0; q < ds; ++q) {
            us[x * ds + q] = es[x * ds + q] - es[a * ds + q];
            ss += us[x * ds + q] * us[x * ds + q];
          }
          for (int64_t q = 0; q < dt; ++q) {
            ut[x * dt + q] = et[x * dt + q] - et[a * dt + q];
            tt += ut[x * dt + q] * ut[x * dt + q];
          }
          ns[x] = std::sqrt(ss);
          const double is = ns[x] > 0.0 ? 1.0 / ns[x] : 0.0;
          const double nt = std::sqrt(tt);
          const double it = nt > 0.0 ? 1.0 / nt : 0.0;
          for (int64_t q = 0; q < ds; ++q) us[x * ds + q] *= is;
          for (int64_t q = 0; q < dt; ++q) ut[x * dt + q] *= it;
        });
        // cos matrices, the Huber terms and G = h'(cos_s - cos_t) / B^3.
        tbb::parallel_for(int64_t{0}, b, [&](int64_t x) {
          double l = 0.0;
          for (int64_t y = 0; y < b; ++y) {
            double c_s = 0.0, c_t = 0.0;
            for (int64_t q = 0; q < ds; ++q) c_s += us[x * ds + q] * us[y * ds + q];
            for (int64_t q = 0; q < dt; ++q) c_t += ut[x * dt + q] * ut[y * dt + q];
            cs[x * b + y] = c_s;
            l += huber(c_s - c_t);
            gm[x * b + y] = huber_grad(c_s - c_t) * inv_b3;
          }
          row_loss[x] = l;
        });
        // dL/du_x = sum_y (G_xy + G_yx) u_y, projected: (dL/du - u (u . dL/du)) / |v_x|.
        tbb::parallel_for(int64_t{0}, b, [&](int64_t x) {
          double* out = gv.data() + x * ds;
          std::fill(out, out + ds, 0.0);
          if (ns[x] == 0.0) return;
          double rho = 0.0;
          for (int64_t y = 0; y < b; ++y) {
            const double w = gm[x * b + y] + gm[y * b + x];
            if (w == 0.0) continue;
            rho += w * cs[x * b + y];
            for (int64_t q = 0; q < ds; ++q) out[q] += w * us[y * ds + q];
          }
          for (int64_t q = 0; q < ds; ++q) out[q] = (out[q] - rho * us[x * ds + q]) / ns[x];
        });
      });
      for (int64_t x = 0; x < b; ++x) loss += row_loss[x];
      // v_x = e_x - e_a: e_x gets +gv_x, the anchor -gv_x.
      for (int64_t x = 0; x < b; ++x) {
        for (int64_t q = 0; q < ds; ++q) {
          gacc[x * ds + q] += gv[x * ds + q];
          gacc[a * ds + q] -= gv[x * ds + q];
        }
      }
    }
    T* pg = grad.data_as<T>();
    for (int64_t i = 0; i < b * ds; ++i) pg[i] = static_cast<T>(gacc[i]);
    return loss * inv_b3;
  });
}

double distill_sp_rows(ConstTensorView gram_student, ConstTensorView gram_teacher,
                       TensorView grad_gram, const ExecContext& ctx) {
  return detail::visit_real(gram_student.dtype, "distill_sp_rows", [&]<class T>() -> double {
    const T* ps = gram_student.data_as<T>();
    const T* pt = gram_teacher.data_as<T>();
    T* pg = grad_gram.data_as<T>();
    const int64_t b = gram_student.shape[0];
    const double inv_b2 = 1.0 / static_cast<double>(b * b);
    std::vector<double> row_loss(static_cast<std::size_t>(b), 0.0);
    ctx.run([&] {
      tbb::parallel_for(int64_t{0}, b, [&](int64_t i) {
        const T* s = ps + i * b;
        const T* t = pt + i * b;
        double ss = 0.0, tt = 0.0;
        for (int64_t j = 0; j < b; ++j) {
          ss += double(s[j]) * double(s[j]);
          tt += double(t[j]) * double(t[j]);
        }
        const double is = ss > 0.0 ? 1.0 / std::sqrt(ss) : 0.0;
        const double it = tt > 0.0 ? 1.0 / std::sqrt(tt) : 0.0;
        // D = (s is - t it); loss_i = |D|^2; dL/dGhat = 2 D / B^2; back through the row norm:
        // dL/dG_i = (dGhat - Ghat (Ghat . dGhat)) / |G_i|.
        double l = 0.0, proj = 0.0;
        for (int64_t j = 0; j < b; ++j) {
          const double d = double(s[j]) * is - double(t[j]) * it;
          l += d * d;
          proj += double(s[j]) * is * d;
        }
        row_loss[i] = l;
        for (int64_t j = 0; j < b; ++j) {
          const double d = double(s[j]) * is - double(t[j]) * it;
          pg[i * b + j] = static_cast<T>(2.0 * inv_b2 * (d - double(s[j]) * is * proj) * is);
        }
      });
    });
    double loss = 0.0;
    for (double l : row_loss) loss += l;
    return loss * inv_b2;
  });
}

}  // namespace frugal::distill::cpu
