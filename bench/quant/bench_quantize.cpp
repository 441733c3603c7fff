// int8 quantize / dequantize / fake-quantize, per tensor and per channel, on 64M f32 elements, on
// 1 and 2 threads, beside a STREAM copy of the same size in the same binary: the memory-bandwidth
// limit. Bytes processed = bytes read + bytes written (STREAM convention, no write-allocate), so
// GB/s compare directly; the counter `of_copy` is the fraction of the STREAM copy rate measured
// in this run at the same thread count (target: >= 0.85 on 1 thread). On a shared machine the
// wall clock also counts time the thread was not scheduled, so 1-thread runs add `of_copy_cpu`:
// the same fraction computed from the calling thread's CPU time (which includes memory stalls),
// valid when one thread does all the work.
#include <benchmark/benchmark.h>
#include <tbb/parallel_for.h>
#include <time.h>

#include <chrono>
#include <cstdint>
#include <map>

#include "frugal/core.hpp"
#include "frugal/quant.hpp"

namespace {

using namespace frugal;
using namespace frugal::quant;

constexpr int64_t kN = int64_t{64} << 20;  // 64M elements
constexpr int64_t kRows = 4096;            // per-channel layout: (4096, 16384), channels on axis 0

/// Inputs and outputs, allocated and touched once for the whole run (outputs reused).
struct Buffers {
  Tensor x, out, codes;
  QParams per_tensor, per_channel;
  Buffers() {
    ExecContext ctx;
    x = Tensor::empty({kRows, kN / kRows});
    ctx.seed = 1;
    fill_uniform(x, -4.f, 4.f, ctx);
    out = Tensor::zeros({kRows, kN / kRows});
    codes = Tensor::zeros({kRows, kN / kRows}, DType::kI8);
    QuantSpec s;
    per_tensor = minmax_qparams(x, s);
    s.granularity = Granularity::kPerChannel;
    per_channel = minmax_qparams(x, s);
    // Warm-up: a few passes over every buffer, so that page faults and huge-page collapsing
    // are over before the first timed benchmark (the copy) runs.
    for (int pass = 0; pass < 3; ++pass) {
      out.copy_from(x);
      quantize_into(x, QuantSpec{}, per_tensor, codes.view());
    }
  }
  static Buffers& get() {
    static Buffers b;
    return b;
  }
};

std::map<int, double>& copy_rate() {  // bytes per second of the STREAM copy, by thread count
  static std::map<int, double> r;
  return r;
}

double& copy_cpu_rate() {  // bytes per CPU-second of the 1-thread STREAM copy
  static double r = 0;
  return r;
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
}

ExecContext threads_ctx(const benchmark::State& state) {
  ExecContext ctx;
  ctx.num_threads = static_cast<int>(state.range(0));
  return ctx;
}

/// Times `body` per iteration (wall clock) and reports bytes and the fraction of the copy rate.
template <class Body>
void run(benchmark::State& state, int64_t bytes_per_iter, Body body, bool is_copy = false) {
  double seconds = 0, cpu = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const double c0 = thread_cpu_seconds();
    body();
    benchmark::ClobberMemory();
    cpu += thread_cpu_seconds() - c0;
    seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  state.SetBytesProcessed(state.iterations() * bytes_per_iter);
  const double bytes = double(state.iterations()) * double(bytes_per_iter);
  const double rate = bytes / seconds;
  const int threads = static_cast<int>(state.range(0));
  if (is_copy) copy_rate()[threads] = rate;
  if (copy_rate().count(threads)) state.counters["of_copy"] = rate / copy_rate()[threads];
  if (threads == 1) {
    if (is_copy) copy_cpu_rate() = bytes / cpu;
    if (copy_cpu_rate() > 0) state.counters["of_copy_cpu"] = bytes / cpu / copy_cpu_rate();
  }
}

// STREAM copy of kN floats through the same arena and a static split (the limit).
void BM_StreamCopy(benchmark::State& state) {
  Buffers& b = Buffers::get();
  const ExecContext ctx = threads_ctx(state);
  const float* __restrict src = b.x.data<float>();
  float* __restrict dst = b.out.data<float>();
  const int threads = static_cast<int>(state.range(0));
  run(
      state, 2 * kN * 4,
      [&] {
        ctx.run([&] {
          tbb::parallel_for(
              tbb::blocked_range<int64_t>(0, kN, (kN + threads - 1) / threads),
              [&](const tbb::blocked_range<int64_t>& r) {
                for (int64_t i = r.begin(); i < r.end(); ++i) dst[i] = src[i];
              },
              tbb::static_partitioner());
        });
      },
      true);
}

QuantSpec spec_for(bool per_channel) {
  QuantSpec s;
  if (per_channel) s.granularity = Granularity::kPerChannel;
  return s;
}

void BM_Quantize(benchmark::State& state) {
  Buffers& b = Buffers::get();
  const bool pc = state.range(1) != 0;
  const ExecContext ctx = threads_ctx(state);
  const QParams& p = pc ? b.per_channel : b.per_tensor;
  run(state, kN * 4 + kN, [&] { quantize_into(b.x, spec_for(pc), p, b.codes.view(), ctx); });
}

void BM_Dequantize(benchmark::State& state) {
  Buffers& b = Buffers::get();
  const bool pc = state.range(1) != 0;
  const ExecContext ctx = threads_ctx(state);
  QTensor q{b.codes, spec_for(pc), pc ? b.per_channel : b.per_tensor, b.x.shape()};
  quantize_into(b.x, q.spec, q.qparams, b.codes.view(), ctx);
  run(state, kN + kN * 4, [&] { dequantize_into(q, b.out.view(), ctx); });
}

void BM_FakeQuantize(benchmark::State& state) {
  Buffers& b = Buffers::get();
  const bool pc = state.range(1) != 0;
  const ExecContext ctx = threads_ctx(state);
  const QParams& p = pc ? b.per_channel : b.per_tensor;
  run(state, kN * 4 * 2, [&] { fake_quantize_into(b.x, spec_for(pc), p, b.out.view(), ctx); });
}

// Wall-clock time: the worker threads' CPU time is not the main thread's.
BENCHMARK(BM_StreamCopy)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Quantize)
    ->ArgNames({"threads", "per_channel"})
    ->ArgsProduct({{1, 2}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Dequantize)
    ->ArgNames({"threads", "per_channel"})
    ->ArgsProduct({{1, 2}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FakeQuantize)
    ->ArgNames({"threads", "per_channel"})
    ->ArgsProduct({{1, 2}, {0, 1}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
