// Validation and device dispatch of the core ops (include/frugal/core/ops.hpp). Backends receive
// contiguous inputs and outputs (GEMM operands: a unit inner stride), see core/ops_internal.hpp.
#include "frugal/core/ops.hpp"

#include <algorithm>
#include <limits>
#include <utility>

#include "core/copy.hpp"
#include "core/ops_internal.hpp"
#include "cu_ops.hpp"

namespace frugal {
namespace {

using detail::BinaryOp;
using detail::ReduceKind;

bool is_compute_float(DType t) {
  return t == DType::kF32 || t == DType::kF64 || t == DType::kF16 || t == DType::kBF16;
}

void check_float(const char* op, ConstTensorView x, const char* name) {
  FRUGAL_REQUIRE(is_compute_float(x.dtype), op, name, " has dtype ", dtype_name(x.dtype),
                 "; expected f32, f64, f16 or bf16");
  FRUGAL_REQUIRE(x.data != nullptr || x.numel() == 0, op, name, " has null data");
}

/// a and b agree in shape, dtype and device.
void check_same(const char* op, ConstTensorView a, const char* an, ConstTensorView b,
                const char* bn) {
  FRUGAL_REQUIRE(a.device == b.device, op, an, " is on ", a.device.str(), " but ", bn, " is on ",
                 b.device.str());
  FRUGAL_REQUIRE(a.dtype == b.dtype, op, an, " has dtype ", dtype_name(a.dtype), " but ", bn,
                 " has dtype ", dtype_name(b.dtype));
  FRUGAL_REQUIRE(a.shape == b.shape, op, an, " has shape ", a.shape, " but ", bn, " has shape ",
                 b.shape);
}

/// `v` itself when contiguous, otherwise a contiguous copy kept alive by `holder`.
ConstTensorView contiguous_view(ConstTensorView v, Tensor& holder, const ExecContext& ctx) {
  if (v.is_contiguous()) return v;
  holder = Tensor::empty(v.shape, v.dtype, v.device, ctx);
  detail::copy(v, holder.view(), ctx);
  return holder.cview();
}

int normalize_axis(const char* op, int axis, int rank) {
  const int a = axis < 0 ? axis + rank : axis;
  FRUGAL_REQUIRE(a >= 0 && a < rank, op, "axis ", axis, " out of range for rank ", rank);
  return a;
}

/// x seen as (outer, len, inner) around `axis`.
struct AxisSplit {
  int axis;
  int64_t outer = 1;
  int64_t len = 1;
  int64_t inner = 1;
};

AxisSplit split_axis(const char* op, const Shape& shape, int axis) {
  AxisSplit s{normalize_axis(op, axis, shape.rank())};
  for (int i = 0; i < s.axis; ++i) s.outer *= shape[i];
  s.len = shape[s.axis];
  for (int i = s.axis + 1; i < shape.rank(); ++i) s.inner *= shape[i];
  return s;
}

/// `shape` with `axis` removed, or set to `extent` when keep.
Shape reduced_shape(Shape shape, int axis, bool keep, int64_t extent = 1) {
  if (keep) {
    shape[axis] = extent;
  } else {
    shape.erase(axis);
  }
  return shape;
}

// ---- elementwise ------------------------------------------------------------------------------

Tensor binary(const char* op, BinaryOp kind, ConstTensorView a, ConstTensorView b,
              const ExecContext& ctx) {
  check_float(op, a, "a");
  check_float(op, b, "b");
  check_same(op, a, "a", b, "b");
  Tensor out = Tensor::empty(a.shape, a.dtype, a.device, ctx);
  if (out.numel() == 0) return out;
  Tensor ha, hb;
  const ConstTensorView ca = contiguous_view(a, ha, ctx);
  const ConstTensorView cb = contiguous_view(b, hb, ctx);
  switch (a.device.kind) {
    case DeviceKind::kCpu:
      cpu::binary_op(static_cast<int>(kind), ca, cb, out.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::binary_op(static_cast<int>(kind), ca, cb, out.view(), ctx);
      break;
  }
  return out;
}

// ---- reductions -------------------------------------------------------------------------------

DType sum_dtype(DType t) { return t == DType::kF64 ? DType::kF64 : DType::kF32; }

bool needs_elements(ReduceKind kind) { return kind != ReduceKind::kSum; }

DType reduce_dtype(ReduceKind kind, DType t) {
  return kind == ReduceKind::kSum || kind == ReduceKind::kMean ? sum_dtype(t) : t;
}

Tensor reduce_all(const char* op, ReduceKind kind, ConstTensorView x, const ExecContext& ctx) {
  check_float(op, x, "x");
  FRUGAL_REQUIRE(!needs_elements(kind) || x.numel() > 0, op, "empty tensor of shape ", x.shape,
                 " has no ", op);
  Tensor out = Tensor::empty(Shape{}, reduce_dtype(kind, x.dtype), x.device, ctx);
  if (x.numel() == 0) {
    out.fill(0.0, ctx);  // the empty sum
    return out;
  }
  Tensor hx;
  const ConstTensorView cx = contiguous_view(x, hx, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::reduce_all(static_cast<int>(kind), cx, out.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::reduce_all(static_cast<int>(kind), cx, out.view(), ctx);
      break;
  }
  return out;
}

Tensor reduce_axis(const char* op, ReduceKind kind, ConstTensorView x, int axis, bool keepdim,
                   const ExecContext& ctx) {
  check_float(op, x, "x");
  const AxisSplit s = split_axis(op, x.shape, axis);
  FRUGAL_REQUIRE(!needs_elements(kind) || s.len > 0, op, "axis ", axis, " of shape ", x.shape,
                 " is empty");
  Tensor out = Tensor::empty(reduced_shape(x.shape, s.axis, keepdim), reduce_dtype(kind, x.dtype),
                             x.device, ctx);
  if (out.numel() == 0) return out;
  if (s.len == 0) {
    out.fill(0.0, ctx);  // empty sums
    return out;
  }
  Tensor hx;
  const ConstTensorView cx = contiguous_view(x, hx, ctx);
  const int k = static_cast<int>(kind);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::reduce_axis(k, cx, s.outer, s.len, s.inner, out.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::reduce_axis(k, cx, s.outer, s.len, s.inner, out.view(), ctx);
      break;
  }
  return out;
}

// ---- GEMM -------------------------------------------------------------------------------------

/// Rewrites the strides of a rank-2 view so that it reads as row-major with a leading dimension
/// (strides[1] == 1, strides[0] >= max(1, cols)); false when it is not laid out that way. Strides
/// of extent-1 axes are never used, so they are set to whatever fits.
bool as_row_major(ConstTensorView& v) {
  Strides s = v.strides;
  const int64_t cols = std::max<int64_t>(1, v.shape[1]);
  if (v.shape[1] <= 1) s[1] = 1;
  if (v.shape[0] <= 1) s[0] = cols;
  if (s[1] != 1 || s[0] < cols) return false;
  v.strides = s;
  return true;
}

ConstTensorView transposed(ConstTensorView v) {
  std::swap(v.shape[0], v.shape[1]);
  std::swap(v.strides[0], v.strides[1]);
  return v;
}

/// A GEMM operand as the backends want it: row-major with a leading dimension, plus whether to
/// transpose it. A column-major view (a transpose) becomes its row-major transpose with the flag
/// flipped; anything else is copied.
struct Operand {
  ConstTensorView view;
  bool trans;
};

Operand prepare_operand(ConstTensorView v, bool trans, Tensor& holder, const ExecContext& ctx) {
  ConstTensorView rm = v;
  if (as_row_major(rm)) return {rm, trans};
  ConstTensorView cm = transposed(v);
  if (as_row_major(cm)) return {cm, !trans};
  ConstTensorView c = contiguous_view(v, holder, ctx);
  as_row_major(c);
  return {c, trans};
}

struct GemmDims {
  int64_t m, n, k;
};

GemmDims check_gemm(const char* op, ConstTensorView a, ConstTensorView b, const GemmOptions& opt) {
  FRUGAL_REQUIRE(a.rank() == 2, op, "a must have rank 2, got shape ", a.shape);
  FRUGAL_REQUIRE(b.rank() == 2, op, "b must have rank 2, got shape ", b.shape);
  check_float(op, a, "a");
  check_float(op, b, "b");
  FRUGAL_REQUIRE(a.device == b.device, op, "a is on ", a.device.str(), " but b is on ",
                 b.device.str());
  FRUGAL_REQUIRE(a.dtype == b.dtype, op, "a has dtype ", dtype_name(a.dtype), " but b has dtype ",
                 dtype_name(b.dtype));
  const GemmDims d{opt.trans_a ? a.shape[1] : a.shape[0], opt.trans_b ? b.shape[0] : b.shape[1],
                   opt.trans_a ? a.shape[0] : a.shape[1]};
  const int64_t kb = opt.trans_b ? b.shape[1] : b.shape[0];
  FRUGAL_REQUIRE(d.k == kb, op, "inner dimensions differ: op(a) is ", d.m, " x ", d.k,
                 ", op(b) is ", kb, " x ", d.n);
  return d;
}

void gemm_dispatch(ConstTensorView a, ConstTensorView b, TensorView c, const GemmOptions& opt,
                   const GemmDims& d, const ExecContext& ctx) {
  if (d.m == 0 || d.n == 0) return;
  if (d.k == 0) {
    // An empty product: C = beta * C (beta = 0 ignores C's old contents, NaN included).
    if (opt.beta == 0.0) {
      detail::fill(c, 0.0, ctx);
    } else {
      const Tensor scaled = scale(c, opt.beta, ctx);
      detail::copy(scaled.cview(), c, ctx);
    }
    return;
  }
  // C must be row-major with a leading dimension. A column-major C (a transposed view) is
  // computed as C^T = op(B)^T op(A)^T; any other layout goes through a contiguous temporary.
  ConstTensorView cv = c;
  bool swap_ab = false;
  Tensor c_tmp;
  TensorView target = c;
  if (as_row_major(cv)) {
    target.strides = cv.strides;
  } else if (ConstTensorView ct = transposed(c); as_row_major(ct)) {
    swap_ab = true;
    target.shape = ct.shape;
    target.strides = ct.strides;
  } else {
    c_tmp = Tensor::empty(c.shape, c.dtype, c.device, ctx);
    if (opt.beta != 0.0) detail::copy(c, c_tmp.view(), ctx);
    target = c_tmp.view();
  }
  Tensor ha, hb;
  Operand oa = prepare_operand(a, opt.trans_a, ha, ctx);
  Operand ob = prepare_operand(b, opt.trans_b, hb, ctx);
  if (swap_ab) {
    // (op(A) op(B))^T = op(B)^T op(A)^T: swap the operands and flip both flags.
    std::swap(oa, ob);
    oa.trans = !oa.trans;
    ob.trans = !ob.trans;
  }
  switch (a.device.kind) {
    case DeviceKind::kCpu:
      cpu::gemm(oa.view, oa.trans, ob.view, ob.trans, opt.alpha, opt.beta, target, ctx);
      break;
    case DeviceKind::kCuda:
      cu::gemm(oa.view, oa.trans, ob.view, ob.trans, opt.alpha, opt.beta, target, ctx);
      break;
  }
  if (c_tmp.defined()) detail::copy(c_tmp.cview(), c, ctx);
}

}  // namespace

// ---- public entry points ------------------------------------------------------------------------

Tensor add(ConstTensorView a, ConstTensorView b, const ExecContext& ctx) {
  return binary("add", BinaryOp::kAdd, a, b, ctx);
}

Tensor sub(ConstTensorView a, ConstTensorView b, const ExecContext& ctx) {
  return binary("sub", BinaryOp::kSub, a, b, ctx);
}

Tensor mul(ConstTensorView a, ConstTensorView b, const ExecContext& ctx) {
  return binary("mul", BinaryOp::kMul, a, b, ctx);
}

Tensor scale(ConstTensorView x, double alpha, const ExecContext& ctx) {
  check_float("scale", x, "x");
  Tensor out = Tensor::empty(x.shape, x.dtype, x.device, ctx);
  if (out.numel() == 0) return out;
  Tensor hx;
  const ConstTensorView cx = contiguous_view(x, hx, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::scale(cx, alpha, out.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::scale(cx, alpha, out.view(), ctx);
      break;
  }
  return out;
}

void axpy(double alpha, ConstTensorView x, TensorView y, const ExecContext& ctx) {
  const char* op = "axpy";
  check_float(op, x, "x");
  check_float(op, y, "y");
  check_same(op, x, "x", y, "y");
  if (y.numel() == 0) return;
  Tensor hx;
  const ConstTensorView cx = contiguous_view(x, hx, ctx);
  // A strided y is updated through a contiguous copy, then written back.
  Tensor y_tmp;
  TensorView cy = y;
  if (!y.is_contiguous()) {
    y_tmp = Tensor::empty(y.shape, y.dtype, y.device, ctx);
    detail::copy(y, y_tmp.view(), ctx);
    cy = y_tmp.view();
  }
  switch (y.device.kind) {
    case DeviceKind::kCpu:
      cpu::axpy(alpha, cx, cy, ctx);
      break;
    case DeviceKind::kCuda:
      cu::axpy(alpha, cx, cy, ctx);
      break;
  }
  if (y_tmp.defined()) detail::copy(y_tmp.cview(), y, ctx);
}

Tensor abs_max(ConstTensorView x, const ExecContext& ctx) {
  return reduce_all("abs_max", ReduceKind::kAbsMax, x, ctx);
}
Tensor min(ConstTensorView x, const ExecContext& ctx) {
  return reduce_all("min", ReduceKind::kMin, x, ctx);
}
Tensor max(ConstTensorView x, const ExecContext& ctx) {
  return reduce_all("max", ReduceKind::kMax, x, ctx);
}
Tensor sum(ConstTensorView x, const ExecContext& ctx) {
  return reduce_all("sum", ReduceKind::kSum, x, ctx);
}
Tensor mean(ConstTensorView x, const ExecContext& ctx) {
  return reduce_all("mean", ReduceKind::kMean, x, ctx);
}

Tensor abs_max(ConstTensorView x, int axis, bool keepdim, const ExecContext& ctx) {
  return reduce_axis("abs_max", ReduceKind::kAbsMax, x, axis, keepdim, ctx);
}
Tensor min(ConstTensorView x, int axis, bool keepdim, const ExecContext& ctx) {
  return reduce_axis("min", ReduceKind::kMin, x, axis, keepdim, ctx);
}
Tensor max(ConstTensorView x, int axis, bool keepdim, const ExecContext& ctx) {
  return reduce_axis("max", ReduceKind::kMax, x, axis, keepdim, ctx);
}
Tensor sum(ConstTensorView x, int axis, bool keepdim, const ExecContext& ctx) {
  return reduce_axis("sum", ReduceKind::kSum, x, axis, keepdim, ctx);
}
Tensor mean(ConstTensorView x, int axis, bool keepdim, const ExecContext& ctx) {
  return reduce_axis("mean", ReduceKind::kMean, x, axis, keepdim, ctx);
}

Tensor argmax(ConstTensorView x, int axis, bool keepdim, const ExecContext& ctx) {
  const char* op = "argmax";
  check_float(op, x, "x");
  const AxisSplit s = split_axis(op, x.shape, axis);
  FRUGAL_REQUIRE(s.len > 0, op, "axis ", axis, " of shape ", x.shape, " is empty");
  Tensor out = Tensor::empty(reduced_shape(x.shape, s.axis, keepdim), DType::kI64, x.device, ctx);
  if (out.numel() == 0) return out;
  Tensor hx;
  const ConstTensorView cx = contiguous_view(x, hx, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::argmax(cx, s.outer, s.len, s.inner, out.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::argmax(cx, s.outer, s.len, s.inner, out.view(), ctx);
      break;
  }
  return out;
}

TopK topk(ConstTensorView x, int64_t k, int axis, bool largest, const ExecContext& ctx) {
  const char* op = "topk";
  check_float(op, x, "x");
  const AxisSplit s = split_axis(op, x.shape, axis);
  FRUGAL_REQUIRE(k >= 1 && k <= s.len, op, "k = ", k, " must be in [1, ", s.len,
                 "] (length of axis ", axis, " of shape ", x.shape, ")");
  const Shape shape = reduced_shape(x.shape, s.axis, true, k);
  TopK r{Tensor::empty(shape, x.dtype, x.device, ctx),
         Tensor::empty(shape, DType::kI64, x.device, ctx)};
  if (r.values.numel() == 0) return r;
  Tensor hx;
  const ConstTensorView cx = contiguous_view(x, hx, ctx);
  switch (x.device.kind) {
    case DeviceKind::kCpu:
      cpu::topk(cx, s.outer, s.len, s.inner, k, largest, r.values.view(), r.indices.view(), ctx);
      break;
    case DeviceKind::kCuda:
      cu::topk(cx, s.outer, s.len, s.inner, k, largest, r.values.view(), r.indices.view(), ctx);
      break;
  }
  return r;
}

Tensor gemm(ConstTensorView a, ConstTensorView b, const GemmOptions& opt, const ExecContext& ctx) {
  const char* op = "gemm";
  const GemmDims d = check_gemm(op, a, b, opt);
  FRUGAL_REQUIRE(opt.beta == 0.0, op, "beta = ", opt.beta, " needs an existing C; use gemm_into");
  Tensor c = Tensor::empty({d.m, d.n}, a.dtype, a.device, ctx);
  gemm_dispatch(a, b, c.view(), opt, d, ctx);
  return c;
}

void gemm_into(ConstTensorView a, ConstTensorView b, TensorView c, const GemmOptions& opt,
               const ExecContext& ctx) {
  const char* op = "gemm_into";
  const GemmDims d = check_gemm(op, a, b, opt);
  FRUGAL_REQUIRE(c.rank() == 2 && c.shape[0] == d.m && c.shape[1] == d.n, op, "c has shape ",
                 c.shape, ", expected (", d.m, ", ", d.n, ")");
  FRUGAL_REQUIRE(c.device == a.device, op, "c is on ", c.device.str(), " but a is on ",
                 a.device.str());
  const bool low = a.dtype == DType::kF16 || a.dtype == DType::kBF16;
  FRUGAL_REQUIRE(c.dtype == a.dtype || (low && c.dtype == DType::kF32), op, "c has dtype ",
                 dtype_name(c.dtype), "; expected ", dtype_name(a.dtype), low ? " or f32" : "");
  FRUGAL_REQUIRE(c.data != nullptr || c.numel() == 0, op, "c has null data");
  gemm_dispatch(a, b, c, opt, d, ctx);
}

Tensor matmul(ConstTensorView a, ConstTensorView b, const ExecContext& ctx) {
  return gemm(a, b, GemmOptions{}, ctx);
}

}  // namespace frugal
