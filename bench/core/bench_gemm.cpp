// fp32 GEMM throughput: frugal::gemm (Eigen row blocks over oneTBB) beside raw Eigen (one thread:
// Eigen here is built without OpenMP) and, when available, oneDNN's matmul, on square problems of
// 512, 1024 and 2048. FLOPS counts 2 M N K per product, so results read as GFLOP/s; the second
// argument is the thread count (frugal: ExecContext::num_threads; oneDNN: omp_set_num_threads).
#include <benchmark/benchmark.h>

#include <Eigen/Core>
#include <cstdint>

#include "frugal/core.hpp"

#if FRUGAL_HAS_DNNL
#include <dlfcn.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace {

constexpr int64_t kSizes[] = {512, 1024, 2048};

void set_flops(benchmark::State& state, int64_t n) {
  const double flops =
      2.0 * static_cast<double>(n) * static_cast<double>(n) * static_cast<double>(n);
  state.counters["FLOPS"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_GemmFrugal(benchmark::State& state) {
  const int64_t n = state.range(0);
  frugal::ExecContext ctx;
  ctx.num_threads = static_cast<int>(state.range(1));
  const frugal::Tensor a = frugal::Tensor::full({n, n}, 0.5);
  const frugal::Tensor b = frugal::Tensor::full({n, n}, 0.25);
  frugal::Tensor c = frugal::Tensor::zeros({n, n});
  for (auto _ : state) {
    frugal::gemm_into(a, b, c, {}, ctx);
    benchmark::DoNotOptimize(c.data_ptr());
    benchmark::ClobberMemory();
  }
  set_flops(state, n);
}

void BM_GemmEigen(benchmark::State& state) {
  const int64_t n = state.range(0);
  using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Matrix a = Matrix::Constant(n, n, 0.5f);
  const Matrix b = Matrix::Constant(n, n, 0.25f);
  Matrix c = Matrix::Zero(n, n);
  for (auto _ : state) {
    c.noalias() = a * b;
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  set_flops(state, n);
}

#if FRUGAL_HAS_DNNL
/// oneDNN here uses the OpenMP runtime; its thread count is the calling thread's OpenMP setting.
/// libgomp is loaded by libdnnl, so the setter is looked up at run time rather than linked.
void set_omp_threads(int threads) {
  using SetThreads = void (*)(int);
  if (auto* f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"))) {
    f(threads);
  }
}

void BM_GemmDnnl(benchmark::State& state) {
  const int64_t n = state.range(0);
  set_omp_threads(static_cast<int>(state.range(1)));
  using dnnl::memory;
  dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  dnnl::stream stream(engine);
  const memory::desc md({n, n}, memory::data_type::f32, memory::format_tag::ab);
  memory a(md, engine), b(md, engine), c(md, engine);
  for (int64_t i = 0; i < n * n; ++i) {
    static_cast<float*>(a.get_data_handle())[i] = 0.5f;
    static_cast<float*>(b.get_data_handle())[i] = 0.25f;
  }
  // oneDNN 2.x API: an op descriptor, then the primitive descriptor for the engine.
  const dnnl::matmul matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(md, md, md), engine));
  for (auto _ : state) {
    matmul.execute(stream, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
    stream.wait();
    benchmark::ClobberMemory();
  }
  set_flops(state, n);
}
#endif

void sizes_and_threads(benchmark::internal::Benchmark* b) {
  for (int64_t n : kSizes) {
    for (int64_t threads : {1, 2}) b->Args({n, threads});
  }
}

BENCHMARK(BM_GemmFrugal)
    ->Apply(sizes_and_threads)
    ->ArgNames({"n", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_GemmEigen)
    ->ArgName("n")
    ->Arg(512)
    ->Arg(1024)
    ->Arg(2048)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
#if FRUGAL_HAS_DNNL
BENCHMARK(BM_GemmDnnl)
    ->Apply(sizes_and_threads)
    ->ArgNames({"n", "threads"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
#endif

}  // namespace
