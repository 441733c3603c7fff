// Autocast helpers for the nn layers (frugal/amp/autocast.hpp): the op-class dtype, the master
// weight version, cached low-precision weight copies and the low-precision GEMM entry.
#include "frugal/amp/autocast.hpp"

#include <dlfcn.h>

#include <atomic>
#include <cmath>

// 1 until src/amp/gemm.cpp (amp::gemm_into) is in the library.
#ifndef FRUGAL_AMP_TRAIN_CORE_GEMM
#define FRUGAL_AMP_TRAIN_CORE_GEMM 0
#endif

#include "frugal/amp/cast.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/ops.hpp"

namespace frugal::amp {
namespace {

bool is_fp8(DType t) { return t == DType::kF8E4M3 || t == DType::kF8E5M2; }

// Starts at 1 so that a default WeightCopy (version 0) is stale.
std::atomic<uint64_t> g_weights_version{1};

/// Sets OpenMP's thread count of this thread (when an OpenMP runtime is loaded, found with dlsym
/// as oneDNN's libgomp is) and restores it on exit.
class OmpMaxThreads {
 public:
  explicit OmpMaxThreads(int n) {
    using Get = int (*)();
    set_ = reinterpret_cast<Set>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    auto get = reinterpret_cast<Get>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    if (set_ == nullptr || get == nullptr) {
      set_ = nullptr;
      return;
    }
    old_ = get();
    set_(n);
  }
  OmpMaxThreads(const OmpMaxThreads&) = delete;
  OmpMaxThreads& operator=(const OmpMaxThreads&) = delete;
  ~OmpMaxThreads() {
    if (set_ != nullptr) set_(old_);
  }

 private:
  using Set = void (*)(int);
  Set set_ = nullptr;
  int old_ = 0;
};

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
#if FRUGAL_AMP_TRAIN_CORE_GEMM
  // Stand-in until amp::gemm links: bf16 / f16 through the core GEMM (fp32 accumulation), fp8
  // decoded exactly to f32 first. Same arithmetic as amp::gemm's CPU path up to summation order.
  ::frugal::GemmOptions g;
  g.trans_a = o.trans_a;
  g.trans_b = o.trans_b;
  g.alpha = static_cast<double>(o.alpha) * o.a_scale * o.b_scale;
  g.beta = o.beta;
  if (is_fp8(a.dtype) || is_fp8(b.dtype)) {
    const Tensor fa =
        Tensor::wrap(const_cast<void*>(a.data), a.shape, a.dtype, a.device).to(DType::kF32, ctx);
    const Tensor fb =
        Tensor::wrap(const_cast<void*>(b.data), b.shape, b.dtype, b.device).to(DType::kF32, ctx);
    ::frugal::gemm_into(fa, fb, c, g, ctx);
    return;
  }
  ::frugal::gemm_into(a, b, c, g, ctx);
#else
  // oneDNN runs on OpenMP, whose threads spin-wait after each parallel region and then compete
  // with the oneTBB workers of the surrounding ops: for the small products of a layer step that
  // costs more than the parallelism gains, so products below ~256 MFLOP run on the calling thread.
  const int64_t m = o.trans_a ? a.shape[a.rank() - 1] : a.shape[a.rank() - 2];
  const int64_t k = o.trans_a ? a.shape[a.rank() - 2] : a.shape[a.rank() - 1];
  const int64_t n = o.trans_b ? b.shape[b.rank() - 2] : b.shape[b.rank() - 1];
  const int64_t batch = a.rank() == 3 ? a.shape[0] : 1;
  if (c.device.kind == DeviceKind::kCpu && 2 * batch * m * n * k < (int64_t{1} << 28)) {
    // oneDNN fixes a primitive's thread count when it creates it (from omp_get_max_threads), so
    // the OpenMP setting must already be 1 when the cached primitive of this shape is made.
    OmpMaxThreads single(1);
    ExecContext one = ctx;
    one.num_threads = 1;
    gemm_into(a, b, c, o, one);
    return;
  }
  gemm_into(a, b, c, o, ctx);
#endif
}

}  // namespace frugal::amp
