// The bf16 convolution of nn::Conv2d under autocast on the CPU, through oneDNN's convolution
// primitives (forward, backward data, backward weights) with bf16 operands and f32 results:
// src, weights and diff_dst bf16; dst, diff_src and diff_weights f32; fp32 accumulation
// (vdpbf16ps on AVX-512 BF16: the products of bf16 values are exact in fp32).
//
// - Layouts: the primitives are created with format_tag::any, so oneDNN picks its blocked layouts
//   (nChw16c / OIhw16i16o, the jit_bf16 direct kernels); the plain NCHW tensors are reordered in
//   and out. Measured on this VM (one OpenMP thread, fwd + bwd data + bwd weights, N 32, 64 -> 64
//   channels, 32x32, 3x3): 115 ms blocked with reorders, 243 ms with plain NCHW tags (oneDNN then
//   runs its im2col + bf16 GEMM convolution, the same work as an im2col + amp::gemm path), 266 ms
//   for oneDNN's own f32 blocked convolution.
// - The weight gradient accumulates (dw +=, as the fp32 backend): the primitive writes a temporary
//   in its layout and a reorder with a sum post-op adds it into dw.
// - Threads: as amp::low_gemm_into, a pass below 2^28 flops runs on the calling thread (Debian's
//   oneDNN runs on OpenMP, whose spinning threads compete with the oneTBB workers of the
//   surrounding ops); larger passes use ctx.num_threads, applied to OpenMP before the primitive
//   is created (oneDNN fixes a primitive's threading at creation). Primitives and reorders are
//   cached per (pass, geometry, bias, thread count).
#include <array>
#include <oneapi/dnnl/dnnl.hpp>

#include "core/dnnl_util.hpp"
#include "nn/cpu/conv_low.hpp"

namespace frugal::cpu {
namespace {

using detail::Conv2dGeometry;
using dt = dnnl::memory::data_type;
using tag = dnnl::memory::format_tag;
using Dims = dnnl::memory::dims;

enum Pass : int64_t { kForward = 0, kBackwardData = 1, kBackwardFilter = 2 };

/// (pass, n, c_in, h, w, c_out, kh, kw, strides, paddings, dilations, groups, bias, threads)
using Key = std::array<int64_t, 18>;

/// One pass: the convolution primitive, the layouts it wants for its two inputs and its output,
/// and the reorders from / to the plain user layouts (need_* false: the user memory is used as is).
struct Plan {
  dnnl::primitive conv;
  dnnl::memory::desc user0, user1, user_out;  // the plain layouts of the caller's tensors
  dnnl::memory::desc in0, in1, out;
  dnnl::primitive r_in0, r_in1, r_out;
  bool need_in0 = false, need_in1 = false, need_out = false;
};

detail::DnnlPrimitiveCache<Key, Plan>& cache() {
  static auto* c = new detail::DnnlPrimitiveCache<Key, Plan>();  // used until exit
  return *c;
}

/// Flops of one pass (all three passes have the same count).
int64_t flops(const Conv2dGeometry& g) {
  return 2 * g.n * g.c_out * g.oh * g.ow * g.c_in_per_group() * g.kh * g.kw;
}

int threads_for(const Conv2dGeometry& g, const ExecContext& ctx) {
  return flops(g) < (int64_t{1} << 28) ? 1 : ctx.num_threads;
}

Key key_of(Pass pass, const Conv2dGeometry& g, bool bias, int threads) {
  return {pass,    g.n,     g.c_in,     g.h,          g.w,     g.c_out,
          g.kh,    g.kw,    g.stride_h, g.stride_w,   g.pad_h, g.pad_w,
          g.dil_h, g.dil_w, g.groups,   bias ? 1 : 0, threads};
}

dnnl::memory::desc act_desc(int64_t n, int64_t c, int64_t h, int64_t w, dt type, tag t) {
  return dnnl::memory::desc(Dims{n, c, h, w}, type, t);
}

/// The weight (C_out, C_in / groups, kh, kw); with groups, oneDNN's (G, C_out / G, C_in / G, kh,
/// kw), the same memory.
dnnl::memory::desc weight_desc(const Conv2dGeometry& g, dt type, bool plain) {
  if (g.groups == 1) {
    return dnnl::memory::desc(Dims{g.c_out, g.c_in, g.kh, g.kw}, type,
                              plain ? tag::oihw : tag::any);
  }
  return dnnl::memory::desc(Dims{g.groups, g.c_out_per_group(), g.c_in_per_group(), g.kh, g.kw},
                            type, plain ? tag::goihw : tag::any);
}

struct ConvDims {
  Dims strides, dilates, pad_l, pad_r;
};

ConvDims conv_dims(const Conv2dGeometry& g) {
  // oneDNN counts dilation from 0; the right padding is the one that makes the output extent
  // exact (as PyTorch passes it): pad_l - stride < pad_r <= pad_l.
  const int64_t ekh = g.dil_h * (g.kh - 1) + 1, ekw = g.dil_w * (g.kw - 1) + 1;
  return {Dims{g.stride_h, g.stride_w}, Dims{g.dil_h - 1, g.dil_w - 1}, Dims{g.pad_h, g.pad_w},
          Dims{(g.oh - 1) * g.stride_h + ekh - g.h - g.pad_h,
               (g.ow - 1) * g.stride_w + ekw - g.w - g.pad_w}};
}

dnnl::convolution_forward::primitive_desc forward_pd(const Conv2dGeometry& g, bool bias) {
  const ConvDims d = conv_dims(g);
  const auto x = act_desc(g.n, g.c_in, g.h, g.w, dt::bf16, tag::any);
  const auto y = act_desc(g.n, g.c_out, g.oh, g.ow, dt::f32, tag::any);
  const auto w = weight_desc(g, dt::bf16, false);
  const auto& eng = detail::dnnl_cpu_engine();
  if (bias) {
    const dnnl::memory::desc b(Dims{g.c_out}, dt::f32, tag::x);
    return {{dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x, w, b, y,
             d.strides, d.dilates, d.pad_l, d.pad_r},
            eng};
  }
  return {{dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, x, w, y,
           d.strides, d.dilates, d.pad_l, d.pad_r},
          eng};
}

/// The reorder from layout `from` to `to`; with `sum` it adds into its destination.
dnnl::primitive make_reorder(const dnnl::memory::desc& from, const dnnl::memory::desc& to,
                             bool sum = false) {
  const auto& eng = detail::dnnl_cpu_engine();
  dnnl::primitive_attr attr;
  if (sum) {
    dnnl::post_ops po;
    po.append_sum(1.f);
    attr.set_post_ops(po);
  }
  return dnnl::reorder(dnnl::reorder::primitive_desc(eng, from, eng, to, attr));
}

/// The plan of `pass` for geometry g, created on first use (under ctx's OpenMP thread count).
Plan plan_for(Pass pass, const Conv2dGeometry& g, bool bias, int threads) {
  return cache().get(key_of(pass, g, bias, threads), [&] {
    const ConvDims d = conv_dims(g);
    const auto fwd = forward_pd(g, pass == kForward && bias);
    const auto x_user = act_desc(g.n, g.c_in, g.h, g.w, dt::bf16, tag::nchw);
    const auto y_user = act_desc(g.n, g.c_out, g.oh, g.ow, dt::f32, tag::nchw);
    const auto dy_user = act_desc(g.n, g.c_out, g.oh, g.ow, dt::bf16, tag::nchw);
    const auto dx_user = act_desc(g.n, g.c_in, g.h, g.w, dt::f32, tag::nchw);
    const auto w_user = weight_desc(g, dt::bf16, true);
    const auto dw_user = weight_desc(g, dt::f32, true);
    const auto& eng = detail::dnnl_cpu_engine();
    Plan p;
    dnnl::memory::desc& u0 = p.user0;
    dnnl::memory::desc& u1 = p.user1;
    dnnl::memory::desc& uo = p.user_out;
    switch (pass) {
      case kForward:
        p.conv = dnnl::convolution_forward(fwd);
        p.in0 = fwd.src_desc(), p.in1 = fwd.weights_desc(), p.out = fwd.dst_desc();
        u0 = x_user, u1 = w_user, uo = y_user;
        break;
      case kBackwardData: {
        const dnnl::convolution_backward_data::primitive_desc pd(
            {dnnl::algorithm::convolution_direct,
             act_desc(g.n, g.c_in, g.h, g.w, dt::f32, tag::any), weight_desc(g, dt::bf16, false),
             act_desc(g.n, g.c_out, g.oh, g.ow, dt::bf16, tag::any), d.strides, d.dilates, d.pad_l,
             d.pad_r},
            eng, fwd);
        p.conv = dnnl::convolution_backward_data(pd);
        p.in0 = pd.diff_dst_desc(), p.in1 = pd.weights_desc(), p.out = pd.diff_src_desc();
        u0 = dy_user, u1 = w_user, uo = dx_user;
        break;
      }
      case kBackwardFilter: {
        const dnnl::convolution_backward_weights::primitive_desc pd(
            {dnnl::algorithm::convolution_direct,
             act_desc(g.n, g.c_in, g.h, g.w, dt::bf16, tag::any), weight_desc(g, dt::f32, false),
             act_desc(g.n, g.c_out, g.oh, g.ow, dt::bf16, tag::any), d.strides, d.dilates, d.pad_l,
             d.pad_r},
            eng, fwd);
        p.conv = dnnl::convolution_backward_weights(pd);
        p.in0 = pd.diff_dst_desc(), p.in1 = pd.src_desc(), p.out = pd.diff_weights_desc();
        u0 = dy_user, u1 = x_user, uo = dw_user;
        break;
      }
    }
    p.need_in0 = p.in0 != u0;
    p.need_in1 = p.in1 != u1;
    // The weight gradient always goes through a temporary: the reorder adds it into dw.
    p.need_out = pass == kBackwardFilter || p.out != uo;
    if (p.need_in0) p.r_in0 = make_reorder(u0, p.in0);
    if (p.need_in1) p.r_in1 = make_reorder(u1, p.in1);
    if (p.need_out) p.r_out = make_reorder(p.out, uo, pass == kBackwardFilter);
    return p;
  });
}

/// Runs one pass: in0 / in1 (plain bf16) reordered into the plan's layouts, the primitive, its
/// output reordered (or, for the weight gradient, added) into `out` (plain f32).
void run(Pass pass, const void* in0, const void* in1, const void* bias, void* out,
         const Conv2dGeometry& g, const ExecContext& ctx) {
  const int threads = threads_for(g, ctx);
  detail::OmpThreads omp(threads);
  detail::with_dnnl_errors("conv2d", [&] {
    const Plan p = plan_for(pass, g, bias != nullptr, threads);
    const auto& eng = detail::dnnl_cpu_engine();
    dnnl::memory m0(p.user0, eng, const_cast<void*>(in0));
    dnnl::memory m1(p.user1, eng, const_cast<void*>(in1));
    dnnl::memory mo(p.user_out, eng, out);
    dnnl::stream strm(eng);
    if (p.need_in0) {
      dnnl::memory t(p.in0, eng);
      p.r_in0.execute(strm, {{DNNL_ARG_FROM, m0}, {DNNL_ARG_TO, t}});
      m0 = t;
    }
    if (p.need_in1) {
      dnnl::memory t(p.in1, eng);
      p.r_in1.execute(strm, {{DNNL_ARG_FROM, m1}, {DNNL_ARG_TO, t}});
      m1 = t;
    }
    dnnl::memory mc = p.need_out ? dnnl::memory(p.out, eng) : mo;
    switch (pass) {
      case kForward: {
        std::unordered_map<int, dnnl::memory> args{
            {DNNL_ARG_SRC, m0}, {DNNL_ARG_WEIGHTS, m1}, {DNNL_ARG_DST, mc}};
        if (bias != nullptr) {
          args.emplace(DNNL_ARG_BIAS,
                       dnnl::memory(dnnl::memory::desc(Dims{g.c_out}, dt::f32, tag::x), eng,
                                    const_cast<void*>(bias)));
        }
        p.conv.execute(strm, args);
        break;
      }
      case kBackwardData:
        p.conv.execute(strm,
                       {{DNNL_ARG_DIFF_DST, m0}, {DNNL_ARG_WEIGHTS, m1}, {DNNL_ARG_DIFF_SRC, mc}});
        break;
      case kBackwardFilter:
        p.conv.execute(strm,
                       {{DNNL_ARG_DIFF_DST, m0}, {DNNL_ARG_SRC, m1}, {DNNL_ARG_DIFF_WEIGHTS, mc}});
        break;
    }
    if (p.need_out) p.r_out.execute(strm, {{DNNL_ARG_FROM, mc}, {DNNL_ARG_TO, mo}});
    strm.wait();
  });
}

}  // namespace

void conv2d_forward_bf16(ConstTensorView x, ConstTensorView w, ConstTensorView bias, TensorView y,
                         const Conv2dGeometry& g, const ExecContext& ctx) {
  run(kForward, x.data, w.data, bias.data, y.data, g, ctx);
}

void conv2d_backward_data_bf16(ConstTensorView dy, ConstTensorView w, TensorView dx,
                               const Conv2dGeometry& g, const ExecContext& ctx) {
  run(kBackwardData, dy.data, w.data, nullptr, dx.data, g, ctx);
}

void conv2d_backward_filter_bf16(ConstTensorView dy, ConstTensorView x, TensorView dw,
                                 const Conv2dGeometry& g, const ExecContext& ctx) {
  run(kBackwardFilter, dy.data, x.data, nullptr, dw.data, g, ctx);
}

}  // namespace frugal::cpu
