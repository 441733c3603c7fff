// A training step of the small character GPT (char_gpt_config kSmall: 2 layers, 4 heads, n_embd
// 96, 16 sequences of 64 tokens; AdamW) in fp32 and under bf16 autocast with fp32 master weights
// (amp::MixedPrecision hooks), and the same for one Linear layer. Counters: tokens/s, FLOPS (6 x
// parameters x tokens, the usual estimate), and act_MiB: the step's peak frugal host memory above
// what persists between steps (parameters, gradients, AdamW moments, bf16 weight copies), i.e.
// the activation memory. Read the bf16 / fp32 ratios of one run (the machine is shared).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <memory>
#include <vector>

#include "frugal/amp.hpp"
#include "frugal/core.hpp"
#include "frugal/nn.hpp"

namespace {

using namespace frugal;

constexpr int64_t kB = 16, kT = 64, kV = 65;

void BM_GptTrainStep(benchmark::State& state) {
  const bool bf16 = state.range(0) != 0;
  nn::GPT model(nn::char_gpt_config(kV, nn::CharGptSize::kSmall, 0));
  nn::AdamW opt(model.named_parameters(), nn::char_gpt_recipe().adamw);
  amp::MixedPrecision mp(opt);
  const nn::StepHooks hooks = mp.hooks();
  amp::AutocastPolicy policy = mp.policy();
  if (!bf16) policy.low_precision.clear(), policy.low_saved_activations = false;
  amp::AmpContext autocast(policy);  // an all-fp32 policy behaves as no context
  std::vector<int64_t> ids(static_cast<std::size_t>(kB * kT));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>((i * 7 + 3) % kV);
  const Tensor tokens = Tensor::from_vector(ids, {kB, kT});
  const Tensor targets = Tensor::from_vector(ids, {kB * kT});
  nn::SoftmaxCrossEntropy loss;
  // What persists between steps: a one-token forward creates the weight copies (bf16).
  model.forward(Tensor::from_vector(std::vector<int64_t>{1}, {1, 1}));
  const int64_t persistent = host_allocated_bytes();
  int64_t act = 0;
  int64_t step = 0;
  for (auto _ : state) {
    opt.zero_grad();
    reset_host_peak();
    const Tensor logits = model.forward(tokens);
    loss.forward(logits.reshape({kB * kT, kV}), targets);
    model.backward(loss.backward().reshape({kB, kT, kV}));
    if (hooks.before_step(step)) {
      opt.step();
      hooks.after_step(step);
    }
    ++step;
    act = std::max(act, host_peak_bytes() - persistent);
  }
  const double tokens_per_step = static_cast<double>(kB * kT);
  state.counters["tokens/s"] =
      benchmark::Counter(tokens_per_step, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["FLOPS"] =
      benchmark::Counter(6.0 * static_cast<double>(model.num_parameters()) * tokens_per_step,
                         benchmark::Counter::kIsIterationInvariantRate);
  state.counters["act_MiB"] = static_cast<double>(act) / (1 << 20);
}
BENCHMARK(BM_GptTrainStep)
    ->ArgName("bf16")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

/// Forward + backward of one Linear(1024 -> 1024) on 2048 rows (the GEMM part of a step).
void BM_LinearStep(benchmark::State& state) {
  const bool bf16 = state.range(0) != 0;
  const int64_t n = 2048, d = 1024;
  nn::Linear lin(d, d, true, 1);
  amp::AutocastPolicy policy = amp::default_policy();
  if (!bf16) policy.low_precision.clear(), policy.low_saved_activations = false;
  amp::AmpContext autocast(policy);
  Tensor x = Tensor::empty({n, d});
  Tensor g = Tensor::empty({n, d});
  fill_uniform(x.view(), -1.f, 1.f, {});
  fill_uniform(g.view(), -1.f, 1.f, {});
  for (auto _ : state) {
    benchmark::DoNotOptimize(lin.forward(x));
    benchmark::DoNotOptimize(lin.backward(g));
  }
  state.counters["FLOPS"] = benchmark::Counter(6.0 * static_cast<double>(n * d * d),
                                               benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_LinearStep)
    ->ArgName("bf16")
    ->Arg(0)
    ->Arg(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
