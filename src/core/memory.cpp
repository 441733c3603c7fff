#include "frugal/core/memory.hpp"

#include <sys/mman.h>

#include <atomic>
#include <cstdlib>

#include "cu_ops.hpp"
#include "frugal/core/error.hpp"

namespace frugal {
namespace {
std::atomic<int64_t> g_host_current{0};
std::atomic<int64_t> g_host_peak{0};

void note_allocation(int64_t delta) {
  const int64_t now = g_host_current.fetch_add(delta, std::memory_order_relaxed) + delta;
  int64_t peak = g_host_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_host_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}
}  // namespace

void* host_allocate(std::size_t nbytes) {
  if (nbytes == 0) nbytes = kHostAlignment;
  // aligned_alloc wants a size that is a multiple of the alignment; huge blocks round to 2 MiB
  // so that the kernel can back them with huge pages.
  const std::size_t align = nbytes >= kHugePageThreshold ? kHugePageThreshold : kHostAlignment;
  const std::size_t rounded = (nbytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, rounded);
  if (p == nullptr) {
    detail::fail(ErrorCode::kOutOfMemory, "host_allocate", "could not allocate ", nbytes, " bytes");
  }
  if (rounded >= kHugePageThreshold) {
    madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
  }
  note_allocation(static_cast<int64_t>(rounded));
  return p;
}

void host_free(void* ptr, std::size_t nbytes) noexcept {
  if (ptr == nullptr) return;
  if (nbytes == 0) nbytes = kHostAlignment;
  const std::size_t align = nbytes >= kHugePageThreshold ? kHugePageThreshold : kHostAlignment;
  const std::size_t rounded = (nbytes + align - 1) / align * align;
  note_allocation(-static_cast<int64_t>(rounded));
  std::free(ptr);
}

int64_t host_allocated_bytes() { return g_host_current.load(std::memory_order_relaxed); }
int64_t host_peak_bytes() { return g_host_peak.load(std::memory_order_relaxed); }
void reset_host_peak() { g_host_peak.store(g_host_current.load()); }

int64_t cuda_pool_peak_bytes(int device) {
  if (cuda_device_count() == 0) return 0;
  return cu::pool_high_water_bytes(device);
}

Workspace& thread_workspace() {
  thread_local Workspace ws;
  return ws;
}

}  // namespace frugal
