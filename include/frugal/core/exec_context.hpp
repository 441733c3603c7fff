#pragma once
#include <cstdint>

namespace frugal {

/// How an op runs: which CUDA stream, how many CPU threads, which random seed. Defaulted everywhere.
struct ExecContext {
  void* stream = nullptr;  ///< cudaStream_t; nullptr is the default (legacy) stream
  int num_threads = 0;     ///< CPU threads for this op; 0 uses every core
  uint64_t seed = 0;       ///< Philox key for ops that draw random numbers
  uint64_t offset = 0;     ///< Philox counter offset, so successive calls draw fresh numbers

  /// Runs `fn` inside a oneTBB arena of `num_threads` threads (cached per thread count).
  template <class Fn>
  void run(Fn&& fn) const;
};

namespace detail {
/// Executes `fn(arg)` inside the cached task_arena for `num_threads` (0 = default arena).
void run_in_arena(int num_threads, void (*fn)(void*), void* arg);
}  // namespace detail

template <class Fn>
void ExecContext::run(Fn&& fn) const {
  detail::run_in_arena(
      num_threads, [](void* f) { (*static_cast<Fn*>(f))(); }, static_cast<void*>(&fn));
}

}  // namespace frugal
