// Quantized compute against its fp32 baseline in the same run, one thread unless stated:
//   int8 GEMM 2048^3 (frugal::quant::qgemm_s32: oneDNN u8s8s32 and the own VNNI kernel) beside
//   Eigen's fp32 GEMM of the same shape; FLOPS counts 2 M N K (read as GOP/s);
//   weight-only int4 / int8 GEMV 4096 x 4096 at batch 1 beside Eigen's fp32 GEMV; bytes are the
//   weight bytes read (int4: 8 MiB + scales, fp32: 64 MiB), FLOPS 2 N K;
//   entropy calibration of a 16M-element tensor: observe (min/max + histogram) and the KL search.
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cstdint>
#include <random>
#include <vector>

#include "frugal/core/build_config.hpp"
#include "frugal/core/packed.hpp"
#include "frugal/quant/observer.hpp"
#include "frugal/quant/qgemm.hpp"

namespace {

using frugal::DType;
using frugal::ExecContext;
using frugal::Tensor;
namespace q = frugal::quant;

void set_ops(benchmark::State& state, double ops) {
  state.counters["FLOPS"] = benchmark::Counter(ops, benchmark::Counter::kIsIterationInvariantRate);
}

Tensor random_i8(int64_t r, int64_t c, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> d(-128, 127);
  std::vector<int8_t> v(static_cast<size_t>(r * c));
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return Tensor::from_vector(v, {r, c});
}

std::vector<float> random_f32(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = d(rng);
  return v;
}

ExecContext threads(int64_t n) {
  ExecContext ctx;
  ctx.num_threads = static_cast<int>(n);
  return ctx;
}

// Arguments: size, backend (0 auto, 1 oneDNN, 2 own kernel), threads.
void BM_QGemmInt8(benchmark::State& state) {
  const int64_t n = state.range(0);
  const auto backend = static_cast<q::QGemmBackend>(state.range(1));
  if (backend == q::QGemmBackend::kDnnl && !FRUGAL_HAS_DNNL) {
    state.SkipWithError("oneDNN not compiled in");
    return;
  }
  const ExecContext ctx = threads(state.range(2));
  const Tensor a = random_i8(n, n, 1), b = random_i8(n, n, 2);
  for (auto _ : state) {
    Tensor c = q::qgemm_s32(a, 0, b, {backend}, ctx);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_ops(state, 2.0 * n * n * n);
}
BENCHMARK(BM_QGemmInt8)
    ->ArgNames({"n", "backend", "threads"})
    ->Args({2048, 1, 1})
    ->Args({2048, 2, 1})
    ->Args({2048, 0, 2})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The full int8 layer: integer GEMM plus the dequantizing epilogue (per-channel scales, bias).
void BM_QGemmInt8F32Out(benchmark::State& state) {
  const int64_t n = state.range(0);
  const ExecContext ctx = threads(1);
  const Tensor a = random_i8(n, n, 1), b = random_i8(n, n, 2);
  const Tensor sb = Tensor::full({n}, 0.01, DType::kF32), bias = Tensor::zeros({n});
  for (auto _ : state) {
    Tensor c = q::qgemm_f32(a, 0.02f, 0, b, sb, bias, {}, ctx);
    benchmark::DoNotOptimize(c.data_ptr());
  }
  set_ops(state, 2.0 * n * n * n);
}
BENCHMARK(BM_QGemmInt8F32Out)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

// Baseline: Eigen fp32 GEMM, one thread (Eigen is built without OpenMP here).
void BM_GemmF32Eigen(benchmark::State& state) {
  const int64_t n = state.range(0);
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Matrix a = Matrix::Random(n, n), b = Matrix::Random(n, n);
  Matrix c(n, n);
  for (auto _ : state) {
    c.noalias() = a * b.transpose();
    benchmark::DoNotOptimize(c.data());
  }
  set_ops(state, 2.0 * n * n * n);
}
BENCHMARK(BM_GemmF32Eigen)->Arg(2048)->Unit(benchmark::kMillisecond)->UseRealTime();

// Weight-only GEMV, (N, K) = (4096, 4096), batch 1; arguments: bits (4 or 8), group size.
void BM_WoqGemv(benchmark::State& state) {
  const int64_t n = 4096, k = 4096;
  const bool i4 = state.range(0) == 4;
  const int64_t g = state.range(1);
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> d(i4 ? -8 : -128, i4 ? 7 : 127);
  std::vector<int8_t> codes(static_cast<size_t>(n * k));
  for (auto& c : codes) c = static_cast<int8_t>(d(rng));
  Tensor w;
  if (i4) {
    w = Tensor::empty({n, k}, DType::kI4);
    frugal::pack_i4(codes.data(), static_cast<uint8_t*>(w.data_ptr()), n * k);
  } else {
    w = Tensor::from_vector(codes, {n, k});
  }
  const Tensor s = Tensor::full({n, k / g}, 0.01, DType::kF32);
  const Tensor x = Tensor::from_vector(random_f32(k, 4), {k});
  const ExecContext ctx = threads(1);
  for (auto _ : state) {
    Tensor y = q::woq_matmul(x, w, s, g, ctx);
    benchmark::DoNotOptimize(y.data_ptr());
  }
  state.SetBytesProcessed(state.iterations() * (w.nbytes() + s.nbytes()));
  set_ops(state, 2.0 * n * k);
}
BENCHMARK(BM_WoqGemv)
    ->ArgNames({"bits", "group"})
    ->Args({4, 64})
    ->Args({4, 128})
    ->Args({8, 128})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

// Baseline: Eigen fp32 GEMV y = W x, W (4096, 4096) row-major, one thread.
void BM_GemvF32Eigen(benchmark::State& state) {
  const int64_t n = 4096, k = 4096;
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Matrix w = Matrix::Random(n, k);
  const Eigen::VectorXf x = Eigen::VectorXf::Random(k);
  Eigen::VectorXf y(n);
  for (auto _ : state) {
    y.noalias() = w * x;
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(state.iterations() * n * k * 4);
  set_ops(state, 2.0 * n * k);
}
BENCHMARK(BM_GemvF32Eigen)->Unit(benchmark::kMicrosecond)->UseRealTime();

// Entropy calibration of 16M Gaussian elements on one thread: observe + threshold (KL search).
void BM_EntropyCalibration(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Tensor x = Tensor::from_vector(random_f32(n, 5), {n});
  const ExecContext ctx = threads(1);
  q::QuantSpec spec;
  double t = 0;
  for (auto _ : state) {
    q::EntropyObserver obs;
    obs.observe(x, ctx);
    t = obs.threshold(spec);
    benchmark::DoNotOptimize(t);
  }
  state.counters["threshold"] = t;
  state.SetBytesProcessed(state.iterations() * n * 4);
}
BENCHMARK(BM_EntropyCalibration)
    ->Arg(int64_t{1} << 24)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
