// int8 GEMM through oneDNN's matmul primitive (u8 x s8 -> s32, AVX-512 VNNI / AMX kernels).
// a goes in as u8 (a + 128 for i8) and the zero point is corrected per column as in the own
// kernel (src/quant/cpu/qgemm.cpp), so both CPU backends take the same inputs and give the same
// exact integers. b (N, K) row-major is oneDNN's weights (K, N) with strides {1, K} (format "ba").
// Primitives are JIT-compiled once per shape and cached. Debian's oneDNN runs on OpenMP: the
// thread count of ExecContext is applied through omp_set_num_threads, found at run time in the
// libgomp that libdnnl loads (frugal itself does not link OpenMP).
#include <dlfcn.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <thread>
#include <tuple>
#include <vector>

#include "quant/qgemm_internal.hpp"

namespace frugal::cpu {
namespace {

struct DnnlState {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  std::mutex mutex;
  std::map<std::tuple<int64_t, int64_t, int64_t>, dnnl::matmul> cache;
};

DnnlState& state() {
  static DnnlState* s = new DnnlState();  // never destroyed: used until process exit
  return *s;
}

dnnl::matmul primitive_for(int64_t m, int64_t n, int64_t k) {
  DnnlState& s = state();
  std::lock_guard<std::mutex> lock(s.mutex);
  auto it = s.cache.find({m, n, k});
  if (it != s.cache.end()) return it->second;
  using dt = dnnl::memory::data_type;
  const dnnl::memory::desc a_md({m, k}, dt::u8, dnnl::memory::dims{k, 1});
  const dnnl::memory::desc b_md({k, n}, dt::s8, dnnl::memory::dims{1, k});
  const dnnl::memory::desc c_md({m, n}, dt::s32, dnnl::memory::dims{n, 1});
  const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), s.engine);
  dnnl::matmul prim(pd);
  s.cache.emplace(std::make_tuple(m, n, k), prim);
  return prim;
}

/// Sets OpenMP's thread count for this thread's next parallel regions; restores it on exit.
class OmpThreads {
 public:
  explicit OmpThreads(int n) {
    using Set = void (*)(int);
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
  void (*set_)(int) = nullptr;
  int old_ = 0;
};

}  // namespace

void qgemm_s32_dnnl(ConstTensorView a, int32_t a_zero_point, ConstTensorView b, TensorView c,
                    const ExecContext& ctx) {
  const int64_t m = a.shape[0], k = a.shape[1], n = b.shape[0];
  const bool is_i8 = a.dtype == DType::kI8;
  std::vector<uint8_t> au;
  const uint8_t* ap = a.data_as<uint8_t>();
  if (is_i8) {
    au.resize(static_cast<size_t>(m * k));
    for (int64_t i = 0; i < m * k; ++i) au[i] = static_cast<uint8_t>(ap[i] ^ 0x80u);
    ap = au.data();
  }
  const int8_t* bp = b.data_as<int8_t>();
  int32_t* cp = c.data_as<int32_t>();
  if (k == 0) {
    std::fill(cp, cp + m * n, 0);
    return;
  }
  try {
    dnnl::matmul prim = primitive_for(m, n, k);
    DnnlState& s = state();
    using dt = dnnl::memory::data_type;
    dnnl::memory am({{m, k}, dt::u8, dnnl::memory::dims{k, 1}}, s.engine, const_cast<uint8_t*>(ap));
    dnnl::memory bm({{k, n}, dt::s8, dnnl::memory::dims{1, k}}, s.engine, const_cast<int8_t*>(bp));
    dnnl::memory cm({{m, n}, dt::s32, dnnl::memory::dims{n, 1}}, s.engine, cp);
    dnnl::stream strm(s.engine);
    // One OpenMP thread per 16M multiply-adds, up to the context's count: below that the fork /
    // join of an OpenMP region costs more than it saves (a 256 x 128 x 256 layer ran 8x slower
    // on 2 threads than on 1 on the shared 2-core VM, bench_quant BM_LinearLayer).
    const int64_t cap = ctx.num_threads > 0
                            ? ctx.num_threads
                            : std::max<int64_t>(1, std::thread::hardware_concurrency());
    OmpThreads threads(static_cast<int>(std::clamp<int64_t>((m * n * k) >> 24, 1, cap)));
    prim.execute(strm, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
    strm.wait();
  } catch (const dnnl::error& e) {
    detail::fail(ErrorCode::kUnsupported, "qgemm", "oneDNN matmul failed: ", e.what());
  }
  // Zero-point correction, as in qgemm_s32_portable.
  const int64_t z = static_cast<int64_t>(a_zero_point) + (is_i8 ? 128 : 0);
  if (z == 0) return;
  std::vector<int64_t> corr(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    int64_t sum = 0;
    for (int64_t kk = 0; kk < k; ++kk) sum += bp[j * k + kk];
    corr[j] = z * sum;
  }
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      cp[i * n + j] = static_cast<int32_t>(static_cast<int64_t>(cp[i * n + j]) - corr[j]);
    }
  }
}

}  // namespace frugal::cpu
