// Quantized inference layers against their float layers, one thread, in the same run: the layers
// of the digits models at batch 256 (the cost report's inference batch), the int8 GEMM backend as
// the argument (0 = auto, 1 = oneDNN, 2 = own kernel; weight-only ignores it).
//   linear:  Linear 256 -> 128, W8A8 / weight-only int4 g32 / fp32
//   conv:    Conv2d 16 -> 32, 3x3, pad 1, on 8x8 images, W8A8 (im2col + qgemm) / fp32
#include <benchmark/benchmark.h>

#include <cstdint>

#include "frugal/core/random.hpp"
#include "frugal/nn/quant_layers.hpp"
#include "frugal/quant/qgemm.hpp"
#include "frugal/quant/quantize.hpp"

namespace {

using frugal::DType;
using frugal::ExecContext;
using frugal::Tensor;
namespace nn = frugal::nn;
namespace q = frugal::quant;

Tensor uniform(frugal::Shape s, uint64_t seed, float lo, float hi) {
  Tensor t = Tensor::empty(s);
  ExecContext c;
  c.seed = seed;
  frugal::fill_uniform(t, lo, hi, c);
  return t;
}

ExecContext one_thread() {
  ExecContext c;
  c.num_threads = 1;
  return c;
}

void BM_LinearLayer(benchmark::State& state) {
  const int64_t kind = state.range(0);  // 0 fp32, 1 w8a8, 2 w4 g32
  const Tensor w = uniform({128, 256}, 1, -0.1f, 0.1f);
  const Tensor b = uniform({128}, 2, -0.1f, 0.1f);
  const Tensor x = uniform({256, 256}, 3, 0.f, 1.f);
  ExecContext ctx = one_thread();
  ctx.num_threads = static_cast<int>(state.range(1));
  std::shared_ptr<nn::Module> m;
  if (kind == 0) {
    auto l = std::make_shared<nn::Linear>(256, 128);
    l->weight().value.copy_from(w);
    m = l;
  } else if (kind == 1) {
    m = std::make_shared<nn::QuantizedLinear>(
        w, b, nn::int8_weight_spec(),
        nn::ActivationQuant{nn::int8_activation_spec(),
                            q::minmax_qparams(x, nn::int8_activation_spec())});
  } else {
    m = std::make_shared<nn::QuantizedLinear>(w, b, nn::int4_group_weight_spec(32));
  }
  m->set_context(ctx);
  m->eval();
  for (auto _ : state) {
    ctx.run([&] { benchmark::DoNotOptimize(m->forward(x)); });
  }
  state.counters["FLOPS"] =
      benchmark::Counter(2.0 * 256 * 256 * 128, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LinearLayer)
    ->ArgNames({"fp32_w8a8_w4", "threads"})
    ->ArgsProduct({{0, 1, 2}, {1, 2}})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

void BM_ConvLayer(benchmark::State& state) {
  const int64_t kind = state.range(0);  // 0 fp32, 1 w8a8
  nn::Conv2dOptions co;
  co.padding = 1;
  co.bias = false;
  auto conv = std::make_shared<nn::Conv2d>(16, 32, 3, co, 1);
  const Tensor x = uniform({256, 16, 8, 8}, 3, 0.f, 1.f);
  const ExecContext ctx = one_thread();
  std::shared_ptr<nn::Module> m = conv;
  if (kind == 1) {
    m = std::make_shared<nn::QuantizedConv2d>(
        conv->weight().value, Tensor(), conv->params(), nn::int8_weight_spec(),
        nn::ActivationQuant{nn::int8_activation_spec(),
                            q::minmax_qparams(x, nn::int8_activation_spec())});
  }
  m->set_context(ctx);
  m->eval();
  for (auto _ : state) {
    ctx.run([&] { benchmark::DoNotOptimize(m->forward(x)); });
  }
  state.counters["FLOPS"] =
      benchmark::Counter(2.0 * 256 * 64 * 32 * 144, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_ConvLayer)->ArgName("fp32_w8a8")->DenseRange(0, 1)->Unit(benchmark::kMicrosecond);

}  // namespace

namespace {

// The int8 GEMM of the layers above (conv: M = 256 * 8 * 8 rows of K = 144; linear: 256 x 128 x
// 256) per backend: 1 = oneDNN, 2 = own kernel.
void BM_QGemmSkinny(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const Tensor a = Tensor::zeros({m, k}, DType::kU8);
  const Tensor b = Tensor::zeros({n, k}, DType::kI8);
  const Tensor s = Tensor::full({n}, 0.1);
  q::QGemmOptions o;
  o.backend = static_cast<q::QGemmBackend>(state.range(3));
  const ExecContext ctx = one_thread();
  for (auto _ : state) {
    ctx.run([&] { benchmark::DoNotOptimize(q::qgemm_f32(a, 0.1f, 3, b, s, {}, o, ctx)); });
  }
}
BENCHMARK(BM_QGemmSkinny)
    ->Args({16384, 32, 144, 1})
    ->Args({16384, 32, 144, 2})
    ->Args({256, 128, 256, 1})
    ->Args({256, 128, 256, 2})
    ->Unit(benchmark::kMicrosecond);
}  // namespace
