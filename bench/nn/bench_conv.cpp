// nn::Conv2d forward + backward beside the three raw GEMMs of its im2col formulation, so the
// ratio of the two FLOPS rates is the convolution's overhead (im2col / col2im, sample blocking,
// the weight-gradient chunk reduction, bias, allocation). Problem: a typical small-CNN layer,
// N = 64, 32 -> 64 channels, 16 x 16, 3 x 3 kernel, padding 1, f32. Its GEMM equivalent has
// M = N H W = 16384, K = C_in kh kw = 288, N = C_out = 64:
//   forward     y  = col (M x K) * W^T (K x N)
//   input grad  dcol = dy (M x N) * W (N x K)
//   weight grad dW += dy^T (N x M) * col (M x K)          (beta = 1)
// so FLOPS counts 3 * 2 * M * K * N per iteration. The argument is the CPU thread count; the
// Cuda variant runs on GPU 0 (cuDNN, FMA math) and waits for the stream each step.
#include <benchmark/benchmark.h>

#include <cstdint>

#include "cu_ops.hpp"
#include "frugal/core.hpp"
#include "frugal/nn.hpp"

namespace {

constexpr int64_t kN = 64, kCin = 32, kCout = 64, kH = 16, kW = 16, kK = 3;
constexpr int64_t kGemmM = kN * kH * kW;
constexpr int64_t kGemmK = kCin * kK * kK;
constexpr int64_t kGemmN = kCout;

void set_conv_flops(benchmark::State& state) {
  const double flops = 3.0 * 2.0 * kGemmM * kGemmK * kGemmN;
  state.counters["FLOPS"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

bool conv_have_device(benchmark::State& state, frugal::Device device) {
  if (device.is_cuda() && !frugal::cuda_available()) {
    state.SkipWithError("no usable CUDA device");
    return false;
  }
  return true;
}

void conv_step(benchmark::State& state, frugal::Device device) {
  if (!conv_have_device(state, device)) return;
  frugal::ExecContext ctx;
  ctx.num_threads = static_cast<int>(state.range(0));
  frugal::nn::Conv2d conv(kCin, kCout, kK, {.padding = 1}, 1);
  conv.to(device);
  conv.set_context(ctx);
  const auto f32 = frugal::DType::kF32;
  const frugal::Tensor x = frugal::rand_uniform({kN, kCin, kH, kW}, f32, device, ctx);
  const frugal::Tensor g = frugal::rand_uniform({kN, kCout, kH, kW}, f32, device, ctx);
  for (auto _ : state) {
    frugal::Tensor y = conv.forward(x);
    frugal::Tensor gx = conv.backward(g);
    if (device.is_cuda()) frugal::cu::synchronize(ctx);
    benchmark::DoNotOptimize(y.data_ptr());
    benchmark::DoNotOptimize(gx.data_ptr());
  }
  set_conv_flops(state);
}

void conv_raw_gemms(benchmark::State& state) {
  frugal::ExecContext ctx;
  ctx.num_threads = static_cast<int>(state.range(0));
  const auto f32 = frugal::DType::kF32;
  const auto cpu = frugal::Device::cpu();
  const frugal::Tensor col = frugal::rand_uniform({kGemmM, kGemmK}, f32, cpu, ctx);
  const frugal::Tensor w = frugal::rand_uniform({kGemmN, kGemmK}, f32, cpu, ctx);
  const frugal::Tensor dy = frugal::rand_uniform({kGemmM, kGemmN}, f32, cpu, ctx);
  frugal::Tensor dw = frugal::Tensor::zeros({kGemmN, kGemmK}, f32, cpu, ctx);
  for (auto _ : state) {
    frugal::Tensor y = frugal::gemm(col, w, {.trans_b = true}, ctx);      // col W^T
    frugal::Tensor dcol = frugal::gemm(dy, w, {}, ctx);                   // dy W
    frugal::gemm_into(dy, col, dw, {.trans_a = true, .beta = 1.0}, ctx);  // += dy^T col
    benchmark::DoNotOptimize(y.data_ptr());
    benchmark::DoNotOptimize(dcol.data_ptr());
  }
  set_conv_flops(state);
}

void BM_Conv2dStep(benchmark::State& state) { conv_step(state, frugal::Device::cpu()); }
void BM_Conv2dRawGemms(benchmark::State& state) { conv_raw_gemms(state); }
void BM_Conv2dStepCuda(benchmark::State& state) { conv_step(state, frugal::Device::cuda()); }

}  // namespace

BENCHMARK(BM_Conv2dStep)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv2dRawGemms)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Conv2dStepCuda)
    ->ArgName("threads")
    ->Arg(1)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
