// nn::Linear forward + backward beside exactly the three raw GEMMs it is made of, so the ratio of
// the two FLOPS rates is Linear's overhead (bias add, bias-gradient column sum, reshapes,
// allocation, validation). Problem: weight 1024 x 1024, batch 256, f32. One step is
//   y = x W^T (256x1024x1024), grad_x = g W (same), grad_W += g^T x (1024x256x1024, beta = 1),
// so FLOPS counts 3 * 2 * 256 * 1024 * 1024 per iteration. The argument is the CPU thread count
// (ExecContext::num_threads); the *Cuda variants run on GPU 0 and wait for the stream each step.
#include <benchmark/benchmark.h>

#include <cstdint>

#include "cu_ops.hpp"
#include "frugal/core.hpp"
#include "frugal/nn.hpp"

namespace {

constexpr int64_t kBatch = 256;
constexpr int64_t kIn = 1024;
constexpr int64_t kOut = 1024;

void set_flops(benchmark::State& state) {
  const double flops = 3.0 * 2.0 * kBatch * kIn * kOut;
  state.counters["FLOPS"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

bool have_device(benchmark::State& state, frugal::Device device) {
  if (device.is_cuda() && !frugal::cuda_available()) {
    state.SkipWithError("no usable CUDA device");
    return false;
  }
  return true;
}

void finish(frugal::Device device, const frugal::ExecContext& ctx) {
  if (device.is_cuda()) frugal::cu::synchronize(ctx);
}

void linear_step(benchmark::State& state, frugal::Device device) {
  if (!have_device(state, device)) return;
  frugal::ExecContext ctx;
  ctx.num_threads = static_cast<int>(state.range(0));
  frugal::nn::Linear layer(kIn, kOut, true, 1);
  layer.to(device);
  layer.set_context(ctx);
  const frugal::Tensor x = frugal::rand_uniform({kBatch, kIn}, frugal::DType::kF32, device, ctx);
  const frugal::Tensor g = frugal::rand_uniform({kBatch, kOut}, frugal::DType::kF32, device, ctx);
  for (auto _ : state) {
    frugal::Tensor y = layer.forward(x);
    frugal::Tensor gx = layer.backward(g);
    finish(device, ctx);
    benchmark::DoNotOptimize(y.data_ptr());
    benchmark::DoNotOptimize(gx.data_ptr());
  }
  set_flops(state);
}

void raw_gemms(benchmark::State& state, frugal::Device device) {
  if (!have_device(state, device)) return;
  frugal::ExecContext ctx;
  ctx.num_threads = static_cast<int>(state.range(0));
  const auto f32 = frugal::DType::kF32;
  const frugal::Tensor x = frugal::rand_uniform({kBatch, kIn}, f32, device, ctx);
  const frugal::Tensor g = frugal::rand_uniform({kBatch, kOut}, f32, device, ctx);
  const frugal::Tensor w = frugal::rand_uniform({kOut, kIn}, f32, device, ctx);
  frugal::Tensor gw = frugal::Tensor::zeros({kOut, kIn}, f32, device, ctx);
  for (auto _ : state) {
    frugal::Tensor y = frugal::gemm(x, w, {.trans_b = true}, ctx);     // x W^T
    frugal::Tensor gx = frugal::gemm(g, w, {}, ctx);                   // g W
    frugal::gemm_into(g, x, gw, {.trans_a = true, .beta = 1.0}, ctx);  // += g^T x
    finish(device, ctx);
    benchmark::DoNotOptimize(y.data_ptr());
    benchmark::DoNotOptimize(gx.data_ptr());
  }
  set_flops(state);
}

void BM_LinearStep(benchmark::State& state) { linear_step(state, frugal::Device::cpu()); }
void BM_LinearRawGemms(benchmark::State& state) { raw_gemms(state, frugal::Device::cpu()); }
void BM_LinearStepCuda(benchmark::State& state) { linear_step(state, frugal::Device::cuda()); }
void BM_LinearRawGemmsCuda(benchmark::State& state) { raw_gemms(state, frugal::Device::cuda()); }

}  // namespace

// CPU: rates from the calling thread's CPU time (one thread runs the whole step in the caller's
// arena slot), so a shared, loaded machine does not skew the ratio. CUDA: wall time.
BENCHMARK(BM_LinearStep)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LinearRawGemms)->Arg(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LinearStepCuda)->Arg(0)->Unit(benchmark::kMicrosecond)->UseRealTime();
BENCHMARK(BM_LinearRawGemmsCuda)->Arg(0)->Unit(benchmark::kMicrosecond)->UseRealTime();
