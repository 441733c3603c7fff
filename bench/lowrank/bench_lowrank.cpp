// Randomized SVD cost against its own GEMMs and against a full SVD, on one CPU thread (issue 8):
//   lowrank/gemms/<n>           the six f32 products rSVD does at rank 64, p = 10, q = 2: three
//                               A (n x n) * P (n x 74) and three A^T * P, into preallocated outputs
//   lowrank/rsvd/<n>            randomized_svd(A, 64, {p = 10, q = 2}) with the error estimate off
//                               (RsvdError::kNone) and with kAuto (one extra pass over A)
//   lowrank/bdcsvd/<n>          thin BDCSVD of the same A (lowrank::svd), one iteration
// Targets: rsvd <= 1.3x gemms; bdcsvd >= 50x rsvd. A is f32 with a decaying spectrum: a rank-256
// part G1 diag(0.98^i) G2 / sqrt(n) plus a 1e-3 Gaussian floor, so it is full rank.
#include <benchmark/benchmark.h>

#include <cmath>
#include <cstdint>
#include <map>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/core/random.hpp"
#include "frugal/lowrank/randomized_svd.hpp"
#include "frugal/lowrank/svd.hpp"

namespace {

using frugal::DType;
using frugal::Tensor;

constexpr int64_t kRank = 64;
constexpr int64_t kOversampling = 10;
constexpr int64_t kPowerIters = 2;
constexpr int64_t kLowRank = 256;

frugal::ExecContext one_thread() {
  frugal::ExecContext ctx;
  ctx.num_threads = 1;
  return ctx;
}

/// The n x n test matrix, built once per n.
const Tensor& matrix(int64_t n) {
  static std::map<int64_t, Tensor> cache;
  auto it = cache.find(n);
  if (it != cache.end()) return it->second;
  frugal::ExecContext ctx;
  ctx.seed = 1;
  const auto dev = frugal::Device::cpu();
  Tensor g1 = frugal::rand_normal({n, kLowRank}, DType::kF32, dev, ctx);
  ctx.offset = frugal::philox_counters(n * kLowRank);
  const Tensor g2 = frugal::rand_normal({kLowRank, n}, DType::kF32, dev, ctx);
  std::vector<float> d(static_cast<std::size_t>(kLowRank * kLowRank), 0.f);
  for (int64_t i = 0; i < kLowRank; ++i) {
    d[static_cast<std::size_t>(i * kLowRank + i)] = static_cast<float>(
        std::pow(0.98, static_cast<double>(i)) / std::sqrt(static_cast<double>(n)));
  }
  const Tensor dg = Tensor::from_vector(d, {kLowRank, kLowRank});
  ctx.offset += frugal::philox_counters(kLowRank * n);
  Tensor a = frugal::rand_normal({n, n}, DType::kF32, dev, ctx, 0.f, 1e-3f);
  frugal::gemm_into(frugal::gemm(g1, dg), g2, a, frugal::GemmOptions{.beta = 1.0});
  return cache.emplace(n, std::move(a)).first->second;
}

void set_flops(benchmark::State& state, double flops) {
  state.counters["FLOPS"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

/// 2 m n k per product, six products.
double six_gemm_flops(int64_t n) {
  const int64_t k = kRank + kOversampling;
  return 6.0 * 2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(k);
}

void BM_Gemms(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int64_t k = kRank + kOversampling;
  const Tensor& a = matrix(n);
  const frugal::ExecContext ctx = one_thread();
  frugal::ExecContext draw;
  draw.seed = 2;
  const Tensor p = frugal::rand_normal({n, k}, DType::kF32, frugal::Device::cpu(), draw);
  Tensor out = Tensor::zeros({n, k});
  for (auto _ : state) {
    for (int i = 0; i < 3; ++i) {
      frugal::gemm_into(a, p, out, {}, ctx);                                    // A P
      frugal::gemm_into(a, p, out, frugal::GemmOptions{.trans_a = true}, ctx);  // A^T P
    }
    benchmark::ClobberMemory();
  }
  set_flops(state, six_gemm_flops(n));
}

void BM_Rsvd(benchmark::State& state, frugal::lowrank::RsvdError error) {
  const int64_t n = state.range(0);
  const Tensor& a = matrix(n);
  const frugal::ExecContext ctx = one_thread();
  const frugal::lowrank::RsvdOptions opt{
      .oversampling = kOversampling, .power_iters = kPowerIters, .seed = 3, .error = error};
  double err = 0.0;
  for (auto _ : state) {
    const auto r = frugal::lowrank::randomized_svd(a, kRank, opt, ctx);
    benchmark::DoNotOptimize(r.s.data_ptr());
    err = r.relative_error;
  }
  set_flops(state, six_gemm_flops(n));  // the GEMM work it contains, for comparison
  if (error != frugal::lowrank::RsvdError::kNone) state.counters["rel_error"] = err;
}

void BM_Bdcsvd(benchmark::State& state) {
  const int64_t n = state.range(0);
  const Tensor& a = matrix(n);
  const frugal::ExecContext ctx = one_thread();
  for (auto _ : state) {
    const auto r = frugal::lowrank::svd(a, frugal::lowrank::SvdMode::kThin, ctx);
    benchmark::DoNotOptimize(r.s.data_ptr());
  }
}

BENCHMARK(BM_Gemms)
    ->Name("lowrank/gemms")
    ->Arg(2048)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);
BENCHMARK_CAPTURE(BM_Rsvd, no_error, frugal::lowrank::RsvdError::kNone)
    ->Name("lowrank/rsvd")
    ->Arg(2048)
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);
BENCHMARK_CAPTURE(BM_Rsvd, auto_error, frugal::lowrank::RsvdError::kAuto)
    ->Name("lowrank/rsvd_with_error")
    ->Arg(4096)
    ->Unit(benchmark::kMillisecond)
    ->MinTime(2.0);
// Full SVD: seconds to minutes; one iteration. 4096 is the size, 2048 a quicker proxy.
BENCHMARK(BM_Bdcsvd)
    ->Name("lowrank/bdcsvd")
    ->Arg(2048)
    ->Arg(4096)
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond);

}  // namespace
