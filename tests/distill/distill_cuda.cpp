// Distillation losses on CUDA against the CPU backend (f32 and f64): values, gradients, the CPU
// error checks reached through the device kernels (NaN rows, bad labels and indices), and
// run-to-run determinism.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "distill_test_util.hpp"
#include "support/gpu.hpp"

namespace frugal::distill {
namespace {

using frugal::testing::all_close;
using testing::expect_error;
using testing::labels_of;

Tensor cuda(const Tensor& t) { return t.to(Device::cuda()); }

TEST(DistillCuda, KdLossMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kF64}) {
    const Tensor s = frugal::testing::random_uniform({67, 1000}, 1, -8.f, 8.f).to(dt);
    const Tensor t = frugal::testing::random_uniform({67, 1000}, 2, -8.f, 8.f).to(dt);
    std::vector<int64_t> y(67);
    for (int i = 0; i < 67; ++i) y[i] = (i * 13) % 1000;
    const Tensor lab = labels_of(y);
    const KdResult c = kd_loss(s, t, lab, 4.0, 0.4);
    const KdResult g = kd_loss(cuda(s), cuda(t), cuda(lab), 4.0, 0.4);
    ASSERT_TRUE(g.grad_student.device().is_cuda());
    // f32: CUDA expf vs the CPU polynomial (1-2 ulp) and other sum orders; f64: sum order only.
    const double tol = dt == DType::kF32 ? 1e-5 : 1e-12;
    EXPECT_NEAR(g.loss, c.loss, tol * c.loss);
    EXPECT_NEAR(g.kd, c.kd, tol * c.kd);
    EXPECT_NEAR(g.ce, c.ce, tol * c.ce);
    EXPECT_TRUE(all_close(g.grad_student, c.grad_student, dt == DType::kF32 ? 1e-4 : 1e-10,
                          dt == DType::kF32 ? 1e-9 : 1e-16));
    const TopKLogits tk = topk_teacher(t, 10);
    const TopKLogits tkg = topk_teacher(cuda(t), 10);
    EXPECT_TRUE(frugal::testing::all_equal(tkg.indices, tk.indices));  // same selection order
    const KdResult ck = kd_loss_topk(s, tk, lab, 2.0, 0.7);
    const KdResult gk = kd_loss_topk(cuda(s), tkg, cuda(lab), 2.0, 0.7);
    EXPECT_NEAR(gk.loss, ck.loss, tol * ck.loss);
    EXPECT_TRUE(all_close(gk.grad_student, ck.grad_student, dt == DType::kF32 ? 1e-4 : 1e-10,
                          dt == DType::kF32 ? 1e-9 : 1e-16));
    // Deterministic run to run.
    const KdResult g2 = kd_loss(cuda(s), cuda(t), cuda(lab), 4.0, 0.4);
    EXPECT_EQ(g2.loss, g.loss);
    EXPECT_TRUE(frugal::testing::all_equal(g2.grad_student, g.grad_student));
  }
}

TEST(DistillCuda, KdLossIdenticalAndHugeLogits) {
  FRUGAL_REQUIRE_GPU();
  const Tensor z = frugal::testing::random_uniform({9, 300}, 3, -1e4f, 1e4f);
  const KdResult same = kd_loss(cuda(z), cuda(z), 1.0);
  EXPECT_NEAR(same.loss, 0.0, 1e-12);  // identical terms cancel
  EXPECT_TRUE(all_close(same.grad_student, Tensor::zeros({9, 300}), 0.0, 1e-12));
  const Tensor t = frugal::testing::random_uniform({9, 300}, 4, -1e4f, 1e4f);
  const KdResult c = kd_loss(z, t, 1.0);
  const KdResult g = kd_loss(cuda(z), cuda(t), 1.0);
  ASSERT_TRUE(std::isfinite(g.loss));
  EXPECT_NEAR(g.loss, c.loss, 1e-5 * c.loss);  // f32 exponents of size 1e4: 1e-3 absolute each
}

TEST(DistillCuda, KdLossBadInputFromTheDevice) {
  FRUGAL_REQUIRE_GPU();
  const Tensor s = frugal::testing::random_uniform({4, 5}, 5);
  const Tensor t = frugal::testing::random_uniform({4, 5}, 6);
  auto v = s.to_vector<float>();
  v[12] = std::nanf("");  // row 2
  try {
    kd_loss(cuda(Tensor::from_vector(v, {4, 5})), cuda(t), 1.0);
    ADD_FAILURE() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("[kd_loss] NaN or Inf", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 2"), std::string::npos) << e.what();
  }
  expect_error(
      [&] {
        kd_loss(cuda(s), cuda(t), cuda(labels_of({0, 1, 5, 2})), 1.0, 0.5);
      },
      ErrorCode::kInvalidArgument, "kd_loss");
  expect_error([&] { kd_loss(cuda(s), t, 1.0); }, ErrorCode::kInvalidArgument, "kd_loss");
  TopKLogits bad;
  bad.values = cuda(t.slice(1, 0, 2).contiguous());
  bad.indices = cuda(Tensor::from_vector(std::vector<int64_t>{0, 1, 2, 3, 4, 7, 0, 1}, {4, 2}));
  expect_error([&] { kd_loss_topk(cuda(s), bad, 1.0); }, ErrorCode::kInvalidArgument,
               "kd_loss_topk");
}

TEST(DistillCuda, KdLossTopKUniformTailMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kF64}) {
    const Tensor s = frugal::testing::random_uniform({67, 1000}, 21, -8.f, 8.f).to(dt);
    const Tensor t = frugal::testing::random_uniform({67, 1000}, 22, -8.f, 8.f).to(dt);
    std::vector<int64_t> y(67);
    for (int i = 0; i < 67; ++i) y[i] = (i * 17) % 1000;
    const Tensor lab = labels_of(y);
    for (int64_t k : {1, 16, 1000}) {
      const TopKLogits tk = topk_teacher(t, k, 2.0);
      const TopKLogits tkg = topk_teacher(cuda(t), k, 2.0);
      ASSERT_EQ(tkg.tail, TopKTail::kUniform);
      // The row log-sum-exps: double sums in both backends, other orders.
      EXPECT_TRUE(all_close(tkg.lse, tk.lse, dt == DType::kF32 ? 1e-6 : 1e-13, 0.0));
      const KdResult c = kd_loss_topk(s, tk, lab, 2.0, 0.7);
      const KdResult g = kd_loss_topk(cuda(s), tkg, cuda(lab), 2.0, 0.7);
      // f32: CUDA expf vs the CPU polynomial (1-2 ulp) and other sum orders; f64: sum order only.
      const double tol = dt == DType::kF32 ? 1e-5 : 1e-12;
      EXPECT_NEAR(g.loss, c.loss, tol * c.loss) << k;
      EXPECT_NEAR(g.kd, c.kd, tol * c.kd) << k;
      EXPECT_TRUE(all_close(g.grad_student, c.grad_student, dt == DType::kF32 ? 1e-4 : 1e-10,
                            dt == DType::kF32 ? 1e-9 : 1e-16))
          << k;
      const KdResult g2 = kd_loss_topk(cuda(s), tkg, cuda(lab), 2.0, 0.7);
      EXPECT_EQ(g2.loss, g.loss);  // deterministic run to run
    }
  }
  // Errors reached through the device: another T, a NaN lse, Inf teacher logits.
  const Tensor s = frugal::testing::random_uniform({4, 5}, 23);
  const Tensor t = frugal::testing::random_uniform({4, 5}, 24);
  const TopKLogits tkg = topk_teacher(cuda(t), 2, 2.0);
  expect_error([&] { kd_loss_topk(cuda(s), tkg, 1.0); }, ErrorCode::kInvalidArgument,
               "kd_loss_topk");
  TopKLogits bad = tkg;
  bad.lse = cuda(Tensor::from_vector(std::vector<float>{0.f, 0.f, std::nanf(""), 0.f}, {4}));
  try {
    kd_loss_topk(cuda(s), bad, 2.0);
    ADD_FAILURE() << "NaN lse accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("[kd_loss_topk] NaN or Inf", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 2"), std::string::npos) << e.what();
  }
  auto tv = t.to_vector<float>();
  tv[7] = INFINITY;  // row 1
  try {
    topk_teacher(cuda(Tensor::from_vector(tv, {4, 5})), 2, 1.0);
    ADD_FAILURE() << "Inf logits accepted";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("[topk_teacher] NaN or Inf", 0), 0u) << e.what();
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos) << e.what();
  }
}

TEST(DistillCuda, KdLossHalfAndBfloat16MatchCpu) {
  FRUGAL_REQUIRE_GPU();
  const Tensor s = frugal::testing::random_uniform({33, 1000}, 31, -8.f, 8.f);
  const Tensor t = frugal::testing::random_uniform({33, 1000}, 32, -8.f, 8.f);
  for (DType dt : {DType::kF16, DType::kBF16}) {
    const KdResult c = kd_loss(s.to(dt), t.to(dt), 4.0);
    const KdResult g = kd_loss(cuda(s.to(dt)), cuda(t.to(dt)), 4.0);
    ASSERT_EQ(g.grad_student.dtype(), dt);
    // The f32 kernels agree to 1e-5 (above); the gradients are then rounded to dt (one ulp:
    // 2^-11 for f16, 2^-8 for bf16, relative).
    EXPECT_NEAR(g.loss, c.loss, 1e-5 * c.loss);
    EXPECT_TRUE(all_close(g.grad_student.to(DType::kF32), c.grad_student.to(DType::kF32),
                          dt == DType::kF16 ? 1e-3 : 8e-3, 1e-9));
  }
}

TEST(DistillCuda, FeatureLossesMatchCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kF64}) {
    // f32: float elementwise terms with double sums; f64: sum order only.
    const double rtol = dt == DType::kF32 ? 1e-5 : 1e-12;
    const double gtol = dt == DType::kF32 ? 1e-5 : 1e-12;
    const Tensor s = frugal::testing::random_uniform({6, 4, 5, 5}, 7).to(dt);
    const Tensor t = frugal::testing::random_uniform({6, 4, 5, 5}, 8).to(dt);
    const Tensor t8 = frugal::testing::random_uniform({6, 8, 5, 5}, 9).to(dt);
    for (int which = 0; which < 3; ++which) {
      LossResult c, g;
      if (which == 0) {
        c = feature_mse(s, t);
        g = feature_mse(cuda(s), cuda(t));
      } else if (which == 1) {
        c = feature_cosine(s, t);
        g = feature_cosine(cuda(s), cuda(t));
      } else {
        c = attention_transfer(s, t8);
        g = attention_transfer(cuda(s), cuda(t8));
      }
      EXPECT_NEAR(g.loss, c.loss, rtol * std::abs(c.loss)) << which;
      EXPECT_TRUE(all_close(g.grad_student, c.grad_student, gtol, gtol * 1e-3)) << which;
    }
    EXPECT_TRUE(all_close(attention_map(cuda(s)), attention_map(s), rtol, 0.0));
  }
}

TEST(DistillCuda, RelationLossesMatchCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType dt : {DType::kF32, DType::kF64}) {
    // Double arithmetic inside both backends; inputs differ only by their dtype.
    const double tol = dt == DType::kF32 ? 1e-6 : 1e-12;
    const Tensor s = frugal::testing::random_uniform({24, 16}, 10).to(dt);
    const Tensor t = frugal::testing::random_uniform({24, 32}, 11).to(dt);
    for (int which = 0; which < 3; ++which) {
      LossResult c, g;
      if (which == 0) {
        c = rkd_distance(s, t);
        g = rkd_distance(cuda(s), cuda(t));
      } else if (which == 1) {
        c = rkd_angle(s, t);
        g = rkd_angle(cuda(s), cuda(t));
      } else {
        c = sp_loss(s, t);
        g = sp_loss(cuda(s), cuda(t));
      }
      EXPECT_NEAR(g.loss, c.loss, tol * std::abs(c.loss) + 1e-15) << which;
      // sp_loss's gradient goes through cuBLAS vs Eigen GEMMs: a few f32 ulps.
      EXPECT_TRUE(all_close(g.grad_student, c.grad_student, which == 2 ? 1e-4 : tol,
                            which == 2 ? 1e-7 : 1e-12))
          << which;
    }
  }
}

}  // namespace
}  // namespace frugal::distill
