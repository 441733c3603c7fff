// Pruning masks (include/frugal/prune/mask.hpp): validation and device dispatch.
#include "frugal/prune/mask.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "cu_ops.hpp"
#include "frugal/core/error.hpp"
#include "frugal/prune/score.hpp"
#include "prune/prune_internal.hpp"

namespace frugal::prune {
namespace {

void check_scores(const char* op, ConstTensorView s) {
  FRUGAL_REQUIRE(s.dtype == DType::kF32 || s.dtype == DType::kF64, op,
                 "scores must be f32 or f64, got ", dtype_name(s.dtype));
  FRUGAL_REQUIRE(s.numel() > 0, op, "empty tensor");
}

void check_sparsity(const char* op, double s) {
  FRUGAL_REQUIRE(s >= 0.0 && s < 1.0, op, "sparsity ", s, " outside [0, 1)");
}

Tensor host_contiguous(ConstTensorView v) {
  Tensor t = Tensor::wrap_strided(const_cast<void*>(v.data), v.shape, v.strides, v.dtype, v.device);
  return t.to(Device::cpu()).contiguous();
}

Tensor device_contiguous(ConstTensorView v, const ExecContext& ctx) {
  Tensor t = Tensor::wrap_strided(const_cast<void*>(v.data), v.shape, v.strides, v.dtype, v.device);
  return t.contiguous(ctx);
}

template <class T>
void require_no_nan_host(const char* op, const T* p, int64_t n) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) bad += std::isnan(p[i]) ? 1 : 0;
  FRUGAL_REQUIRE(bad == 0, op, bad, " NaN score(s)");
}

void require_no_nan(const char* op, const Tensor& c, const ExecContext& ctx) {
  if (c.device().kind == DeviceKind::kCuda) {
    const int64_t bad = cu::prune_count_nan(c.cview(), ctx);
    FRUGAL_REQUIRE(bad == 0, op, bad, " NaN score(s)");
  } else if (c.dtype() == DType::kF32) {
    require_no_nan_host(op, c.data<float>(), c.numel());
  } else {
    require_no_nan_host(op, c.data<double>(), c.numel());
  }
}

Tensor select_mask(const char* op, ConstTensorView scores, double sparsity, bool use_abs,
                   const ExecContext& ctx) {
  check_scores(op, scores);
  check_sparsity(op, sparsity);
  Tensor c = device_contiguous(scores, ctx);
  require_no_nan(op, c, ctx);
  const int64_t k = pruned_count(sparsity, c.numel());
  Tensor mask = Tensor::empty(c.shape(), DType::kU8, c.device(), ctx);
  switch (c.device().kind) {
    case DeviceKind::kCpu: {
      if (c.dtype() == DType::kF32) {
        detail::Segment<float> seg{c.data<float>(), mask.data<uint8_t>(), c.numel()};
        ctx.run([&] { cpu::prune_select_mask_f32({&seg, 1}, k, use_abs, ctx.num_threads); });
      } else {
        detail::Segment<double> seg{c.data<double>(), mask.data<uint8_t>(), c.numel()};
        ctx.run([&] { cpu::prune_select_mask_f64({&seg, 1}, k, use_abs, ctx.num_threads); });
      }
      return mask;
    }
    case DeviceKind::kCuda:
      FRUGAL_REQUIRE(c.numel() < (int64_t{1} << 31), op,
                     "CUDA masks take fewer than 2^31 elements");
      cu::prune_select_mask(c.cview(), k, use_abs ? 1 : 0, mask.view(), ctx);
      return mask;
  }
  frugal::detail::fail(ErrorCode::kUnsupported, op, "unknown device");
}

}  // namespace

int64_t pruned_count(double sparsity, int64_t n) {
  return std::llround(sparsity * static_cast<double>(n));
}

Tensor unstructured_mask(ConstTensorView scores, double sparsity, const ExecContext& ctx) {
  return select_mask("unstructured_mask", scores, sparsity, false, ctx);
}

Tensor magnitude_mask(ConstTensorView w, double sparsity, const ExecContext& ctx) {
  return select_mask("magnitude_mask", w, sparsity, true, ctx);
}

namespace {
GlobalMask global_masks(const char* op, std::span<const ConstTensorView> scores, double sparsity,
                        bool use_abs, const ExecContext& ctx) {
  FRUGAL_REQUIRE(!scores.empty(), op, "no tensors");
  check_sparsity(op, sparsity);
  const DType dt = scores[0].dtype;
  std::vector<Tensor> host;
  GlobalMask out;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    check_scores(op, scores[i]);
    FRUGAL_REQUIRE(scores[i].dtype == dt, op, "tensor ", i, " has dtype ",
                   dtype_name(scores[i].dtype), ", tensor 0 has ", dtype_name(dt));
    host.push_back(host_contiguous(scores[i]));
    require_no_nan(op, host.back(), ctx);
    out.total += host.back().numel();
    out.masks.push_back(Tensor::empty(host.back().shape(), DType::kU8));
  }
  out.pruned = pruned_count(sparsity, out.total);
  auto run = [&]<class T>(T*) {
    std::vector<detail::Segment<T>> segs;
    for (std::size_t i = 0; i < host.size(); ++i) {
      segs.push_back({host[i].data<T>(), out.masks[i].data<uint8_t>(), host[i].numel()});
    }
    ctx.run([&] {
      if constexpr (std::is_same_v<T, float>) {
        out.threshold = cpu::prune_select_mask_f32(segs, out.pruned, use_abs, ctx.num_threads);
      } else {
        out.threshold = cpu::prune_select_mask_f64(segs, out.pruned, use_abs, ctx.num_threads);
      }
    });
  };
  if (dt == DType::kF32) {
    run(static_cast<float*>(nullptr));
  } else {
    run(static_cast<double*>(nullptr));
  }
  for (std::size_t i = 0; i < scores.size(); ++i) {
    out.masks[i] = out.masks[i].to(scores[i].device, ctx);
  }
  return out;
}
}  // namespace

GlobalMask global_unstructured_masks(std::span<const ConstTensorView> scores, double sparsity,
                                     const ExecContext& ctx) {
  return global_masks("global_unstructured_masks", scores, sparsity, false, ctx);
}

GlobalMask global_magnitude_masks(std::span<const ConstTensorView> weights, double sparsity,
                                  const ExecContext& ctx) {
  return global_masks("global_magnitude_masks", weights, sparsity, true, ctx);
}

namespace {
void check_nm(const char* op, ConstTensorView s, int n, int m) {
  FRUGAL_REQUIRE(m >= 2 && m <= 16, op, "M = ", m, " outside [2, 16]");
  FRUGAL_REQUIRE(n > 0 && n < m, op, "N = ", n, " must satisfy 0 < N < M = ", m);
  FRUGAL_REQUIRE(s.rank() >= 1 && s.numel() > 0, op, "empty tensor");
  FRUGAL_REQUIRE(s.dim(-1) % m == 0, op, "last dimension ", s.dim(-1),
                 " is not divisible by M = ", m);
}
}  // namespace

Tensor nm_mask(ConstTensorView scores, int n, int m, const ExecContext& ctx) {
  const char* op = "nm_mask";
  check_scores(op, scores);
  check_nm(op, scores, n, m);
  Tensor c = device_contiguous(scores, ctx);
  require_no_nan(op, c, ctx);
  Tensor mask = Tensor::empty(c.shape(), DType::kU8, c.device(), ctx);
  switch (c.device().kind) {
    case DeviceKind::kCpu:
      cpu::prune_nm_mask(c.cview(), n, m, false, mask.view(), ctx);
      return mask;
    case DeviceKind::kCuda:
      cu::prune_nm_mask(c.cview(), n, m, 0, mask.view(), ctx);
      return mask;
  }
  frugal::detail::fail(ErrorCode::kUnsupported, op, "unknown device");
}

bool is_nm_sparse(ConstTensorView mask, int n, int m) {
  const char* op = "is_nm_sparse";
  FRUGAL_REQUIRE(mask.dtype == DType::kU8, op, "mask must be u8, got ", dtype_name(mask.dtype));
  check_nm(op, mask, n, m);
  const std::vector<uint8_t> v = host_contiguous(mask).to_vector<uint8_t>();
  for (std::size_t g = 0; g < v.size(); g += m) {
    int kept = 0;
    for (int i = 0; i < m; ++i) kept += v[g + i] != 0;
    if (kept > n) return false;
  }
  return true;
}

namespace {
// Sum over rows of the n largest of each group of m of row-major `s` (rows, K) read through perm.
double kept_sum_group(const std::vector<double>& s, int64_t rows, int64_t K,
                      const std::vector<int64_t>& perm, int64_t g, int n, int m) {
  double total = 0.0;
  double buf[16];
  for (int64_t r = 0; r < rows; ++r) {
    for (int i = 0; i < m; ++i) buf[i] = s[r * K + perm[g * m + i]];
    std::partial_sort(buf, buf + n, buf + m, std::greater<double>());
    for (int i = 0; i < n; ++i) total += buf[i];
  }
  return total;
}
}  // namespace

Permutation nm_permutation_search(ConstTensorView scores, int n, int m,
                                  const PermutationOptions& opt) {
  const char* op = "nm_permutation_search";
  check_scores(op, scores);
  FRUGAL_REQUIRE(scores.rank() == 2, op, "scores must be rank 2 (rows, K), got rank ",
                 scores.rank());
  check_nm(op, scores, n, m);
  FRUGAL_REQUIRE(opt.max_passes >= 0, op, "max_passes ", opt.max_passes, " < 0");
  Tensor c = host_contiguous(scores);
  require_no_nan(op, c, {});
  const std::vector<double> s = c.to_vector<double>();
  const int64_t rows = c.dim(0), K = c.dim(1), G = K / m;
  std::vector<int64_t> perm(K);
  std::iota(perm.begin(), perm.end(), 0);
  std::vector<double> gsum(G);
  for (int64_t g = 0; g < G; ++g) gsum[g] = kept_sum_group(s, rows, K, perm, g, n, m);
  Permutation out;
  out.kept_before = std::accumulate(gsum.begin(), gsum.end(), 0.0);
  for (out.passes = 0; out.passes < opt.max_passes;) {
    double best = 0.0;
    int64_t bi = -1, bj = -1;
    double bsi = 0, bsj = 0;
    for (int64_t i = 0; i < K; ++i) {
      for (int64_t j = i + 1; j < K; ++j) {
        const int64_t gi = i / m, gj = j / m;
        if (gi == gj) continue;
        std::swap(perm[i], perm[j]);
        const double si = kept_sum_group(s, rows, K, perm, gi, n, m);
        const double sj = kept_sum_group(s, rows, K, perm, gj, n, m);
        std::swap(perm[i], perm[j]);
        const double gain = si + sj - gsum[gi] - gsum[gj];
        // A relative margin so rounding noise never counts as an improvement (no cycling).
        if (gain > best && gain > 1e-12 * (gsum[gi] + gsum[gj])) {
          best = gain;
          bi = i;
          bj = j;
          bsi = si;
          bsj = sj;
        }
      }
    }
    ++out.passes;
    if (bi < 0) break;
    std::swap(perm[bi], perm[bj]);
    gsum[bi / m] = bsi;
    gsum[bj / m] = bsj;
  }
  out.kept_after = 0.0;
  for (int64_t g = 0; g < G; ++g) out.kept_after += kept_sum_group(s, rows, K, perm, g, n, m);
  out.perm = Tensor::from_vector<int64_t>(perm, Shape{K});
  return out;
}

Tensor permute_columns(ConstTensorView x, ConstTensorView perm) {
  const char* op = "permute_columns";
  FRUGAL_REQUIRE(x.rank() == 2, op, "x must be rank 2, got rank ", x.rank());
  FRUGAL_REQUIRE(perm.dtype == DType::kI64 && perm.rank() == 1 && perm.dim(0) == x.dim(1), op,
                 "perm must be i64 of length ", x.dim(1));
  const int64_t esize = dtype_nbytes(x.dtype, 1);
  FRUGAL_REQUIRE(esize == 1 || esize == 4 || esize == 8, op, "unsupported dtype ",
                 dtype_name(x.dtype));
  Tensor c = host_contiguous(x);
  const std::vector<int64_t> p = host_contiguous(perm).to_vector<int64_t>();
  const int64_t rows = c.dim(0), K = c.dim(1);
  std::vector<char> seen(K, 0);
  for (int64_t j = 0; j < K; ++j) {
    FRUGAL_REQUIRE(p[j] >= 0 && p[j] < K && !seen[p[j]], op, "perm is not a permutation of 0..",
                   K - 1);
    seen[p[j]] = 1;
  }
  Tensor out = Tensor::empty(c.shape(), c.dtype());
  const auto* src = static_cast<const char*>(c.data_ptr());
  auto* dst = static_cast<char*>(out.data_ptr());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < K; ++j) {
      std::memcpy(dst + (r * K + j) * esize, src + (r * K + p[j]) * esize, esize);
    }
  }
  return out;
}

Tensor nm_mask_permuted(ConstTensorView scores, ConstTensorView perm, int n, int m) {
  Tensor ps = permute_columns(scores, perm);
  Tensor pm = nm_mask(ps, n, m);  // mask in permuted order: pm[:, j] is column perm[j]
  const std::vector<int64_t> p = host_contiguous(perm).to_vector<int64_t>();
  Tensor out = Tensor::empty(pm.shape(), DType::kU8);
  const int64_t rows = pm.dim(0), K = pm.dim(1);
  const uint8_t* a = pm.data<uint8_t>();
  uint8_t* b = out.data<uint8_t>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < K; ++j) b[r * K + p[j]] = a[r * K + j];
  }
  return out.to(scores.device);
}

void apply_mask(TensorView w, ConstTensorView mask, const ExecContext& ctx) {
  const char* op = "apply_mask";
  FRUGAL_REQUIRE(w.dtype == DType::kF32 || w.dtype == DType::kF64, op, "w must be f32 or f64, got ",
                 dtype_name(w.dtype));
  FRUGAL_REQUIRE(mask.dtype == DType::kU8, op, "mask must be u8, got ", dtype_name(mask.dtype));
  FRUGAL_REQUIRE(w.shape == mask.shape, op, "mask shape differs from the tensor's");
  FRUGAL_REQUIRE(w.device == mask.device, op, "mask and tensor on different devices");
  FRUGAL_REQUIRE(w.is_contiguous() && mask.is_contiguous(), op, "tensors must be contiguous");
  switch (w.device.kind) {
    case DeviceKind::kCpu: {
      const uint8_t* mk = mask.data_as<uint8_t>();
      const int64_t n = w.numel();
      if (w.dtype == DType::kF32) {
        float* p = w.data_as<float>();
        for (int64_t i = 0; i < n; ++i) p[i] = mk[i] ? p[i] : 0.0f;
      } else {
        double* p = w.data_as<double>();
        for (int64_t i = 0; i < n; ++i) p[i] = mk[i] ? p[i] : 0.0;
      }
      return;
    }
    case DeviceKind::kCuda:
      cu::prune_apply_mask(w, mask, ctx);
      return;
  }
}

double mask_sparsity(ConstTensorView mask) {
  FRUGAL_REQUIRE(mask.dtype == DType::kU8, "mask_sparsity", "mask must be u8, got ",
                 dtype_name(mask.dtype));
  FRUGAL_REQUIRE(mask.numel() > 0, "mask_sparsity", "empty tensor");
  const std::vector<uint8_t> v = host_contiguous(mask).to_vector<uint8_t>();
  int64_t zeros = 0;
  for (uint8_t b : v) zeros += b == 0;
  return static_cast<double>(zeros) / static_cast<double>(v.size());
}

}  // namespace frugal::prune
