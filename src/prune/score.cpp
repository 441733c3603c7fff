// Importance scores (include/frugal/prune/score.hpp).
#include "frugal/prune/score.hpp"

#include <cmath>

#include "cu_ops.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/random.hpp"

namespace frugal::prune {
namespace {

Tensor as_tensor(ConstTensorView v) {
  return Tensor::wrap_strided(const_cast<void*>(v.data), v.shape, v.strides, v.dtype, v.device);
}

void check_float(const char* op, ConstTensorView w) {
  FRUGAL_REQUIRE(w.dtype == DType::kF32 || w.dtype == DType::kF64, op, "expected f32 or f64, got ",
                 dtype_name(w.dtype));
  FRUGAL_REQUIRE(w.numel() > 0, op, "empty tensor");
}

}  // namespace

Tensor magnitude_scores(ConstTensorView w, const ExecContext& ctx) {
  check_float("magnitude_scores", w);
  Tensor c = as_tensor(w).contiguous(ctx);
  Tensor out = Tensor::empty(c.shape(), c.dtype(), c.device(), ctx);
  switch (c.device().kind) {
    case DeviceKind::kCpu: {
      const int64_t n = c.numel();
      if (c.dtype() == DType::kF32) {
        const float* a = c.data<float>();
        float* b = out.data<float>();
        for (int64_t i = 0; i < n; ++i) b[i] = std::abs(a[i]);
      } else {
        const double* a = c.data<double>();
        double* b = out.data<double>();
        for (int64_t i = 0; i < n; ++i) b[i] = std::abs(a[i]);
      }
      return out;
    }
    case DeviceKind::kCuda:
      cu::prune_abs(c.cview(), out.view(), ctx);
      return out;
  }
  return out;
}

Tensor row_norm_scores(ConstTensorView w, Norm norm, const ExecContext& ctx) {
  const char* op = "row_norm_scores";
  check_float(op, w);
  FRUGAL_REQUIRE(w.rank() >= 2, op, "expected rank >= 2 (rows, ...), got rank ", w.rank());
  const std::vector<double> v = as_tensor(w).to(Device::cpu(), ctx).to_vector<double>();
  const int64_t rows = w.dim(0), cols = w.numel() / rows;
  std::vector<double> out(rows);
  for (int64_t r = 0; r < rows; ++r) {
    double acc = 0.0;
    for (int64_t j = 0; j < cols; ++j) {
      const double x = v[r * cols + j];
      acc += norm == Norm::kL1 ? std::abs(x) : x * x;
    }
    out[r] = norm == Norm::kL1 ? acc : std::sqrt(acc);
  }
  return Tensor::from_vector<double>(out, Shape{rows});
}

Tensor random_scores(Shape shape, Device device, const ExecContext& ctx) {
  return rand_uniform(shape, DType::kF32, device, ctx);
}

void TaylorAccumulator::accumulate(ConstTensorView w, ConstTensorView grad) {
  const char* op = "TaylorAccumulator::accumulate";
  check_float(op, w);
  check_float(op, grad);
  FRUGAL_REQUIRE(w.shape == grad.shape, op, "weight and gradient shapes differ");
  if (sum_.defined()) {
    FRUGAL_REQUIRE(sum_.shape() == w.shape, op, "shape differs from the earlier batches");
  } else {
    sum_ = Tensor::zeros(w.shape, DType::kF64);
  }
  const std::vector<double> a = as_tensor(w).to(Device::cpu()).to_vector<double>();
  const std::vector<double> g = as_tensor(grad).to(Device::cpu()).to_vector<double>();
  double* s = sum_.data<double>();
  for (std::size_t i = 0; i < a.size(); ++i) s[i] += std::abs(a[i] * g[i]);
  ++count_;
}

Tensor TaylorAccumulator::scores() const {
  FRUGAL_REQUIRE(sum_.defined(), "TaylorAccumulator::scores", "nothing accumulated yet");
  return sum_.clone();
}

Tensor TaylorAccumulator::row_scores() const {
  FRUGAL_REQUIRE(sum_.defined(), "TaylorAccumulator::row_scores", "nothing accumulated yet");
  FRUGAL_REQUIRE(sum_.rank() >= 2, "TaylorAccumulator::row_scores", "expected rank >= 2");
  return row_norm_scores(sum_, Norm::kL1);  // the scores are >= 0: L1 is the plain row sum
}

void TaylorAccumulator::reset() {
  sum_ = Tensor();
  count_ = 0;
}

}  // namespace frugal::prune
