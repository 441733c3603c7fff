// Autocast policy defaults (PyTorch's autocast lists) and the AmpContext guard.
#include "frugal/amp/policy.hpp"

#include <gtest/gtest.h>

#include <thread>

#include "frugal/core/error.hpp"

namespace frugal::amp {
namespace {

TEST(AmpPolicy, DefaultsFollowTheDocumentedLists) {
  const AutocastPolicy p = default_policy();
  EXPECT_EQ(p.low, DType::kBF16);
  for (OpClass c : {OpClass::kGemm, OpClass::kConv, OpClass::kAttentionProduct}) {
    EXPECT_TRUE(p.is_low(c));
  }
  for (OpClass c : {OpClass::kSoftmax, OpClass::kLogSoftmax, OpClass::kLoss, OpClass::kNorm,
                    OpClass::kReduction, OpClass::kExpLog, OpClass::kElementwise}) {
    EXPECT_FALSE(p.is_low(c));
  }
  EXPECT_EQ(p.low_precision.size(), 10u);  // every class is listed explicitly
  EXPECT_EQ(default_policy(DType::kF16).low, DType::kF16);
}

TEST(AmpPolicy, UsersCanEditThePolicy) {
  AutocastPolicy p = default_policy();
  p.low_precision[OpClass::kConv] = false;
  p.low_precision.erase(OpClass::kGemm);
  EXPECT_FALSE(p.is_low(OpClass::kConv));
  EXPECT_FALSE(p.is_low(OpClass::kGemm));  // missing: fp32
}

TEST(AmpPolicy, GuardNestsAndRestores) {
  EXPECT_EQ(AmpContext::current(), nullptr);
  {
    AmpContext outer;
    ASSERT_NE(AmpContext::current(), nullptr);
    EXPECT_EQ(AmpContext::current()->low, DType::kBF16);
    {
      AutocastPolicy p = default_policy(DType::kF16);
      p.low_precision[OpClass::kSoftmax] = true;
      AmpContext inner(p);
      EXPECT_EQ(AmpContext::current()->low, DType::kF16);
      EXPECT_TRUE(AmpContext::current()->is_low(OpClass::kSoftmax));
      // Thread-local: another thread sees no policy.
      const AutocastPolicy* seen = reinterpret_cast<const AutocastPolicy*>(1);
      std::thread([&] { seen = AmpContext::current(); }).join();
      EXPECT_EQ(seen, nullptr);
    }
    EXPECT_EQ(AmpContext::current()->low, DType::kBF16);
    EXPECT_FALSE(AmpContext::current()->is_low(OpClass::kSoftmax));
  }
  EXPECT_EQ(AmpContext::current(), nullptr);
}

TEST(AmpPolicy, BadLowDtype) {
  AutocastPolicy p = default_policy();
  p.low = DType::kF8E4M3;
  try {
    AmpContext g(p);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()).rfind("[amp::AmpContext]", 0), 0u) << e.what();
  }
  EXPECT_EQ(AmpContext::current(), nullptr);
}

}  // namespace
}  // namespace frugal::amp
