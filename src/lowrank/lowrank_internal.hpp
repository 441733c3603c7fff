#pragma once
// Backend contract of the matrix decompositions (include/frugal/lowrank/svd.hpp). Internal header.
//
// src/lowrank/svd.cpp validates, makes `a` contiguous and allocates contiguous outputs of a's
// dtype (f32 or f64) on a's device; the backends (cpu:: here, cu:: through cu_ops.def) fill them
// and return the backend status (0 = success).
//   lowrank_svd: a (m, n); s (k); with `vectors`, u (m, m) and vt (n, n) when `full`, else u (m, k)
//                and vt (k, n); without `vectors` u and vt are empty views (data == nullptr).
//   lowrank_qr:  a (m, n); q (m, k); r (k, n), k = min(m, n).
#include <cstdint>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/lowrank/svd.hpp"

namespace frugal::cpu {

int64_t lowrank_svd(ConstTensorView a, bool full, bool vectors, TensorView u, TensorView s,
                    TensorView vt, const ExecContext& ctx);
int64_t lowrank_qr(ConstTensorView a, TensorView q, TensorView r, const ExecContext& ctx);

}  // namespace frugal::cpu

namespace frugal::lowrank::detail {

/// Throws InvalidArgument "[op] ..." unless `a` is a non-empty, finite, rank-2 f32 / f64 tensor
/// (named `what` in the message).
void check_matrix(const char* op, ConstTensorView a, const char* what = "input");

/// `v` as a contiguous tensor: wrapped without a copy when already contiguous (read-only).
Tensor contiguous_of(ConstTensorView v, const ExecContext& ctx);

/// svd / singular_values / qr without validation (a: rank 2, f32 / f64, any strides).
SvdResult svd_impl(ConstTensorView a, bool full, bool vectors, const ExecContext& ctx);
QrResult qr_impl(ConstTensorView a, const ExecContext& ctx);

}  // namespace frugal::lowrank::detail
