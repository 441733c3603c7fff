// Internal oneDNN helpers shared by the CPU backends that run oneDNN primitives
// (src/amp/cpu/gemm_dnnl.cpp, src/quant/cpu/qgemm_dnnl.cpp). Include only from *_dnnl.cpp files,
// which compile only with FRUGAL_HAS_DNNL.
#pragma once

#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "core/omp_threads.hpp"
#include "frugal/core/error.hpp"

namespace frugal::detail {

/// The process-wide oneDNN CPU engine.
inline const dnnl::engine& dnnl_cpu_engine() {
  static const dnnl::engine* e = new dnnl::engine(dnnl::engine::kind::cpu, 0);  // never destroyed
  return *e;
}

/// Thread-safe cache of oneDNN primitives, created on first use of a key (shape, layout, dtypes,
/// attributes, thread count: whatever fixes the JIT-compiled kernel). Primitives are ref-counted
/// handles, so get() returns a copy that stays valid while others use the cache.
template <class Key, class Primitive>
class DnnlPrimitiveCache {
 public:
  /// The primitive for key; make() -> Primitive creates it (under the cache's lock) if absent.
  template <class Make>
  Primitive get(const Key& key, Make&& make) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    Primitive prim = std::forward<Make>(make)();
    cache_.emplace(key, prim);
    return prim;
  }

 private:
  std::mutex mutex_;
  std::map<Key, Primitive> cache_;
};

/// Runs prim with args on a new stream of the CPU engine and waits for it.
inline void dnnl_execute(const dnnl::primitive& prim,
                         const std::unordered_map<int, dnnl::memory>& args) {
  dnnl::stream strm(dnnl_cpu_engine());
  prim.execute(strm, args);
  strm.wait();
}

/// Calls fn(); a dnnl::error it throws becomes Error(kUnsupported, "[op] oneDNN matmul failed:
/// ...").
template <class Fn>
void with_dnnl_errors(std::string_view op, Fn&& fn) {
  try {
    std::forward<Fn>(fn)();
  } catch (const dnnl::error& e) {
    fail(ErrorCode::kUnsupported, op, "oneDNN matmul failed: ", e.what());
  }
}

}  // namespace frugal::detail
