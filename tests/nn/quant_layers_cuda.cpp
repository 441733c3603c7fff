// CUDA parity of the quantized layers (frugal/nn/quant_layers.hpp): built on the CPU, moved with
// Module::to(Device::cuda()), compared to the same layer on the CPU.
#include <gtest/gtest.h>

#include "frugal/nn/quant_layers.hpp"
#include "frugal/quant/quantize.hpp"
#include "support/check.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using frugal::testing::random_uniform;
using frugal::testing::same_bits;

Tensor host(const Tensor& t) { return t.to(Device::cpu()); }

TEST(QuantizedLinearCuda, W8A8MatchesCpuBitForBit) {
  FRUGAL_REQUIRE_GPU();
  const Tensor w = random_uniform({24, 64}, 1);
  const Tensor b = random_uniform({24}, 2);
  const Tensor x = random_uniform({9, 64}, 3, -1.f, 2.f);
  const ActivationQuant aq{int8_activation_spec(),
                           quant::minmax_qparams(x, int8_activation_spec())};
  QuantizedLinear cpu(w, b, int8_weight_spec(), aq);
  QuantizedLinear gpu(w, b, int8_weight_spec(), aq);
  gpu.to(Device::cuda());
  EXPECT_EQ(gpu.qweight().codes.device().kind, DeviceKind::kCuda);
  // Codes are identical on both devices and qgemm_f32's epilogue spells out its float operations
  // (no fma), so cuBLASLt / the tiled kernel and the CPU agree exactly.
  EXPECT_TRUE(same_bits(host(gpu.forward(x.to(Device::cuda()))), cpu.forward(x)));
}

TEST(QuantizedLinearCuda, WeightOnlyInt4MatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const Tensor w = random_uniform({16, 128}, 4);
  const Tensor x = random_uniform({3, 128}, 5);
  QuantizedLinear cpu(w, Tensor(), int4_group_weight_spec(32));
  QuantizedLinear gpu(w, Tensor(), int4_group_weight_spec(32));
  gpu.to(Device::cuda());
  EXPECT_TRUE(same_bits(host(gpu.qweight().codes), cpu.qweight().codes));
  // f32 sums of 128 products in another order (one warp per output row).
  EXPECT_TRUE(all_close(host(gpu.forward(x.to(Device::cuda()))).to(DType::kF64),
                        cpu.forward(x).to(DType::kF64), 1e-5, 1e-5));
}

TEST(QuantizedConv2dCuda, W8A8MatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  const Tensor w = random_uniform({8, 4, 3, 3}, 6);
  const Tensor x = random_uniform({2, 4, 6, 6}, 7, 0.f, 2.f);
  const Conv2dParams p{1, 1, 1, 1};
  const ActivationQuant aq{int8_activation_spec(),
                           quant::minmax_qparams(x, int8_activation_spec())};
  QuantizedConv2d cpu(w, Tensor(), p, int8_weight_spec(), aq);
  QuantizedConv2d gpu(w, Tensor(), p, int8_weight_spec(), aq);
  gpu.to(Device::cuda());
  // CUDA runs the dequantized kernel on the fake-quantized input (cuDNN, f32 sums of 36
  // products); the CPU sums the codes exactly in int32.
  EXPECT_TRUE(all_close(host(gpu.forward(x.to(Device::cuda()))).to(DType::kF64),
                        cpu.forward(x).to(DType::kF64), 1e-5, 1e-5));
}

TEST(QatLinearCuda, ForwardBackwardMatchCpu) {
  FRUGAL_REQUIRE_GPU();
  Linear lin(32, 8, true, 3);
  QatLinear cpu(lin, {});
  QatLinear gpu(lin, {});
  gpu.to(Device::cuda());
  const Tensor x = random_uniform({5, 32}, 8);
  const Tensor g = random_uniform({5, 8}, 9);
  const Tensor yc = cpu.forward(x);
  const Tensor yg = host(gpu.forward(x.to(Device::cuda())));
  // Identical fake-quantized operands; cuBLAS and Eigen sum 32 products in other orders.
  EXPECT_TRUE(all_close(yg.to(DType::kF64), yc.to(DType::kF64), 1e-5, 1e-6));
  const Tensor gxc = cpu.backward(g);
  const Tensor gxg = host(gpu.backward(g.to(Device::cuda())));
  EXPECT_TRUE(all_close(gxg.to(DType::kF64), gxc.to(DType::kF64), 1e-5, 1e-6));
  EXPECT_TRUE(all_close(host(gpu.weight().grad).to(DType::kF64), cpu.weight().grad.to(DType::kF64),
                        1e-5, 1e-6));
}

}  // namespace
}  // namespace frugal::nn
