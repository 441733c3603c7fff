// FP8 recipes (frugal/amp/fp8.hpp): per-tensor scaling state, delayed and current scaling, the
// amax reduction over data-parallel ranks, and the thread-local Fp8Autocast guard.
#include "frugal/amp/fp8.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "frugal/amp/cast.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/parallel/communicator.hpp"

namespace frugal::amp {
namespace {

thread_local const Fp8Recipe* g_fp8_current = nullptr;

/// max over the ranks of `comm` of `amax` (NaN-propagating as the communicators' max is not
/// guaranteed to be: a NaN anywhere is reported as NaN, which keeps the previous scale).
float reduce_amax(float amax, parallel::Communicator* comm) {
  if (comm == nullptr || comm->size() == 1) return amax;
  const bool nan = std::isnan(amax);
  Tensor t = Tensor::from_vector(
      std::vector<float>{nan ? std::numeric_limits<float>::infinity() : amax, nan ? 1.f : 0.f},
      Shape{2});
  if (comm->device() != Device::cpu()) t = t.to(comm->device());
  comm->allreduce(t.view(), parallel::ReduceOp::kMax);
  const std::vector<float> r = t.to(Device::cpu()).to_vector<float>();
  return r[1] > 0.f ? std::numeric_limits<float>::quiet_NaN() : r[0];
}

}  // namespace

float fp8_max(DType fp8) {
  if (fp8 == DType::kF8E4M3) return 448.f;
  if (fp8 == DType::kF8E5M2) return 57344.f;
  detail::fail(ErrorCode::kInvalidArgument, "amp::fp8_max", "dtype ", dtype_name(fp8),
               " is not an fp8 format (f8_e4m3, f8_e5m2)");
}

float fp8_scale_from_amax(float amax, float max_value, int margin, float previous) {
  if (!(amax > 0.f) || !std::isfinite(amax)) return previous;
  // TE: sf = (fp8_max / amax) / 2^margin, in fp32.
  const float sf = (max_value / amax) / std::ldexp(1.f, margin);
  return std::isfinite(sf) && sf > 0.f ? sf : previous;
}

void check_recipe(const Fp8Recipe& r) {
  FRUGAL_REQUIRE(r.amax_history_len >= 1, "amp::Fp8Recipe", "amax_history_len must be >= 1, got ",
                 r.amax_history_len);
  FRUGAL_REQUIRE(r.margin >= 0, "amp::Fp8Recipe", "margin must be >= 0, got ", r.margin);
}

void Fp8TensorMeta::record_amax(float amax, int64_t history_len) {
  if (history_.empty()) history_.assign(static_cast<std::size_t>(history_len), 0.f);
  // NaN propagates into the history (std::max would drop it on one side).
  history_[0] = std::isnan(amax) || std::isnan(history_[0]) ? amax + history_[0]
                                                            : std::max(history_[0], amax);
}

void Fp8TensorMeta::update(DType fp8, const Fp8Recipe& recipe) {
  if (history_.empty()) history_.assign(static_cast<std::size_t>(recipe.amax_history_len), 0.f);
  history_[0] = reduce_amax(history_[0], recipe.amax_reduce);
  float amax = history_[0];
  if (recipe.amax_compute == AmaxCompute::kMax) {
    for (float a : history_)
      amax = std::isnan(a) || std::isnan(amax) ? a + amax : std::max(amax, a);
  }
  scale_ = fp8_scale_from_amax(amax, fp8_max(fp8), recipe.margin, scale_);
  // Roll: entry k becomes entry k + 1, the oldest drops, the new step starts at 0.
  std::rotate(history_.rbegin(), history_.rbegin() + 1, history_.rend());
  history_[0] = 0.f;
}

Tensor Fp8TensorMeta::quantize(const Tensor& x, DType fp8, const Fp8Recipe& recipe,
                               const ExecContext& ctx) {
  const float maxv = fp8_max(fp8);
  CastOptions o;
  o.overflow = Overflow::kSaturate;  // TE saturates fp8 casts
  if (recipe.scaling == Fp8Scaling::kDelayed) {
    if (uses_ > 0) update(fp8, recipe);
    o.scale = scale_;
    o.compute_amax = true;
    CastResult r = cast(x.cview(), fp8, o, ctx);
    record_amax(r.amax, recipe.amax_history_len);
    ++uses_;
    return std::move(r.out);
  }
  // Current scaling: the tensor's own amax (one extra pass), reduced over the ranks.
  float amax =
      x.numel() == 0 ? 0.f : abs_max(x.cview(), ctx).to(Device::cpu()).to_vector<float>()[0];
  amax = reduce_amax(amax, recipe.amax_reduce);
  if (history_.empty()) history_.assign(static_cast<std::size_t>(recipe.amax_history_len), 0.f);
  if (uses_ > 0) {
    std::rotate(history_.rbegin(), history_.rbegin() + 1, history_.rend());
    history_[0] = 0.f;
  }
  record_amax(amax, recipe.amax_history_len);
  scale_ = fp8_scale_from_amax(amax, maxv, recipe.margin, scale_);
  o.scale = scale_;
  ++uses_;
  return cast(x.cview(), fp8, o, ctx).out;
}

Fp8Autocast::Fp8Autocast(const Fp8Recipe& recipe) : recipe_(recipe), previous_(g_fp8_current) {
  check_recipe(recipe_);
  g_fp8_current = &recipe_;
}

Fp8Autocast::~Fp8Autocast() { g_fp8_current = previous_; }

const Fp8Recipe* Fp8Autocast::current() { return g_fp8_current; }

}  // namespace frugal::amp
