// Pruning costs, each beside its baseline in the same run:
//   MagnitudeMask      magnitude mask of a 4096 x 4096 f32 weight at 90% (radix select), against
//   MagnitudeMaskSort  the same mask by std::sort of the magnitudes (what a selection avoids);
//   DenseGemm          Y = W X, W 4096 x 4096, X 4096 x 256, f32, frugal::gemm (Eigen), against
//   CsrSpmm            the same product with W 90% unstructured sparse (CSR), and
//   Bsr4Spmm           ... 4x4-block sparse at 90% (blocks chosen by block L1 norm), and
//   Spmm24             ... 2:4 compressed (50%);
//   MlpForward         an MLP before / after removing 50% of its hidden neurons;
//   *Cuda              the mask, cuBLAS GEMM, cuSPARSE CSR SpMM, the BSR and 2:4 kernels on GPU 0;
//   Digits*            the digits MLP / CNN of the cost report, dense against pruned (below).
// FLOPS counts the DENSE work 2 M K N for every product, so the FLOPS ratio is the speed-up.
// The argument is ExecContext::num_threads (1 = one core; 0 = every core).
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "cu_ops.hpp"
#include "frugal/core.hpp"
#include "frugal/nn.hpp"
#include "frugal/prune.hpp"

namespace {

using namespace frugal;

constexpr int64_t kM = 4096, kK = 4096, kN = 256;

Tensor weight() {
  static Tensor w = rand_uniform(Shape{kM, kK}, DType::kF32, Device::cpu(),
                                 ExecContext{nullptr, 0, 1, 0}, -1.f, 1.f);
  return w;
}
Tensor activations() {
  static Tensor x = rand_uniform(Shape{kK, kN}, DType::kF32, Device::cpu(),
                                 ExecContext{nullptr, 0, 2, 0}, -1.f, 1.f);
  return x;
}
ExecContext ctx_of(const benchmark::State& state) {
  ExecContext c;
  c.num_threads = static_cast<int>(state.range(0));
  return c;
}
void dense_flops(benchmark::State& state) {
  state.counters["FLOPS"] =
      benchmark::Counter(2.0 * kM * kK * kN, benchmark::Counter::kIsIterationInvariantRate);
}

void MagnitudeMask(benchmark::State& state) {
  Tensor w = weight();
  const ExecContext ctx = ctx_of(state);
  for (auto _ : state) benchmark::DoNotOptimize(prune::magnitude_mask(w, 0.9, ctx));
  state.SetBytesProcessed(state.iterations() * w.nbytes());
}
BENCHMARK(MagnitudeMask)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

void MagnitudeMaskSort(benchmark::State& state) {
  Tensor w = weight();
  const float* p = w.data<float>();
  const int64_t n = w.numel();
  for (auto _ : state) {
    std::vector<float> a(n);
    for (int64_t i = 0; i < n; ++i) a[i] = std::abs(p[i]);
    std::sort(a.begin(), a.end());
    const float t = a[std::llround(0.9 * n) - 1];
    std::vector<uint8_t> m(n);
    for (int64_t i = 0; i < n; ++i) m[i] = std::abs(p[i]) > t;
    benchmark::DoNotOptimize(m.data());
  }
  state.SetBytesProcessed(state.iterations() * w.nbytes());
}
BENCHMARK(MagnitudeMaskSort)->Arg(1)->Unit(benchmark::kMillisecond)->UseRealTime();

void DenseGemm(benchmark::State& state) {
  Tensor w = weight(), x = activations();
  const ExecContext ctx = ctx_of(state);
  for (auto _ : state) benchmark::DoNotOptimize(gemm(w, x, {}, ctx));
  dense_flops(state);
}
BENCHMARK(DenseGemm)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

void CsrSpmm(benchmark::State& state) {
  Tensor w = weight(), x = activations();
  const ExecContext ctx = ctx_of(state);
  prune::CsrMatrix a = prune::to_csr(w, prune::magnitude_mask(w, 0.9));
  for (auto _ : state) benchmark::DoNotOptimize(prune::spmm(a, x, ctx));
  dense_flops(state);
  state.counters["nnz"] = static_cast<double>(a.nnz());
}
BENCHMARK(CsrSpmm)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

void Bsr4Spmm(benchmark::State& state) {
  Tensor w = weight(), x = activations();
  const ExecContext ctx = ctx_of(state);
  // Block scores: L1 norm of each 4x4 block, 90% of blocks pruned.
  const int64_t MB = kM / 4, KB = kK / 4;
  std::vector<float> bs(MB * KB, 0.f);
  const float* p = w.data<float>();
  for (int64_t i = 0; i < kM; ++i) {
    for (int64_t j = 0; j < kK; ++j) bs[(i / 4) * KB + j / 4] += std::abs(p[i * kK + j]);
  }
  Tensor bm = prune::unstructured_mask(Tensor::from_vector<float>(bs, Shape{MB, KB}), 0.9);
  const uint8_t* b = bm.data<uint8_t>();
  std::vector<uint8_t> m(kM * kK);
  for (int64_t i = 0; i < kM; ++i) {
    for (int64_t j = 0; j < kK; ++j) m[i * kK + j] = b[(i / 4) * KB + j / 4];
  }
  prune::BsrMatrix a = prune::to_bsr(w, 4, 4, Tensor::from_vector<uint8_t>(m, Shape{kM, kK}));
  for (auto _ : state) benchmark::DoNotOptimize(prune::spmm(a, x, ctx));
  dense_flops(state);
}
BENCHMARK(Bsr4Spmm)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

void Spmm24(benchmark::State& state) {
  Tensor w = weight(), x = activations();
  const ExecContext ctx = ctx_of(state);
  prune::Sparse24Matrix a = prune::compress_24(w, prune::nm_mask(prune::magnitude_scores(w), 2, 4));
  for (auto _ : state) benchmark::DoNotOptimize(prune::spmm(a, x, ctx));
  dense_flops(state);
}
BENCHMARK(Spmm24)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

// ---- CUDA (GPU 0; each iteration waits for the stream): the same products against cuBLAS ----
namespace {

bool have_gpu(benchmark::State& state) {
  if (!frugal::cuda_available()) {
    state.SkipWithError("no usable CUDA device");
    return false;
  }
  return true;
}

void MagnitudeMaskCuda(benchmark::State& state) {
  if (!have_gpu(state)) return;
  Tensor w = weight().to(Device::cuda());
  const ExecContext ctx;
  for (auto _ : state) {
    benchmark::DoNotOptimize(prune::magnitude_mask(w, 0.9, ctx));
    cu::synchronize(ctx);
  }
  state.SetBytesProcessed(state.iterations() * w.nbytes());
}
BENCHMARK(MagnitudeMaskCuda)->Unit(benchmark::kMillisecond)->UseRealTime();

void DenseGemmCuda(benchmark::State& state) {
  if (!have_gpu(state)) return;
  Tensor w = weight().to(Device::cuda()), x = activations().to(Device::cuda());
  const ExecContext ctx;
  for (auto _ : state) {
    benchmark::DoNotOptimize(gemm(w, x, {}, ctx));
    cu::synchronize(ctx);
  }
  dense_flops(state);
}
BENCHMARK(DenseGemmCuda)->Unit(benchmark::kMicrosecond)->UseRealTime();

void CsrSpmmCuda(benchmark::State& state) {
  if (!have_gpu(state)) return;
  Tensor w = weight();
  prune::CsrMatrix a = prune::to_csr(w, prune::magnitude_mask(w, 0.9)).to(Device::cuda());
  Tensor x = activations().to(Device::cuda());
  const ExecContext ctx;
  for (auto _ : state) {
    benchmark::DoNotOptimize(prune::spmm(a, x, ctx));
    cu::synchronize(ctx);
  }
  dense_flops(state);
}
BENCHMARK(CsrSpmmCuda)->Unit(benchmark::kMicrosecond)->UseRealTime();

void Bsr4SpmmCuda(benchmark::State& state) {
  if (!have_gpu(state)) return;
  Tensor w = weight();
  // 4x4 blocks kept where the block's largest magnitude survives a 90% element mask: the block
  // density is then data dependent; the counter reports it.
  prune::BsrMatrix a = prune::to_bsr(w, 4, 4, prune::magnitude_mask(w, 0.99)).to(Device::cuda());
  Tensor x = activations().to(Device::cuda());
  const ExecContext ctx;
  for (auto _ : state) {
    benchmark::DoNotOptimize(prune::spmm(a, x, ctx));
    cu::synchronize(ctx);
  }
  dense_flops(state);
  state.counters["block_density"] =
      static_cast<double>(a.num_blocks()) / static_cast<double>((kM / 4) * (kK / 4));
}
BENCHMARK(Bsr4SpmmCuda)->Unit(benchmark::kMicrosecond)->UseRealTime();

void Spmm24Cuda(benchmark::State& state) {
  if (!have_gpu(state)) return;
  Tensor w = weight();
  prune::Sparse24Matrix a =
      prune::compress_24(w, prune::nm_mask(prune::magnitude_scores(w), 2, 4)).to(Device::cuda());
  Tensor x = activations().to(Device::cuda());
  const ExecContext ctx;
  for (auto _ : state) {
    benchmark::DoNotOptimize(prune::spmm(a, x, ctx));
    cu::synchronize(ctx);
  }
  dense_flops(state);
}
BENCHMARK(Spmm24Cuda)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

// ---- structured pruning: an MLP 784-512-512-10 (batch 256, f32, forward in eval mode) before
// and after physically removing 50% of the neurons of both hidden layers (L2 norm) ----
namespace {

std::shared_ptr<frugal::nn::Sequential> bench_mlp() {
  using namespace frugal::nn;
  auto m = std::make_shared<Sequential>();
  m->add(std::make_shared<Linear>(784, 512, true, 1));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Linear>(512, 512, true, 2));
  m->add(std::make_shared<ReLU>());
  m->add(std::make_shared<Linear>(512, 10, true, 3));
  m->eval();
  return m;
}

void MlpForward(benchmark::State& state) {
  auto m = bench_mlp();
  if (state.range(0) == 1) {
    m = frugal::nn::prune_structured(*m, 0, 0.5).model;
    m = frugal::nn::prune_structured(*m, 2, 0.5).model;
  }
  ExecContext ctx;
  ctx.num_threads = 1;
  m->set_context(ctx);
  Tensor x =
      rand_uniform(Shape{256, 784}, DType::kF32, Device::cpu(), ExecContext{nullptr, 0, 3, 0});
  for (auto _ : state) benchmark::DoNotOptimize(m->forward(x));
  state.counters["params"] = static_cast<double>(m->num_parameters());
}
// Arg 0: dense; 1: 50% of the hidden neurons removed.
BENCHMARK(MlpForward)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace

// ---- the digits models of the cost report (1 thread, eval mode, the 360 test digits) ----
//   DigitsMlpForward    make_mlp({64, 256, 128, 10}) dense (arg 0) against 50% of the neurons of
//                       both hidden layers removed (arg 1: 64-128-64-10);
//   DigitsMlpTrainStep  one training step (forward, cross-entropy, backward, AdamW) of a batch
//                       of 64, dense against pruned;
//   DigitsCnnForward    make_digits_cnn() dense (arg 0) against 90% of its weights pruned (global
//                       magnitude) run through SparseConv2d / SparseLinear (arg 1).
// Random weights: the time depends on the shapes and the nonzero count, not on training.
namespace {

std::shared_ptr<frugal::nn::Sequential> digits_mlp(bool pruned) {
  auto m = frugal::nn::make_mlp({64, 256, 128, 10}, 1);
  if (pruned) {
    m = frugal::nn::prune_structured(*m, 0, 0.5).model;
    m = frugal::nn::prune_structured(*m, 2, 0.5).model;
  }
  ExecContext ctx;
  ctx.num_threads = 1;
  m->set_context(ctx);
  return m;
}

ExecContext one_thread() {
  ExecContext c;
  c.num_threads = 1;
  return c;
}

void DigitsMlpForward(benchmark::State& state) {
  auto m = digits_mlp(state.range(0) == 1);
  m->eval();
  Tensor x =
      rand_uniform(Shape{360, 64}, DType::kF32, Device::cpu(), ExecContext{nullptr, 0, 4, 0});
  const ExecContext ctx = one_thread();
  for (auto _ : state) ctx.run([&] { benchmark::DoNotOptimize(m->forward(x)); });
  state.counters["params"] = static_cast<double>(m->num_parameters());
}
BENCHMARK(DigitsMlpForward)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

void DigitsMlpTrainStep(benchmark::State& state) {
  auto m = digits_mlp(state.range(0) == 1);
  frugal::nn::AdamW opt(m->named_parameters(), frugal::nn::AdamWOptions{});
  Tensor x = rand_uniform(Shape{64, 64}, DType::kF32, Device::cpu(), ExecContext{nullptr, 0, 5, 0});
  std::vector<int64_t> lv(64);
  for (int i = 0; i < 64; ++i) lv[i] = i % 10;
  Tensor labels = Tensor::from_vector<int64_t>(lv, Shape{64});
  frugal::nn::SoftmaxCrossEntropy loss;
  const ExecContext ctx = one_thread();
  for (auto _ : state) {
    ctx.run([&] {
      m->zero_grad(ctx);
      benchmark::DoNotOptimize(loss.forward(m->forward(x), labels));
      m->backward(loss.backward());
      opt.step(ctx);
    });
  }
}
BENCHMARK(DigitsMlpTrainStep)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

void DigitsCnnForward(benchmark::State& state) {
  auto m = frugal::nn::make_digits_cnn();
  m->set_context(one_thread());
  m->eval();
  std::shared_ptr<frugal::nn::Module> run = m;
  if (state.range(0) == 1) {
    frugal::nn::Pruner pr(*m);
    pr.prune_magnitude(0.9, frugal::nn::PruneScope::kGlobal);
    run = frugal::nn::sparse_inference_model(*m, &pr);
  }
  Tensor x =
      rand_uniform(Shape{360, 1, 8, 8}, DType::kF32, Device::cpu(), ExecContext{nullptr, 0, 6, 0});
  const ExecContext ctx = one_thread();
  for (auto _ : state) ctx.run([&] { benchmark::DoNotOptimize(run->forward(x)); });
}
BENCHMARK(DigitsCnnForward)->Arg(0)->Arg(1)->Unit(benchmark::kMicrosecond)->UseRealTime();

}  // namespace
