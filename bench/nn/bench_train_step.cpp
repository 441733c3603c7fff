// One full training step (zero_grad, forward, softmax cross-entropy, backward, AdamW step) of the
// models the cost report trains (frugal/nn/models.hpp), with its memory:
//   peak_host_bytes   frugal host memory alive at the step's high-water mark: parameters,
//                     gradients, AdamW moments, the batch, activations and temporaries
//                     (reset_host_peak before the timed loop, host_peak_bytes after it);
//   step_extra_bytes  what a step adds on top of the memory held between steps: peak -
//                     host_allocated_bytes() before the loop (what is held includes the
//                     activations the layers keep from their last forward for backward);
//   samples/s         examples (MLP: 64-pixel digits; GPT: sequences of 64 characters) per second.
// The argument is the CPU thread count; the whole step runs inside one arena of that many threads.
#include <benchmark/benchmark.h>

#include <cstdint>

#include "frugal/core.hpp"
#include "frugal/core/memory.hpp"
#include "frugal/nn.hpp"

namespace {

namespace nn = frugal::nn;

/// Times `step()` with the memory counters above; `batch` samples per step.
template <class Step>
void run_steps(benchmark::State& state, int64_t batch, Step step) {
  frugal::ExecContext arena;
  arena.num_threads = static_cast<int>(state.range(0));
  arena.run([&] {
    step();  // warm-up: first-touch of the workspaces and of the AdamW moments
    const int64_t before = frugal::host_allocated_bytes();
    frugal::reset_host_peak();
    for (auto _ : state) step();
    const int64_t peak = frugal::host_peak_bytes();
    state.counters["peak_host_bytes"] = static_cast<double>(peak);
    state.counters["step_extra_bytes"] = static_cast<double>(peak - before);
  });
  state.counters["samples/s"] =
      benchmark::Counter(static_cast<double>(batch), benchmark::Counter::kIsIterationInvariantRate);
}

void BM_TrainStepMlpDigits(benchmark::State& state) {
  constexpr int64_t kBatch = 64;
  auto model = nn::make_mlp({64, 256, 128, 10}, 1);
  nn::AdamW opt(model->named_parameters(), nn::mlp_digits_recipe().adamw);
  const frugal::Tensor x =
      frugal::rand_uniform({kBatch, 64}, frugal::DType::kF32, frugal::Device::cpu(), {});
  const nn::LabeledData labels = nn::make_classification(kBatch, 1, 10, 3);
  nn::SoftmaxCrossEntropy loss;
  run_steps(state, kBatch, [&] {
    opt.zero_grad();
    const float l = loss.forward(model->forward(x), labels.labels);
    model->backward(loss.backward());
    opt.step();
    benchmark::DoNotOptimize(l);
  });
}

void BM_TrainStepCharGpt(benchmark::State& state) {
  constexpr int64_t kBatch = 16, kVocab = 97;  // 97: the default corpus's vocabulary
  const nn::GPTConfig cfg = nn::char_gpt_config(kVocab, nn::CharGptSize::kSmall, 1);
  const int64_t t = cfg.block_size;
  nn::GPT model(cfg);
  nn::AdamW opt(model.named_parameters(), nn::char_gpt_recipe().adamw);
  const frugal::Tensor tokens = nn::random_tokens({kBatch, t}, kVocab, 5);
  const frugal::Tensor targets = nn::random_tokens({kBatch * t}, kVocab, 6);
  nn::SoftmaxCrossEntropy loss;
  run_steps(state, kBatch, [&] {
    opt.zero_grad();
    const frugal::Tensor logits = model.forward(tokens);  // (B, T, V)
    const float l = loss.forward(logits.reshape({kBatch * t, kVocab}), targets);
    model.backward(loss.backward().reshape({kBatch, t, kVocab}));
    nn::clip_grad_norm(opt.params(), 1.0);
    opt.step();
    benchmark::DoNotOptimize(l);
  });
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(kBatch * t),
                                                  benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

// Wall time: the step runs on the arena's threads, not only the calling one.
BENCHMARK(BM_TrainStepMlpDigits)->Arg(1)->Arg(2)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_TrainStepCharGpt)->Arg(1)->Arg(2)->Unit(benchmark::kMillisecond)->UseRealTime();
