// nn::Conv2d under autocast on the CPU: a forward + backward of one convolution layer, and a
// training step of the digits CNN (make_digits_cnn: conv 1->16, conv 16->32, 8x8 images, batches
// of 64, AdamW), in fp32 and under bf16 autocast (oneDNN's bf16 convolution with f32 outputs).
// The conv layer also runs under f16 autocast, which on the CPU widens the rounded operands to
// f32 and runs the fp32 convolution: the cost of the emulated path that bf16 used before.
// Process CPU time (all threads) is reported in the CPU column; read the bf16 / fp32 ratios of
// one run (the machine is shared). Counter FLOPS: 3 passes x 2 N C_out H_out W_out C_in k^2.
#include <benchmark/benchmark.h>

#include <memory>
#include <vector>

#include "frugal/amp.hpp"
#include "frugal/core.hpp"
#include "frugal/nn.hpp"

namespace {

using namespace frugal;

enum Mode : int64_t { kFp32 = 0, kBf16 = 1, kF16Emulated = 2 };

amp::AutocastPolicy policy_for(Mode mode) {
  amp::AutocastPolicy p = amp::default_policy(mode == kF16Emulated ? DType::kF16 : DType::kBF16);
  if (mode == kFp32) p.low_precision.clear(), p.low_saved_activations = false;
  return p;
}

const char* label(Mode mode) {
  switch (mode) {
    case kFp32:
      return "fp32";
    case kBf16:
      return "bf16 (oneDNN)";
    case kF16Emulated:
      return "f16 (emulated: rounded operands, fp32 conv)";
  }
  return "";
}

/// Conv2d(c, c, 3, padding 1) forward + backward on (n, c, s, s).
void BM_ConvLayerFwdBwd(benchmark::State& state) {
  const auto mode = static_cast<Mode>(state.range(0));
  const int64_t n = state.range(1), c = state.range(2), s = state.range(3);
  nn::Conv2d conv(c, c, 3, {.padding = 1}, 1);
  ExecContext init;
  init.seed = 2;
  Tensor x = Tensor::empty({n, c, s, s});
  fill_uniform(x.view(), -1.f, 1.f, init);
  init.seed = 3;
  Tensor g = Tensor::empty({n, c, s, s});
  fill_uniform(g.view(), -1.f, 1.f, init);
  amp::AmpContext autocast(policy_for(mode));
  for (auto _ : state) {
    const Tensor y = conv.forward(x);
    const Tensor gx = conv.backward(g);
    benchmark::DoNotOptimize(y.data_ptr());
    benchmark::DoNotOptimize(gx.data_ptr());
  }
  state.SetLabel(label(mode));
  state.counters["FLOPS"] = benchmark::Counter(3.0 * 2 * n * c * s * s * c * 9,
                                               benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_ConvLayerFwdBwd)
    ->ArgNames({"mode", "n", "c", "hw"})
    ->Args({kFp32, 32, 64, 32})
    ->Args({kBf16, 32, 64, 32})
    ->Args({kF16Emulated, 32, 64, 32})
    ->Args({kFp32, 64, 16, 8})
    ->Args({kBf16, 64, 16, 8})
    ->Args({kF16Emulated, 64, 16, 8})
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime();

/// One training step of the digits CNN on a batch of 64 random 8x8 images.
void BM_DigitsCnnStep(benchmark::State& state) {
  const auto mode = static_cast<Mode>(state.range(0));
  constexpr int64_t kBatch = 64;
  std::shared_ptr<nn::Sequential> model = nn::make_digits_cnn();
  nn::AdamW opt(model->named_parameters(), nn::cnn_digits_recipe().adamw);
  amp::MixedPrecision mp(opt);
  const nn::StepHooks hooks = mp.hooks();
  amp::AmpContext autocast(policy_for(mode));
  ExecContext init;
  init.seed = 5;
  Tensor x = Tensor::empty({kBatch, 1, 8, 8});
  fill_uniform(x.view(), 0.f, 1.f, init);
  std::vector<int64_t> labels(kBatch);
  for (int64_t i = 0; i < kBatch; ++i) labels[static_cast<std::size_t>(i)] = (i * 7 + 3) % 10;
  const Tensor targets = Tensor::from_vector(labels, {kBatch});
  nn::SoftmaxCrossEntropy loss;
  int64_t step = 0;
  for (auto _ : state) {
    opt.zero_grad();
    loss.forward(model->forward(x), targets);
    model->backward(loss.backward());
    if (hooks.before_step(step)) {
      opt.step();
      hooks.after_step(step);
    }
    ++step;
  }
  state.SetLabel(label(mode));
  state.counters["samples/s"] =
      benchmark::Counter(kBatch, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DigitsCnnStep)
    ->ArgName("mode")
    ->Arg(kFp32)
    ->Arg(kBf16)
    ->Unit(benchmark::kMillisecond)
    ->MeasureProcessCPUTime();

}  // namespace
