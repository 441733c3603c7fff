#include "frugal/core/exec_context.hpp"

#include <tbb/task_arena.h>

#include <map>
#include <memory>
#include <mutex>

namespace frugal::detail {

void run_in_arena(int num_threads, void (*fn)(void*), void* arg) {
  if (num_threads <= 0) {
    fn(arg);
    return;
  }
  // Arenas are costly to create; keep one per requested concurrency for the process lifetime.
  static std::mutex mutex;
  static std::map<int, std::unique_ptr<tbb::task_arena>> arenas;
  tbb::task_arena* arena = nullptr;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto& slot = arenas[num_threads];
    if (!slot) slot = std::make_unique<tbb::task_arena>(num_threads);
    arena = slot.get();
  }
  arena->execute([&] { fn(arg); });
}

}  // namespace frugal::detail
