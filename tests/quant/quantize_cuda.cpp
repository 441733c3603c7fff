// CUDA parity of linear and log quantization and of the QAT gradients: inputs built on the CPU,
// moved to the GPU, results compared with the CPU path (exact for codes, and for every float
// result too: both backends evaluate the same IEEE operations in the same order).
#include <gtest/gtest.h>

#include <limits>
#include <vector>

#include "frugal/core.hpp"
#include "frugal/quant.hpp"
#include "frugal/ref/quant.hpp"
#include "support/gpu.hpp"
#include "support/tolerance.hpp"

namespace frugal::quant {
namespace {

using testing::all_close;
using testing::all_equal;
using testing::random_uniform;

QParams to_gpu(const QParams& p) {
  return {p.scale.to(Device::cuda()), p.zero_point.to(Device::cuda())};
}

QuantSpec spec_of(int bits, bool is_signed, bool symmetric, Granularity g, int axis = 0,
                  int64_t group = 0) {
  QuantSpec s;
  s.bits = bits;
  s.is_signed = is_signed;
  s.symmetric = symmetric;
  s.granularity = g;
  s.axis = axis;
  s.group_size = group;
  return s;
}

std::vector<QuantSpec> specs() {
  std::vector<QuantSpec> v;
  for (int bits : {2, 3, 4, 8}) {
    for (bool sg : {true, false}) {
      v.push_back(spec_of(bits, sg, sg, Granularity::kPerTensor));
      v.push_back(spec_of(bits, sg, !sg, Granularity::kPerChannel, 1));
      v.push_back(spec_of(bits, sg, sg, Granularity::kPerChannel, -1));
      v.push_back(spec_of(bits, sg, false, Granularity::kPerGroup, 2, 16));
      v.push_back(spec_of(bits, sg, true, Granularity::kPerGroup, 1, 3));
    }
  }
  return v;
}

TEST(QuantizeCuda, CodesDequantFakeMatchCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType t : {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}) {
    const Tensor x = random_uniform({5, 6, 64}, 1, -3.f, 2.f).to(t);
    const Tensor xg = x.to(Device::cuda());
    for (QuantSpec spec : specs()) {
      for (Rounding r : {Rounding::kHalfEven, Rounding::kStochastic}) {
        spec.rounding = r;
        SCOPED_TRACE(::testing::Message() << dtype_name(t) << " bits " << spec.bits << " gran "
                                          << static_cast<int>(spec.granularity) << " axis "
                                          << spec.axis << " rounding " << static_cast<int>(r));
        const QParams p = minmax_qparams(x, spec);
        ExecContext ctx;
        ctx.seed = 77;
        ctx.offset = 5;
        const QTensor qc = quantize(x, spec, p, ctx);
        const QTensor qg = quantize(xg, spec, to_gpu(p), ctx);
        ASSERT_EQ(qg.codes.device(), Device::cuda());
        EXPECT_EQ(ref::unpack_codes(qg), ref::unpack_codes(qc));
        EXPECT_TRUE(all_equal(dequantize(qg).to(Device::cpu()), dequantize(qc)));
        EXPECT_TRUE(all_equal(fake_quantize(xg, spec, to_gpu(p), ctx).to(Device::cpu()),
                              fake_quantize(x, spec, p, ctx)));
      }
    }
  }
}

TEST(QuantizeCuda, NanInfPolicy) {
  FRUGAL_REQUIRE_GPU();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const Tensor x = Tensor::from_vector(std::vector<float>{nan, inf, -inf, 1.f}, {4});
  QuantSpec s = spec_of(8, false, false, Granularity::kPerTensor);
  const QParams p{Tensor::full({}, 0.1), Tensor::full({}, 7, DType::kI32)};
  EXPECT_EQ(ref::unpack_codes(quantize(x.to(Device::cuda()), s, to_gpu(p))),
            (std::vector<int32_t>{7, 255, 0, 17}));
}

TEST(QuantizeCuda, BackwardMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (DType t : {DType::kF32, DType::kF64}) {
    const Tensor x = random_uniform({4, 6, 32}, 2, -2.f, 2.f).to(t);
    const Tensor dy = random_uniform({4, 6, 32}, 3, -1.f, 1.f).to(t);
    for (QuantSpec spec : {spec_of(4, true, false, Granularity::kPerTensor),
                           spec_of(8, true, true, Granularity::kPerChannel, 1),
                           spec_of(4, false, false, Granularity::kPerGroup, 2, 8)}) {
      QParams p = minmax_qparams(x, spec);
      p.scale = scale(p.scale, 0.7);
      const Tensor ste = fake_quantize_backward_ste(dy, x, spec, p);
      const Tensor ste_g =
          fake_quantize_backward_ste(dy.to(Device::cuda()), x.to(Device::cuda()), spec, to_gpu(p));
      EXPECT_TRUE(all_equal(ste_g.to(Device::cpu()), ste));
      const LsqGrads c = fake_quantize_backward_lsq(dy, x, spec, p);
      const LsqGrads g =
          fake_quantize_backward_lsq(dy.to(Device::cuda()), x.to(Device::cuda()), spec, to_gpu(p));
      EXPECT_TRUE(all_equal(g.grad_x.to(Device::cpu()), c.grad_x));
      // Same terms, summed in double in another order (CUDA's fixed grid vs the CPU's chunks).
      EXPECT_TRUE(all_close(g.grad_scale.to(Device::cpu()), c.grad_scale, 1e-6, 1e-9));
    }
  }
}

TEST(QuantizeCuda, LogQuantMatchesCpu) {
  FRUGAL_REQUIRE_GPU();
  for (LogBase base : {LogBase::kTwo, LogBase::kSqrt2}) {
    LogQuantSpec s;
    s.bits = 5;
    s.e_min = -13;
    s.e_max = 1;
    s.base = base;
    for (DType t : {DType::kF32, DType::kF64, DType::kF16}) {
      const Tensor x = random_uniform({4000}, 4, -3.f, 3.f).to(t);
      const LogQTensor qc = log_quantize(x, s);
      const LogQTensor qg = log_quantize(x.to(Device::cuda()), s);
      EXPECT_TRUE(all_equal(qg.codes.to(Device::cpu()), qc.codes));
      EXPECT_TRUE(all_equal(log_dequantize(qg).to(Device::cpu()), log_dequantize(qc)));
    }
  }
}

TEST(QuantizeCuda, DeviceMismatchIsAnError) {
  FRUGAL_REQUIRE_GPU();
  const Tensor x = random_uniform({8}, 5).to(Device::cuda());
  const QParams p{Tensor::full({}, 0.1), Tensor::full({}, 0, DType::kI32)};  // on the CPU
  EXPECT_THROW(quantize(x, QuantSpec{}, p), Error);
}

}  // namespace
}  // namespace frugal::quant
