// Autocast helpers for the nn layers (frugal/amp/autocast.hpp): the op-class dtype, the master
// weight version, cached low-precision weight copies and the low-precision GEMM entry.
#include "frugal/amp/autocast.hpp"

#include <atomic>
#include <cmath>

#include "frugal/amp/cast.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/ops.hpp"

namespace frugal::amp {
namespace {

bool is_fp8(DType t) { return t == DType::kF8E4M3 || t == DType::kF8E5M2; }

// Starts at 1 so that a default WeightCopy (version 0) is stale.
std::atomic<uint64_t> g_weights_version{1};

}  // namespace

DType autocast_dtype(OpClass c) {
  const AutocastPolicy* p = AmpContext::current();
  return p != nullptr && p->is_low(c) ? p->low : DType::kF32;
}

DType saved_activation_dtype() {
  const AutocastPolicy* p = AmpContext::current();
  return p != nullptr && p->low_saved_activations ? p->low : DType::kF32;
}

uint64_t master_weights_version() { return g_weights_version.load(std::memory_order_acquire); }

void invalidate_weight_copies() { g_weights_version.fetch_add(1, std::memory_order_acq_rel); }

Tensor autocast_fp32(const Tensor& x, const ExecContext& ctx) {
  const bool low = x.defined() && (x.dtype() == DType::kBF16 || x.dtype() == DType::kF16);
  return low && AmpContext::current() != nullptr ? x.to(DType::kF32, ctx) : x;
}

Tensor to_low(const Tensor& x, DType low, const ExecContext& ctx) {
  CastOptions o;
  // Overflow to Inf (as Tensor::to and torch's .half() do): an fp16 overflow of a scaled
  // gradient must reach the loss scaler's check instead of being clamped to 65504.
  o.overflow = Overflow::kNonSaturate;
  if (x.is_contiguous()) return cast(x.cview(), low, o, ctx).out;
  return cast(x.contiguous(ctx).cview(), low, o, ctx).out;
}

const Tensor& WeightCopy::get(const Tensor& master, DType dtype, const char* layer, float scale,
                              const ExecContext& ctx) {
  const uint64_t v = master_weights_version();
  if (copy_.defined() && version_ == v && source_ == master.data_ptr() && copy_.dtype() == dtype &&
      copy_.shape() == master.shape() && scale_ == scale) {
    return copy_;
  }
  FRUGAL_REQUIRE(master.dtype() == DType::kF32 && master.is_contiguous(), "amp::autocast",
                 "master weights of ", layer, " must be contiguous f32, got ",
                 dtype_name(master.dtype()));
  CastOptions o;
  o.scale = scale;
  o.compute_amax = true;  // the finiteness check of the master, in the same pass
  // fp8 copies saturate as Transformer Engine does; bf16 / f16 copies keep Inf visible.
  o.overflow = is_fp8(dtype) ? Overflow::kSaturate : Overflow::kNonSaturate;
  CastResult r = cast(master.cview(), dtype, o, ctx);
  FRUGAL_REQUIRE(std::isfinite(r.amax), "amp::autocast", "Inf or NaN in master weights of ", layer,
                 " (max |w| = ", r.amax, "): the fp32 weights diverged");
  copy_ = std::move(r.out);
  version_ = v;
  source_ = master.data_ptr();
  scale_ = scale;
  amax_ = r.amax;
  return copy_;
}

void low_gemm_into(ConstTensorView a, ConstTensorView b, TensorView c, const GemmOptions& o,
                   const ExecContext& ctx) {
  // oneDNN runs on OpenMP, whose threads spin-wait after each parallel region and then compete
  // with the oneTBB workers of the surrounding ops: for the small products of a layer step that
  // costs more than the parallelism gains, so products below 2^28 flops run on the calling thread
  // (amp::gemm_into applies ctx.num_threads to OpenMP before it creates or runs a primitive and
  // caches primitives per thread count). Measured on the 2-core VM, bench_amp GptTrainStep, one
  // run, 3 repetitions: bf16 step 149 ms with this rule, 787 ms without (fp32: 138 ms).
  const int64_t m = o.trans_a ? a.shape[a.rank() - 1] : a.shape[a.rank() - 2];
  const int64_t k = o.trans_a ? a.shape[a.rank() - 2] : a.shape[a.rank() - 1];
  const int64_t n = o.trans_b ? b.shape[b.rank() - 2] : b.shape[b.rank() - 1];
  const int64_t batch = a.rank() == 3 ? a.shape[0] : 1;
  if (c.device.kind == DeviceKind::kCpu && 2 * batch * m * n * k < (int64_t{1} << 28)) {
    ExecContext one = ctx;
    one.num_threads = 1;
    gemm_into(a, b, c, o, one);
    return;
  }
  gemm_into(a, b, c, o, ctx);
}

}  // namespace frugal::amp
