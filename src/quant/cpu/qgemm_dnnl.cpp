// int8 GEMM through oneDNN's matmul primitive (u8 x s8 -> s32, AVX-512 VNNI / AMX kernels).
// a goes in as u8 (a + 128 for i8) and the zero point is corrected per column as in the own
// kernel (src/quant/cpu/qgemm.cpp), so both CPU backends take the same inputs and give the same
// exact integers. b (N, K) row-major is oneDNN's weights (K, N) with strides {1, K} (format "ba").
// Primitives are JIT-compiled once per (shape, thread count) and cached. Debian's oneDNN runs on
// OpenMP: the thread count of ExecContext is applied through omp_set_num_threads
// (detail::OmpThreads), before the primitive is created, because oneDNN fixes a primitive's
// thread count (and blocking) at creation from omp_get_max_threads.
#include <algorithm>
#include <oneapi/dnnl/dnnl.hpp>
#include <thread>
#include <tuple>
#include <vector>

#include "core/dnnl_util.hpp"
#include "quant/qgemm_internal.hpp"

namespace frugal::cpu {
namespace {

using Key = std::tuple<int64_t, int64_t, int64_t, int>;  // (m, n, k, threads)

dnnl::matmul primitive_for(int64_t m, int64_t n, int64_t k, int threads) {
  static auto* cache = new detail::DnnlPrimitiveCache<Key, dnnl::matmul>();  // used until exit
  return cache->get({m, n, k, threads}, [&] {
    using dt = dnnl::memory::data_type;
    const dnnl::memory::desc a_md({m, k}, dt::u8, dnnl::memory::dims{k, 1});
    const dnnl::memory::desc b_md({k, n}, dt::s8, dnnl::memory::dims{1, k});
    const dnnl::memory::desc c_md({m, n}, dt::s32, dnnl::memory::dims{n, 1});
    return dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(a_md, b_md, c_md),
                                                     detail::dnnl_cpu_engine()));
  });
}

}  // namespace

void qgemm_s32_dnnl(ConstTensorView a, int32_t a_zero_point, ConstTensorView b, TensorView c,
                    const ExecContext& ctx) {
  const int64_t m = a.shape[0], k = a.shape[1], n = b.shape[0];
  const bool is_i8 = a.dtype == DType::kI8;
  std::vector<uint8_t> au;
  const uint8_t* ap = detail::activations_as_u8(a, au);
  const int8_t* bp = b.data_as<int8_t>();
  int32_t* cp = c.data_as<int32_t>();
  if (k == 0) {
    std::fill(cp, cp + m * n, 0);
    return;
  }
  detail::with_dnnl_errors("qgemm", [&] {
    // One OpenMP thread per 16M multiply-adds, up to the context's count: below that the fork /
    // join of an OpenMP region costs more than it saves (a 256 x 128 x 256 layer ran 8x slower
    // on 2 threads than on 1 on the shared 2-core VM, bench_quant BM_LinearLayer).
    const int64_t cap = ctx.num_threads > 0
                            ? ctx.num_threads
                            : std::max<int64_t>(1, std::thread::hardware_concurrency());
    const int nthreads = static_cast<int>(std::clamp<int64_t>((m * n * k) >> 24, 1, cap));
    detail::OmpThreads threads(nthreads);
    dnnl::matmul prim = primitive_for(m, n, k, nthreads);
    const dnnl::engine& eng = detail::dnnl_cpu_engine();
    using dt = dnnl::memory::data_type;
    dnnl::memory am({{m, k}, dt::u8, dnnl::memory::dims{k, 1}}, eng, const_cast<uint8_t*>(ap));
    dnnl::memory bm({{k, n}, dt::s8, dnnl::memory::dims{1, k}}, eng, const_cast<int8_t*>(bp));
    dnnl::memory cm({{m, n}, dt::s32, dnnl::memory::dims{n, 1}}, eng, cp);
    detail::dnnl_execute(prim, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  });
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
