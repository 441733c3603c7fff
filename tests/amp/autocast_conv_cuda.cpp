// CUDA parity of nn::Conv2d under autocast: the cuDNN graph-API convolution (bf16 / f16 operands,
// f32 results; kernels/nn/conv_cudnn.cu) against the CPU layer (oneDNN bf16, or f16 operands
// widened to f32) from the same parameters and inputs: forward, grad_input, grad_weight and
// grad_bias, with stride, padding, dilation and groups.
#include <gtest/gtest.h>

#include "amp/conv_bound.hpp"
#include "frugal/amp.hpp"
#include "frugal/core.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/ref/nn_conv.hpp"
#include "support/check.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal::amp {
namespace {

using frugal::testing::random_uniform;

struct Case {
  int64_t n, c_in, c_out, h, w;
  nn::Size2 kernel;
  nn::Conv2dOptions opt;
};

TEST(AutocastConvCuda, MatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const Case cases[] = {
      {4, 16, 32, 8, 8, {3, 3}, {.padding = 1, .bias = false}},  // the digits CNN's conv2
      {3, 5, 7, 9, 11, {3, 2}, {.stride = {2, 1}, .padding = {1, 0}, .dilation = {1, 2}}},
      {2, 6, 4, 7, 5, {3, 3}, {.stride = 2, .padding = 1, .groups = 2}},
      {8, 32, 32, 12, 12, {3, 3}, {.padding = 1}},
  };
  uint64_t seed = 300;
  for (DType low : {DType::kBF16, DType::kF16}) {
    for (const Case& c : cases) {
      seed += 10;
      nn::Conv2d cc(c.c_in, c.c_out, c.kernel, c.opt, seed),
          cg(c.c_in, c.c_out, c.kernel, c.opt, seed);
      cg.to(Device::cuda());
      const Tensor x = random_uniform({c.n, c.c_in, c.h, c.w}, seed + 1);
      const Shape ys =
          nn::conv2d_output_shape(x.shape(), cc.weight().value.shape(), c.opt.params());
      const Tensor g = random_uniform(ys, seed + 2);
      Tensor yc, gc, yg, gg;
      {
        AmpContext ac(default_policy(low));
        yc = cc.forward(x);
        gc = cc.backward(g);
        yg = cg.forward(x.to(Device::cuda()));
        gg = cg.backward(g.to(Device::cuda()));
      }
      ASSERT_EQ(yg.dtype(), DType::kF32);
      ASSERT_EQ(gg.dtype(), DType::kF32);
      // Same rounded operands and exact products on both devices, fp32 sums in different
      // orders: each is within K u sum|terms| of the exact value (conv_bound.hpp), so they are
      // within 2 K u sum|terms| of each other.
      const nn::Conv2dParams p = c.opt.params();
      const Tensor xa = abs_of(rounded(x, low)), wa = abs_of(rounded(cc.weight().value, low));
      const Tensor ga = abs_of(rounded(g, low));
      const int64_t kh = c.kernel.h, kw = c.kernel.w, groups = c.opt.groups;
      const Tensor ba = c.opt.bias ? abs_of(cc.bias()->value) : Tensor();
      EXPECT_TRUE(within_sum_bound(yg.to(Device::cpu()), yc, ref::conv2d(xa, wa, ba, p),
                                   2.0 * (c.c_in / groups * kh * kw + 1)))
          << dtype_name(low);
      EXPECT_TRUE(within_sum_bound(gg.to(Device::cpu()), gc,
                                   ref::conv2d_backward_input(ga, wa, x.shape(), p),
                                   2.0 * (c.c_out / groups * kh * kw)))
          << dtype_name(low);
      const Shape ws = cc.weight().value.shape();
      EXPECT_TRUE(within_sum_bound(cg.weight().grad.to(Device::cpu()), cc.weight().grad,
                                   ref::conv2d_backward_weight(ga, xa, ws, p),
                                   2.0 * (ys[0] * ys[2] * ys[3] + 1)))
          << dtype_name(low);
      if (c.opt.bias) {
        // From the f32 grad_out: double sums on the host, fp32 in cuDNN (N H_out W_out terms).
        EXPECT_TRUE(within_sum_bound(cg.bias()->grad.to(Device::cpu()), cc.bias()->grad,
                                     ref::conv2d_backward_bias(abs_of(g)),
                                     2.0 * (ys[0] * ys[2] * ys[3] + 1)))
            << dtype_name(low);
      }
    }
  }
}

}  // namespace
}  // namespace frugal::amp
