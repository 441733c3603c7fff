// Response KD forward + backward (kd_loss: loss and gradient in one fused pass) on 4096 x 1000
// f32 logits at T = 4, beside the memory-traffic limit of the same work measured in the same
// binary: a STREAM-like kernel that reads two 16 MB arrays and writes one 16 MB array
// (g[i] = a[i] - b[i]), the bytes kd_loss must move at least. Both report bytes as 48 MB per
// iteration, so their GB/s read as a fraction of the limit. The argument is the CPU thread count;
// the target is <= 6 ms on 1 thread. Variants: with the hard-label CE mixed in
// (alpha = 0.5), against a top-16 teacher, into a reused gradient buffer (kd_loss_into: no page
// faults on a fresh 16 MB buffer), and (with a GPU) on CUDA.
#include <benchmark/benchmark.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <cstdint>
#include <vector>

#include "cu_ops.hpp"
#include "frugal/core.hpp"
#include "frugal/distill.hpp"

namespace {

constexpr int64_t kRows = 4096;
constexpr int64_t kClasses = 1000;
constexpr double kTemperature = 4.0;
// Bytes kd_loss must move: read student and teacher, write the gradient (f32).
constexpr int64_t kBytes = 3 * kRows * kClasses * int64_t{sizeof(float)};

struct Logits {
  frugal::Tensor student = frugal::Tensor::empty({kRows, kClasses});
  frugal::Tensor teacher = frugal::Tensor::empty({kRows, kClasses});
  frugal::Tensor labels = frugal::Tensor::empty({kRows}, frugal::DType::kI64);
  Logits() {
    frugal::ExecContext ctx;
    ctx.seed = 1;
    frugal::fill_normal(student, 0.f, 3.f, ctx);
    ctx.seed = 2;
    frugal::fill_normal(teacher, 0.f, 3.f, ctx);
    int64_t* y = labels.data<int64_t>();
    for (int64_t i = 0; i < kRows; ++i) y[i] = (i * 37) % kClasses;
  }
  static Logits& get() {
    static Logits l;
    return l;
  }
};

frugal::ExecContext threads(benchmark::State& state) {
  frugal::ExecContext ctx;
  ctx.num_threads = static_cast<int>(state.range(0));
  return ctx;
}

void BM_KdLoss(benchmark::State& state) {
  Logits& l = Logits::get();
  const frugal::ExecContext ctx = threads(state);
  for (auto _ : state) {
    frugal::distill::KdResult r = frugal::distill::kd_loss(l.student, l.teacher, kTemperature, ctx);
    benchmark::DoNotOptimize(r.loss);
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
}

void BM_KdLossIntoBuffer(benchmark::State& state) {
  Logits& l = Logits::get();
  const frugal::ExecContext ctx = threads(state);
  frugal::Tensor grad = frugal::Tensor::zeros({kRows, kClasses});
  for (auto _ : state) {
    frugal::distill::KdResult r =
        frugal::distill::kd_loss_into(l.student, l.teacher, {}, kTemperature, 1.0, grad, ctx);
    benchmark::DoNotOptimize(r.loss);
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
}

void BM_KdLossWithLabels(benchmark::State& state) {
  Logits& l = Logits::get();
  const frugal::ExecContext ctx = threads(state);
  for (auto _ : state) {
    frugal::distill::KdResult r =
        frugal::distill::kd_loss(l.student, l.teacher, l.labels, kTemperature, 0.5, ctx);
    benchmark::DoNotOptimize(r.loss);
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
}

void BM_KdLossTopK16(benchmark::State& state) {
  Logits& l = Logits::get();
  const frugal::ExecContext ctx = threads(state);
  static const frugal::distill::TopKLogits tk = frugal::distill::topk_teacher(l.teacher, 16);
  for (auto _ : state) {
    frugal::distill::KdResult r = frugal::distill::kd_loss_topk(l.student, tk, kTemperature, ctx);
    benchmark::DoNotOptimize(r.loss);
  }
  // Reads the student and the top-k teacher (values and indices), writes the gradient.
  state.SetBytesProcessed(state.iterations() * (2 * kRows * kClasses * int64_t{sizeof(float)} +
                                                kRows * 16 * int64_t{sizeof(float) + 8}));
}

/// The uniform-tail top-k teacher: the same plus one lse per row and one more pass over the
/// student row (the sum of its logits, for the tail's cross term).
void BM_KdLossTopK16Uniform(benchmark::State& state) {
  Logits& l = Logits::get();
  const frugal::ExecContext ctx = threads(state);
  static const frugal::distill::TopKLogits tk =
      frugal::distill::topk_teacher(l.teacher, 16, kTemperature);
  for (auto _ : state) {
    frugal::distill::KdResult r = frugal::distill::kd_loss_topk(l.student, tk, kTemperature, ctx);
    benchmark::DoNotOptimize(r.loss);
  }
  state.SetBytesProcessed(state.iterations() * (2 * kRows * kClasses * int64_t{sizeof(float)} +
                                                kRows * 16 * int64_t{sizeof(float) + 8} +
                                                kRows * int64_t{sizeof(float)}));
}

/// The limit: read two arrays of kRows x kClasses floats, write a third (not cached between
/// iterations: 48 MB, beyond this machine's caches).
void BM_StreamRead2Write1(benchmark::State& state) {
  Logits& l = Logits::get();
  const int threads_n = static_cast<int>(state.range(0));
  frugal::Tensor out = frugal::Tensor::zeros({kRows, kClasses});
  const float* __restrict a = l.student.data<float>();
  const float* __restrict b = l.teacher.data<float>();
  float* __restrict g = out.data<float>();
  const int64_t n = kRows * kClasses;
  tbb::task_arena arena(threads_n);
  for (auto _ : state) {
    arena.execute([&] {
      tbb::parallel_for(
          tbb::blocked_range<int64_t>(0, n, (n + threads_n - 1) / threads_n),
          [&](const tbb::blocked_range<int64_t>& r) {
            for (int64_t i = r.begin(); i < r.end(); ++i) g[i] = a[i] - b[i];
          },
          tbb::static_partitioner());
    });
    benchmark::DoNotOptimize(g);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
}

void BM_KdLossCuda(benchmark::State& state) {
  if (!frugal::cuda_available()) {
    state.SkipWithError("no usable CUDA device");
    return;
  }
  Logits& l = Logits::get();
  const frugal::Tensor s = l.student.to(frugal::Device::cuda());
  const frugal::Tensor t = l.teacher.to(frugal::Device::cuda());
  for (auto _ : state) {
    // kd_loss returns the loss on the host, so every iteration waits for the stream.
    frugal::distill::KdResult r = frugal::distill::kd_loss(s, t, kTemperature);
    benchmark::DoNotOptimize(r.loss);
  }
  state.SetBytesProcessed(state.iterations() * kBytes);
}

// Wall-clock time: the worker threads' CPU time is not the main thread's.
BENCHMARK(BM_StreamRead2Write1)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KdLoss)->ArgName("threads")->Arg(1)->Arg(2)->UseRealTime()->Unit(
    benchmark::kMillisecond);
BENCHMARK(BM_KdLossIntoBuffer)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KdLossWithLabels)
    ->ArgName("threads")
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KdLossTopK16)
    ->ArgName("threads")
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KdLossTopK16Uniform)
    ->ArgName("threads")
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_KdLossCuda)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
