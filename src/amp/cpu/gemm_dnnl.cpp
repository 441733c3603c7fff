// amp::gemm through oneDNN's matmul primitive: bf16 x bf16 (AVX-512 BF16 / AMX kernels), f16 x
// f16, or f32 x f32 (used for f16 inputs decoded to f32), fp32 accumulation, dst f32 / bf16 / f16.
// op(A) and op(B) are expressed by strides (a transposed operand is the stored matrix read with
// swapped strides), alpha * a_scale * b_scale is a runtime output scale and beta a sum post-op.
// Primitives are JIT-compiled once per (shape, layout, dtypes, beta, thread count) and cached.
// Debian's oneDNN runs on OpenMP: ExecContext's thread count is applied through
// omp_set_num_threads (detail::OmpThreads, src/core/omp_threads.hpp). It is set before the
// primitive is created, because oneDNN fixes a primitive's thread count (and blocking) at creation
// from omp_get_max_threads.
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>

#include "amp/gemm_internal.hpp"
#include "core/dnnl_util.hpp"
#include "frugal/core/error.hpp"

namespace frugal::cpu {
namespace {

using dt = dnnl::memory::data_type;
using Dims = dnnl::memory::dims;

// (batch, m, n, k, trans_a, trans_b, a dtype, c dtype, beta, threads)
using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, bool, bool, int, int, float, int>;

detail::DnnlPrimitiveCache<Key, dnnl::matmul>& cache() {
  static auto* c = new detail::DnnlPrimitiveCache<Key, dnnl::matmul>();  // used until exit
  return *c;
}
dt dnnl_type(DType t) {
  switch (t) {
    case DType::kBF16:
      return dt::bf16;
    case DType::kF16:
      return dt::f16;
    default:
      return dt::f32;
  }
}

struct Descs {
  dnnl::memory::desc a, b, c;
};

// Memory descriptors of op(A) (M, K), op(B) (K, N), C (M, N), batched when batch > 1.
Descs descs(int64_t batch, int64_t m, int64_t n, int64_t k, bool ta, bool tb, DType in, DType out) {
  const dt ti = dnnl_type(in), to = dnnl_type(out);
  if (batch == 1) {
    return {dnnl::memory::desc({m, k}, ti, ta ? Dims{1, m} : Dims{k, 1}),
            dnnl::memory::desc({k, n}, ti, tb ? Dims{1, k} : Dims{n, 1}),
            dnnl::memory::desc({m, n}, to, Dims{n, 1})};
  }
  return {dnnl::memory::desc({batch, m, k}, ti, ta ? Dims{m * k, 1, m} : Dims{m * k, k, 1}),
          dnnl::memory::desc({batch, k, n}, ti, tb ? Dims{k * n, 1, k} : Dims{k * n, n, 1}),
          dnnl::memory::desc({batch, m, n}, to, Dims{m * n, n, 1})};
}

dnnl::matmul primitive_for(const Key& key, const Descs& d) {
  return cache().get(key, [&] {
    dnnl::primitive_attr attr;
    attr.set_output_scales(0, {DNNL_RUNTIME_F32_VAL});
    const float beta = std::get<8>(key);
    if (beta != 0.f) {
      dnnl::post_ops po;
      po.append_sum(beta);
      attr.set_post_ops(po);
    }
    const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(d.a, d.b, d.c), attr,
                                          detail::dnnl_cpu_engine());
    return dnnl::matmul(pd);
  });
}

}  // namespace

void amp_gemm_dnnl(ConstTensorView a, ConstTensorView b, TensorView c, const amp::GemmOptions& o,
                   const ExecContext& ctx) {
  const int64_t batch = c.shape[0], m = c.shape[1], n = c.shape[2];
  const int64_t k = o.trans_a ? a.shape[1] : a.shape[2];
  const Key key{batch,
                m,
                n,
                k,
                o.trans_a,
                o.trans_b,
                static_cast<int>(a.dtype),
                static_cast<int>(c.dtype),
                o.beta,
                ctx.num_threads};
  const Descs d = descs(batch, m, n, k, o.trans_a, o.trans_b, a.dtype, c.dtype);
  float scale = static_cast<float>(static_cast<double>(o.alpha) * o.a_scale * o.b_scale);
  detail::OmpThreads threads(ctx.num_threads);
  detail::with_dnnl_errors("amp::gemm", [&] {
    dnnl::matmul prim = primitive_for(key, d);
    const dnnl::engine& eng = detail::dnnl_cpu_engine();
    dnnl::memory am(d.a, eng, const_cast<void*>(a.data));
    dnnl::memory bm(d.b, eng, const_cast<void*>(b.data));
    dnnl::memory cm(d.c, eng, c.data);
    dnnl::memory sm({{1}, dt::f32, Dims{1}}, eng, &scale);
    detail::dnnl_execute(prim, {{DNNL_ARG_SRC, am},
                                {DNNL_ARG_WEIGHTS, bm},
                                {DNNL_ARG_DST, cm},
                                {DNNL_ARG_ATTR_OUTPUT_SCALES, sm}});
  });
}

}  // namespace frugal::cpu
