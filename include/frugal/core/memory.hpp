#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "frugal/core/device.hpp"

namespace frugal {

/// Alignment of every host allocation (a cache line; AVX-512 loads never split).
inline constexpr std::size_t kHostAlignment = 64;
/// Host allocations at least this large are advised to use transparent huge pages.
inline constexpr std::size_t kHugePageThreshold = std::size_t{2} << 20;

/// 64-byte aligned host memory; large blocks get MADV_HUGEPAGE. Throws OutOfMemory on failure.
void* host_allocate(std::size_t nbytes);
void host_free(void* ptr, std::size_t nbytes) noexcept;

/// Bytes of host memory held by frugal allocations now, and the high-water mark.
int64_t host_allocated_bytes();
int64_t host_peak_bytes();
/// Restarts the high-water mark at the current level.
void reset_host_peak();
/// High-water mark of the CUDA stream-ordered pool of `device` (0 without CUDA).
int64_t cuda_pool_peak_bytes(int device = 0);

/// A grow-only host scratch buffer, reused across calls so large temporaries are touched once.
class Workspace {
 public:
  Workspace() = default;
  Workspace(const Workspace&) = delete;
  Workspace& operator=(const Workspace&) = delete;
  ~Workspace() { host_free(data_, capacity_); }

  /// A buffer of at least `nbytes`; contents are unspecified. Valid until the next call.
  void* get(std::size_t nbytes) {
    if (nbytes > capacity_) {
      host_free(data_, capacity_);
      data_ = nullptr;
      capacity_ = 0;
      data_ = host_allocate(nbytes);
      capacity_ = nbytes;
    }
    return data_;
  }
  template <class T>
  T* get_as(std::size_t count) {
    return static_cast<T*>(get(count * sizeof(T)));
  }
  std::size_t capacity() const { return capacity_; }

 private:
  void* data_ = nullptr;
  std::size_t capacity_ = 0;
};

/// A per-thread workspace for ops that need scratch memory (one per thread, never shared).
Workspace& thread_workspace();

}  // namespace frugal
