// Dtype conversions (the CPU path of Tensor::to(dtype) / Tensor::copy_from) on 16M elements, f32 to
// each storage type and back, on 1 and 2 threads. Bytes = bytes read + bytes written per pass, so
// the GB/s compare directly with STREAM copy (bench_stream.cpp), the machine's limit.
//   cast/<src>-><dst>/threads:N     conversion into a preallocated tensor (copy_from)
//   cast_to/<src>-><dst>/threads:N  Tensor::to(dtype): allocation + page faults + conversion
#include <benchmark/benchmark.h>

#include <cstdint>
#include <string>
#include <vector>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/random.hpp"
#include "frugal/core/tensor.hpp"

namespace {

using frugal::DType;
using frugal::Tensor;

constexpr int64_t kCastElements = int64_t{16} << 20;  // 16M elements: 64 MB of f32

/// A 16M-element f32 tensor of uniform values in [-8, 8) (the i8/i4 range; the float formats
/// take it without overflow), created once.
const Tensor& source_f32() {
  static const Tensor t = [] {
    frugal::ExecContext ctx;
    ctx.seed = 1;
    return frugal::rand_uniform({kCastElements}, DType::kF32, frugal::Device::cpu(), ctx, -8.f,
                                8.f);
  }();
  return t;
}

frugal::ExecContext threads_ctx(int threads) {
  frugal::ExecContext ctx;
  ctx.num_threads = threads;
  return ctx;
}

void set_bytes(benchmark::State& state, DType from, DType to) {
  state.SetBytesProcessed(state.iterations() * (frugal::dtype_nbytes(from, kCastElements) +
                                                frugal::dtype_nbytes(to, kCastElements)));
}

/// from -> to into a preallocated, already touched destination.
void cast_into(benchmark::State& state, DType from, DType to, int threads) {
  const frugal::ExecContext ctx = threads_ctx(threads);
  const Tensor src = source_f32().to(from, ctx);
  Tensor dst = Tensor::zeros({kCastElements}, to);
  for (auto _ : state) {
    dst.copy_from(src, ctx);
    benchmark::ClobberMemory();
  }
  set_bytes(state, from, to);
}

/// from -> to through Tensor::to(dtype), which allocates the result every time.
void cast_to(benchmark::State& state, DType from, DType to, int threads) {
  const frugal::ExecContext ctx = threads_ctx(threads);
  const Tensor src = source_f32().to(from, ctx);
  for (auto _ : state) {
    Tensor dst = src.to(to, ctx);
    benchmark::DoNotOptimize(dst.data_ptr());
  }
  set_bytes(state, from, to);
}

std::string name_of(const char* kind, DType from, DType to, int threads) {
  return std::string(kind) + "/" + std::string(frugal::dtype_name(from)) + "->" +
         std::string(frugal::dtype_name(to)) + "/threads:" + std::to_string(threads);
}

const bool registered = [] {
  const std::vector<DType> formats = {DType::kF16,    DType::kBF16, DType::kF8E4M3,
                                      DType::kF8E5M2, DType::kI8,   DType::kI4};
  for (DType t : formats) {
    for (int threads : {1, 2}) {
      for (auto [from, to] : {std::pair{DType::kF32, t}, std::pair{t, DType::kF32}}) {
        benchmark::RegisterBenchmark(name_of("cast", from, to, threads).c_str(), cast_into, from,
                                     to, threads)
            ->UseRealTime()
            ->Unit(benchmark::kMillisecond);
      }
    }
  }
  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark(name_of("cast_to", DType::kF32, DType::kBF16, threads).c_str(),
                                 cast_to, DType::kF32, DType::kBF16, threads)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  return true;
}();

}  // namespace
