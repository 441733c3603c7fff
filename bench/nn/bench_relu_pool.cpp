// ReLU and 2x2 max pooling forward on the host, each beside a plain copy of the same number of
// bytes in the same run, so bytes/s read as a fraction of what the memory system gives a copy.
// Sizes: the digits CNN at batch 360 (conv1: (360, 16, 8, 8), conv2 and the pool input:
// (360, 32, 8, 8)) and one larger feature map (32, 64, 32, 32) that splits into several tasks.
// Bytes processed: ReLU reads and writes n f32 (8 n bytes); max pooling reads the input and
// writes the output and its i64 indices (4 n + (4 + 8) n / 4 bytes); a copy of k bytes moves 2 k.
// Both ops allocate their output every call, so the copy does too. The argument "threads" is
// the CPU thread count (the copy is one memcpy on one thread).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <cstring>

#include "frugal/core.hpp"
#include "frugal/nn.hpp"

namespace {

using frugal::DType;
using frugal::Shape;
using frugal::Tensor;

frugal::ExecContext threads_ctx(int64_t threads) {
  frugal::ExecContext ctx;
  ctx.num_threads = static_cast<int>(threads);
  return ctx;
}

/// The shape of size-preset `i`: 0, 1 = digits CNN conv1 / conv2 outputs, 2 = a larger map.
Shape preset(int64_t i) {
  switch (i) {
    case 0:
      return Shape{360, 16, 8, 8};
    case 1:
      return Shape{360, 32, 8, 8};
    default:
      return Shape{32, 64, 32, 32};
  }
}

void BM_Relu(benchmark::State& state) {
  const frugal::ExecContext ctx = threads_ctx(state.range(1));
  // Half the values negative, so the ReLU's select is not predictable.
  const Tensor x = frugal::rand_uniform(preset(state.range(0)), DType::kF32, frugal::Device::cpu(),
                                        ctx, -1.f, 1.f);
  for (auto _ : state) {
    Tensor y = frugal::nn::relu(x, ctx);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * 2 * x.nbytes());
}

void BM_MaxPool2x2(benchmark::State& state) {
  const frugal::ExecContext ctx = threads_ctx(state.range(1));
  const Tensor x =
      frugal::rand_uniform(preset(state.range(0)), DType::kF32, frugal::Device::cpu(), ctx);
  int64_t bytes = 0;
  for (auto _ : state) {
    frugal::nn::MaxPool2dResult r = frugal::nn::max_pool2d(x, {2}, ctx);
    benchmark::DoNotOptimize(r.output.data_ptr());
    bytes = x.nbytes() + r.output.nbytes() + r.indices.nbytes();
  }
  state.SetBytesProcessed(state.iterations() * bytes);
}

/// Allocates a tensor of x's bytes and memcpys x into it: the reference for a pass over memory.
void BM_Copy(benchmark::State& state) {
  const Tensor x = Tensor::zeros(Shape{state.range(0) / 4}, DType::kF32);
  for (auto _ : state) {
    Tensor y = Tensor::empty(x.shape(), x.dtype());
    std::memcpy(y.data_ptr(), x.data_ptr(), static_cast<std::size_t>(x.nbytes()));
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * 2 * x.nbytes());
}

}  // namespace

BENCHMARK(BM_Relu)
    ->ArgNames({"preset", "threads"})
    ->ArgsProduct({{0, 1, 2}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MaxPool2x2)
    ->ArgNames({"preset", "threads"})
    ->ArgsProduct({{1, 2}, {1, 2}})
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
// Bytes of one ReLU input (presets 0, 1, 2: copy moves what ReLU moves) and of max pooling's
// traffic / 2 for presets 1 and 2 (copy moves what pooling moves).
BENCHMARK(BM_Copy)
    ->ArgName("bytes")
    ->Arg(360 * 16 * 64 * 4)
    ->Arg(360 * 32 * 64 * 4)
    ->Arg(32 * 64 * 1024 * 4)
    ->Arg(360 * 32 * 32 * 7)
    ->Arg(32 * 64 * 512 * 7)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
