// Internal: scoped OpenMP thread count for code that calls into an OpenMP-parallel library
// (Debian's oneDNN runs on libgomp). frugal itself does not link OpenMP: omp_set_num_threads and
// omp_get_max_threads are looked up at run time with dlsym, and the guard does nothing when no
// OpenMP runtime is loaded.
#pragma once

#include <dlfcn.h>

namespace frugal::detail {

/// Sets OpenMP's thread count for this thread's next parallel regions to n (n <= 0: leaves it as
/// it is); restores the previous count on exit.
class OmpThreads {
 public:
  explicit OmpThreads(int n) {
    using Get = int (*)();
    set_ = reinterpret_cast<Set>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
    auto get = reinterpret_cast<Get>(dlsym(RTLD_DEFAULT, "omp_get_max_threads"));
    if (n <= 0 || set_ == nullptr || get == nullptr) {
      set_ = nullptr;
      return;
    }
    old_ = get();
    set_(n);
  }
  OmpThreads(const OmpThreads&) = delete;
  OmpThreads& operator=(const OmpThreads&) = delete;
  ~OmpThreads() {
    if (set_ != nullptr) set_(old_);
  }

 private:
  using Set = void (*)(int);
  Set set_ = nullptr;
  int old_ = 0;
};

}  // namespace frugal::detail
