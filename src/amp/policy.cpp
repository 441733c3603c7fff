// Autocast policy defaults and the thread-local AmpContext stack.
#include "frugal/amp/policy.hpp"

#include "frugal/core/error.hpp"

namespace frugal::amp {
namespace {
thread_local const AutocastPolicy* g_current = nullptr;
}  // namespace

AutocastPolicy default_policy(DType low) {
  AutocastPolicy p;
  p.low = low;
  p.low_precision = {
      {OpClass::kGemm, true},
      {OpClass::kConv, true},
      {OpClass::kAttentionProduct, true},
      {OpClass::kSoftmax, false},
      {OpClass::kLogSoftmax, false},
      {OpClass::kLoss, false},
      {OpClass::kNorm, false},
      {OpClass::kReduction, false},
      {OpClass::kExpLog, false},
      {OpClass::kElementwise, false},
  };
  return p;
}

AmpContext::AmpContext(AutocastPolicy policy) : policy_(std::move(policy)), previous_(g_current) {
  FRUGAL_REQUIRE(policy_.low == DType::kBF16 || policy_.low == DType::kF16, "amp::AmpContext",
                 "low precision dtype must be bf16 or f16, got ", dtype_name(policy_.low));
  g_current = &policy_;
}

AmpContext::~AmpContext() { g_current = previous_; }

const AutocastPolicy* AmpContext::current() { return g_current; }

}  // namespace frugal::amp
