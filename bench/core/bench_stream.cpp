// STREAM copy and triad (McCalpin, "Memory bandwidth and machine balance", 1995) on float arrays
// of 64M elements (256 MB each, far beyond any cache), on 1 and 2 threads. Byte counts follow the
// STREAM convention (copy: 2 arrays, triad: 3 arrays per pass; write-allocate traffic is not
// counted), so the results read as GB/s and are the memory-bandwidth limit every other benchmark
// of frugal is read against.
#include <benchmark/benchmark.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>

#include "frugal/core/memory.hpp"

namespace {

constexpr int64_t kStreamElements = int64_t{64} << 20;  // 64M floats = 256 MB per array

/// One 64-byte aligned float array from frugal's host allocator (huge pages when available).
class HostArray {
 public:
  explicit HostArray(int64_t n)
      : n_(n), data_(static_cast<float*>(frugal::host_allocate(bytes()))) {}
  HostArray(const HostArray&) = delete;
  HostArray& operator=(const HostArray&) = delete;
  ~HostArray() { frugal::host_free(data_, bytes()); }
  float* data() const { return data_; }
  std::size_t bytes() const { return static_cast<std::size_t>(n_) * sizeof(float); }

 private:
  int64_t n_;
  float* data_;
};

/// The three STREAM arrays, allocated and touched once for the whole run.
struct StreamArrays {
  HostArray a{kStreamElements}, b{kStreamElements}, c{kStreamElements};
  StreamArrays() {
    // Touch every page (in parallel, the same static split the kernels use) before any timing.
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, kStreamElements),
        [&](const tbb::blocked_range<int64_t>& r) {
          for (int64_t i = r.begin(); i < r.end(); ++i) {
            a.data()[i] = 1.f;
            b.data()[i] = 2.f;
            c.data()[i] = 0.f;
          }
        },
        tbb::static_partitioner());
  }
  static StreamArrays& get() {
    static StreamArrays arrays;
    return arrays;
  }
};

tbb::task_arena& arena_of(int threads) {
  static std::map<int, std::unique_ptr<tbb::task_arena>> arenas;
  auto& slot = arenas[threads];
  if (!slot) slot = std::make_unique<tbb::task_arena>(threads);
  return *slot;
}

/// Runs body(begin, end) over [0, n) split statically into one contiguous chunk per thread.
template <class Body>
void static_for(tbb::task_arena& arena, int threads, int64_t n, Body body) {
  arena.execute([&] {
    tbb::parallel_for(
        tbb::blocked_range<int64_t>(0, n, (n + threads - 1) / threads),
        [&](const tbb::blocked_range<int64_t>& r) { body(r.begin(), r.end()); },
        tbb::static_partitioner());
  });
}

void BM_StreamCopy(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  StreamArrays& s = StreamArrays::get();
  float* __restrict a = s.a.data();
  const float* __restrict b = s.b.data();
  tbb::task_arena& arena = arena_of(threads);
  for (auto _ : state) {
    static_for(arena, threads, kStreamElements, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) a[i] = b[i];
    });
    benchmark::DoNotOptimize(a);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 2 * kStreamElements * int64_t{sizeof(float)});
}

void BM_StreamTriad(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  StreamArrays& s = StreamArrays::get();
  float* __restrict a = s.a.data();
  const float* __restrict b = s.b.data();
  const float* __restrict c = s.c.data();
  const float scalar = 3.f;
  tbb::task_arena& arena = arena_of(threads);
  for (auto _ : state) {
    static_for(arena, threads, kStreamElements, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) a[i] = b[i] + scalar * c[i];
    });
    benchmark::DoNotOptimize(a);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * 3 * kStreamElements * int64_t{sizeof(float)});
}

// Wall-clock time: the worker threads' CPU time is not the main thread's.
BENCHMARK(BM_StreamCopy)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_StreamTriad)
    ->ArgName("threads")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
