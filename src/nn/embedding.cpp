// Validation and device dispatch of the embedding lookup (frugal/nn/embedding.hpp), and the module.
#include "frugal/nn/embedding.hpp"

#include "cu_ops.hpp"
#include "frugal/core/random.hpp"
#include "nn/cpu/transformer.hpp"
#include "nn/transformer_check.hpp"

namespace frugal::nn {
namespace {

constexpr const char* kFwd = "embedding_forward";
constexpr const char* kBwd = "embedding_backward";

void check_ids(const char* op, ConstTensorView ids) {
  FRUGAL_REQUIRE(ids.dtype == DType::kI64, op, "ids have dtype ", dtype_name(ids.dtype),
                 "; expected i64");
  FRUGAL_REQUIRE(ids.rank() >= 1 && ids.rank() < kMaxRank, op, "ids must have rank 1 to ",
                 kMaxRank - 1, ", got shape ", ids.shape);
  FRUGAL_REQUIRE(ids.data != nullptr || ids.numel() == 0, op, "ids have null data");
}

void check_weight(const char* op, ConstTensorView weight, const char* name) {
  detail::check_real(op, weight, name);
  FRUGAL_REQUIRE(weight.rank() == 2, op, name, " must be (V, D), got shape ", weight.shape);
}

/// Host check that every id is in [0, v).
void check_range_host(const char* op, const int64_t* ids, int64_t n, int64_t v) {
  for (int64_t i = 0; i < n; ++i) {
    FRUGAL_REQUIRE(ids[i] >= 0 && ids[i] < v, op, "id ", ids[i], " at position ", i,
                   " is out of range [0, ", v, ")");
  }
}

Shape out_shape(const Shape& ids, int64_t d) {
  Shape s = ids;
  s.push_back(d);
  return s;
}

}  // namespace

Tensor embedding_forward(ConstTensorView ids, ConstTensorView weight, const ExecContext& ctx) {
  check_ids(kFwd, ids);
  check_weight(kFwd, weight, "weight");
  FRUGAL_REQUIRE(ids.device == weight.device, kFwd, "ids are on ", ids.device.str(),
                 " but weight is on ", weight.device.str());
  const int64_t n = ids.numel(), v = weight.dim(0), d = weight.dim(1);
  Tensor out = Tensor::empty(out_shape(ids.shape, d), weight.dtype, weight.device, ctx);
  if (n == 0 || d == 0) return out;
  Tensor hi, hw;
  const ConstTensorView ic = detail::reshaped(detail::contiguous(ids, hi, ctx), {n});
  const ConstTensorView wc = detail::contiguous(weight, hw, ctx);
  const TensorView oc = detail::reshaped(out.view(), {n, d});
  switch (ids.device.kind) {
    case DeviceKind::kCpu:
      check_range_host(kFwd, ic.data_as<int64_t>(), n, v);
      cpu::embedding_forward(ic, wc, oc, ctx);
      break;
    case DeviceKind::kCuda: {
      const int64_t bad = cu::embedding_forward(ic, wc, oc, ctx);
      FRUGAL_REQUIRE(bad == 0, kFwd, bad, " of ", n, " ids are out of range [0, ", v, ")");
      break;
    }
  }
  return out;
}

void embedding_backward(ConstTensorView grad_out, ConstTensorView ids, TensorView grad_weight,
                        const ExecContext& ctx) {
  check_ids(kBwd, ids);
  check_weight(kBwd, grad_weight, "grad_weight");
  FRUGAL_REQUIRE(grad_weight.is_contiguous(), kBwd, "grad_weight must be contiguous");
  detail::check_like(kBwd, grad_out, "grad_out", grad_weight, "grad_weight");
  FRUGAL_REQUIRE(ids.device == grad_weight.device, kBwd, "ids are on ", ids.device.str(),
                 " but grad_weight is on ", grad_weight.device.str());
  const int64_t n = ids.numel(), v = grad_weight.dim(0), d = grad_weight.dim(1);
  FRUGAL_REQUIRE(grad_out.shape == out_shape(ids.shape, d), kBwd, "grad_out has shape ",
                 grad_out.shape, "; expected ", out_shape(ids.shape, d));
  if (n == 0 || d == 0) return;
  Tensor hi, hg;
  const ConstTensorView ic = detail::reshaped(detail::contiguous(ids, hi, ctx), {n});
  const ConstTensorView gc = detail::reshaped(detail::contiguous(grad_out, hg, ctx), {n, d});
  switch (ids.device.kind) {
    case DeviceKind::kCpu:
      check_range_host(kBwd, ic.data_as<int64_t>(), n, v);
      cpu::embedding_backward(gc, ic, grad_weight, ctx);
      break;
    case DeviceKind::kCuda:
      cu::embedding_backward(gc, ic, grad_weight, ctx);
      break;
  }
}

Embedding::Embedding(int64_t num_embeddings, int64_t dim, uint64_t seed, DType dtype)
    : num_(num_embeddings), dim_(dim) {
  FRUGAL_REQUIRE(num_embeddings > 0 && dim > 0, "Embedding",
                 "num_embeddings and dim must be > 0, got ", num_embeddings, " and ", dim);
  FRUGAL_REQUIRE(dtype == DType::kF32 || dtype == DType::kF64, "Embedding", "dtype ",
                 dtype_name(dtype), " is not supported (f32, f64)");
  ExecContext ctx;
  ctx.seed = seed;
  weight_ = &register_parameter("weight", rand_normal({num_, dim_}, dtype, Device::cpu(), ctx));
}

Tensor Embedding::forward(const Tensor& input) {
  FRUGAL_REQUIRE(input.defined(), "Embedding::forward", "input is undefined");
  Tensor out = embedding_forward(input, weight_->value, ctx_);
  ids_ = input;
  return out;
}

Tensor Embedding::backward(const Tensor& grad_output) {
  FRUGAL_REQUIRE(ids_.defined(), "Embedding::backward", "backward called before forward");
  FRUGAL_REQUIRE(grad_output.defined(), "Embedding::backward", "grad_output is undefined");
  if (weight_->trainable) embedding_backward(grad_output, ids_, weight_->grad.view(), ctx_);
  return Tensor();
}

}  // namespace frugal::nn
