// Mixed-precision casts and the loss scaler's unscale-and-check on 64M elements, 1 thread, beside
// a STREAM copy of the same size in the same binary (the memory-bandwidth limit these passes are
// measured against; issue 4 asks for >= 85% of it). Bytes = bytes read + bytes written per pass.
//   amp_stream_copy[/threads:2]         a[i] = b[i], f32 (2 threads: oneTBB halves)
//   amp_cast_into/<dtype>/<rounding>[/threads:2]
//   amp_cast_amax/<dtype>[/threads:2], amp_unscale_and_check[/threads:2]
//                                       amp::cast_into f32 -> dtype, preallocated output
//   amp_cast_in_cache/<dtype>/<rounding>
//                                       the same on 32K elements (L2-resident, 1 thread):
//                                       ns_per_element of CPU time = the compute cost
//   amp_cast_amax/<dtype>               same, nearest even with the fused amax
//   amp_unscale_and_check               DynamicLossScaler::unscale_and_check (read + write f32)
// and the GEMMs at 2048^3, 1 thread, FLOPS = 2 M N K per second, beside the Eigen f32 GEMM:
//   amp_gemm_f32_eigen/2048             frugal::gemm f32 (Eigen)
//   amp_gemm/<dtype>/2048               amp::gemm, f32 output: bf16 (oneDNN bf16), f16 (decoded
//                                       to f32, oneDNN f32), f8_e4m3 (exact emulation: decoded to
//                                       bf16, oneDNN bf16); without oneDNN all decode to f32 +
//                                       Eigen
#include <benchmark/benchmark.h>
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/partitioner.h>

#include <cstdint>
#include <string>
#include <utility>

#include "frugal/amp.hpp"
#include "frugal/core/exec_context.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/core/philox.hpp"
#include "frugal/core/random.hpp"
#include "frugal/core/tensor.hpp"

namespace {

using frugal::DType;
using frugal::Tensor;

constexpr int64_t kN = int64_t{64} << 20;  // 64M elements: 256 MB of f32

frugal::ExecContext one_thread() {
  frugal::ExecContext ctx;
  ctx.num_threads = 1;
  return ctx;
}

const Tensor& source() {
  static const Tensor t = [] {
    frugal::ExecContext ctx;
    ctx.seed = 1;
    return frugal::rand_uniform({kN}, DType::kF32, frugal::Device::cpu(), ctx, -8.f, 8.f);
  }();
  return t;
}

// threads = 1: a plain loop; 2: oneTBB halves (as bench_quant's copy).
void BM_AmpStreamCopy(benchmark::State& state, int threads) {
  const Tensor& b = source();
  Tensor a = Tensor::zeros({kN});
  const float* src = b.cview().data_as<float>();
  float* dst = a.view().data_as<float>();
  frugal::ExecContext ctx;
  ctx.num_threads = threads;
  for (auto _ : state) {
    ctx.run([&] {
      tbb::parallel_for(
          tbb::blocked_range<int64_t>(0, kN, (kN + threads - 1) / threads),
          [&](const tbb::blocked_range<int64_t>& r) {
            for (int64_t i = r.begin(); i < r.end(); ++i) dst[i] = src[i];
          },
          tbb::static_partitioner());
    });
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kN * 8);
}

void run_cast(benchmark::State& state, DType to, frugal::amp::Rounding r, bool amax,
              int threads = 1) {
  const Tensor& x = source();
  Tensor out = Tensor::zeros({kN}, to);
  frugal::amp::CastOptions opt;
  opt.rounding = r;
  opt.compute_amax = amax;
  frugal::ExecContext ctx;
  ctx.num_threads = threads;
  for (auto _ : state) {
    benchmark::DoNotOptimize(frugal::amp::cast_into(x.cview(), out.view(), opt, ctx));
    ctx.offset += frugal::philox_counters(kN);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * (kN * 4 + frugal::dtype_nbytes(to, kN)));
}

// The same cast on 32K elements (128 KB in, L2-resident): the compute cost per element without
// the memory traffic, read from the thread's CPU time (stable on a loaded machine).
void run_cast_in_cache(benchmark::State& state, DType to, frugal::amp::Rounding r) {
  constexpr int64_t kSmall = int64_t{32} << 10;
  const Tensor x = source().slice(0, 0, kSmall).contiguous();
  Tensor out = Tensor::zeros({kSmall}, to);
  frugal::amp::CastOptions opt;
  opt.rounding = r;
  frugal::ExecContext ctx = one_thread();
  for (auto _ : state) {
    benchmark::DoNotOptimize(frugal::amp::cast_into(x.cview(), out.view(), opt, ctx));
    ctx.offset += frugal::philox_counters(kSmall);
    benchmark::ClobberMemory();
  }
  state.counters["ns_per_element"] = benchmark::Counter(
      static_cast<double>(kSmall),
      benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
}

void BM_AmpUnscaleAndCheck(benchmark::State& state, int threads) {
  Tensor g = source().to(DType::kF32);  // a private copy, rescaled in place every iteration
  frugal::amp::LossScalerOptions o;
  o.init_scale = 1.f;  // keeps the values unchanged across iterations
  frugal::amp::DynamicLossScaler s(o);
  frugal::ExecContext ctx;
  ctx.num_threads = threads;
  for (auto _ : state) {
    benchmark::DoNotOptimize(s.unscale_and_check({{"g", g.view()}}, ctx).found_inf);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * kN * 8);
}

constexpr int64_t kGemmN = 2048;

void BM_AmpGemmF32Eigen(benchmark::State& state) {
  const frugal::ExecContext ctx = one_thread();
  const Tensor a = frugal::rand_uniform({kGemmN, kGemmN}, DType::kF32, frugal::Device::cpu(), ctx);
  const Tensor b = frugal::rand_uniform({kGemmN, kGemmN}, DType::kF32, frugal::Device::cpu(), ctx);
  Tensor c = Tensor::zeros({kGemmN, kGemmN});
  for (auto _ : state) {
    frugal::gemm_into(a.cview(), b.cview(), c.view(), {}, ctx);
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] = benchmark::Counter(2.0 * kGemmN * kGemmN * kGemmN,
                                               benchmark::Counter::kIsIterationInvariantRate);
}

void BM_AmpGemm(benchmark::State& state, DType t) {
  const frugal::ExecContext ctx = one_thread();
  const Tensor a =
      frugal::rand_uniform({kGemmN, kGemmN}, DType::kF32, frugal::Device::cpu(), ctx).to(t);
  const Tensor b =
      frugal::rand_uniform({kGemmN, kGemmN}, DType::kF32, frugal::Device::cpu(), ctx).to(t);
  Tensor c = Tensor::zeros({kGemmN, kGemmN});
  for (auto _ : state) {
    frugal::amp::gemm_into(a.cview(), b.cview(), c.view(), {}, ctx);
    benchmark::ClobberMemory();
  }
  state.counters["FLOPS"] = benchmark::Counter(2.0 * kGemmN * kGemmN * kGemmN,
                                               benchmark::Counter::kIsIterationInvariantRate);
}

const struct {
  DType t;
  const char* name;
} kTargets[] = {{DType::kBF16, "bf16"},
                {DType::kF16, "f16"},
                {DType::kF8E4M3, "f8_e4m3"},
                {DType::kF8E5M2, "f8_e5m2"}};

// A pass over the 64M elements, timed in milliseconds of wall time (on two threads the
// benchmark's CPU time counts the main thread only).
template <class F>
void register_pass(const std::string& name, F f) {
  benchmark::RegisterBenchmark(name.c_str(), f)->Unit(benchmark::kMillisecond)->UseRealTime();
}

[[maybe_unused]] const bool registered = [] {
  using frugal::amp::Rounding;
  for (int threads : {1, 2}) {
    const std::string suffix = threads == 1 ? "" : "/threads:2";
    register_pass("amp_stream_copy" + suffix,
                  [threads](benchmark::State& s) { BM_AmpStreamCopy(s, threads); });
    for (const auto& t : kTargets) {
      for (auto [r, rname] : {std::pair{Rounding::kNearestEven, "rne"},
                              std::pair{Rounding::kStochastic, "stochastic"}}) {
        register_pass(
            std::string("amp_cast_into/") + t.name + "/" + rname + suffix,
            [t, r, threads](benchmark::State& s) { run_cast(s, t.t, r, false, threads); });
      }
      register_pass(std::string("amp_cast_amax/") + t.name + suffix,
                    [t, threads](benchmark::State& s) {
                      run_cast(s, t.t, Rounding::kNearestEven, true, threads);
                    });
    }
    register_pass("amp_unscale_and_check" + suffix,
                  [threads](benchmark::State& s) { BM_AmpUnscaleAndCheck(s, threads); });
  }
  for (const auto& t : kTargets) {
    for (auto [r, rname] : {std::pair{Rounding::kNearestEven, "rne"},
                            std::pair{Rounding::kStochastic, "stochastic"}}) {
      benchmark::RegisterBenchmark(
          (std::string("amp_cast_in_cache/") + t.name + "/" + rname).c_str(),
          [t, r](benchmark::State& s) { run_cast_in_cache(s, t.t, r); });
    }
  }
  register_pass("amp_gemm_f32_eigen/2048", BM_AmpGemmF32Eigen);
  for (const auto& t : {kTargets[0], kTargets[1], kTargets[2]}) {
    register_pass(std::string("amp_gemm/") + t.name + "/2048",
                  [t](benchmark::State& s) { BM_AmpGemm(s, t.t); });
  }
  return true;
}();

}  // namespace
