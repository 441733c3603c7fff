#pragma once
// Backend contract of the quantized GEMMs (include/frugal/quant/qgemm.hpp). Internal header,
// usable from host code and from .cu files. Inputs are validated and contiguous; a (M, K) is i8
// or u8, b (N, K) i8, acc (M, N) i32.
#include <math.h>

#include <cstdint>
#include <vector>

#include "frugal/core/config.hpp"
#include "frugal/core/tensor.hpp"

namespace frugal::detail {

/// The activations a (count elements, i8 or u8) as u8, which the CPU int8 kernels (oneDNN's
/// u8s8s32 and the portable one) take: u8 as it is; i8 + 128 (the xor of the sign bit) copied into
/// `buffer`, so the caller adds 128 to the zero point. Host only.
inline const uint8_t* activations_as_u8(ConstTensorView a, std::vector<uint8_t>& buffer) {
  const uint8_t* p = a.data_as<uint8_t>();
  if (a.dtype != DType::kI8) return p;
  const int64_t count = a.numel();
  buffer.resize(static_cast<std::size_t>(count));
  for (int64_t i = 0; i < count; ++i) buffer[i] = static_cast<uint8_t>(p[i] ^ 0x80u);
  return buffer.data();
}

// Float epilogue with every rounding spelled out (no contraction into fma on any backend), so
// that ref, CPU and CUDA produce identical values and codes. The host build uses -march=native,
// where GCC contracts a * b + c into an fma; an empty asm that takes the product in a register
// makes it a value of its own (costs nothing), elsewhere a volatile round trip does.
FRUGAL_INLINE void qgemm_keep(float& r) {
#if defined(__CUDA_ARCH__)
  (void)r;
#elif defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(r));
#else
  volatile float v = r;
  r = v;
#endif
}

FRUGAL_INLINE float qgemm_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  float r = a * b;
  qgemm_keep(r);
  return r;
#endif
}
FRUGAL_INLINE float qgemm_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
FRUGAL_INLINE float qgemm_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

/// y = float(acc) * (a_scale * b_scale) + bias.
FRUGAL_INLINE float qgemm_dequant(int32_t acc, float a_scale, float b_scale, float bias) {
  return qgemm_add(qgemm_mul(static_cast<float>(acc), qgemm_mul(a_scale, b_scale)), bias);
}

/// clamp(rint(y / out_scale) + zp, lo, hi), rint half to even (the default rounding mode).
FRUGAL_INLINE int32_t qgemm_requant(float y, float out_scale, int32_t zp, int32_t lo, int32_t hi) {
  const float r = rintf(qgemm_div(y, out_scale));
  // Clamp in float first: r may exceed the int32 range.
  const float c =
      fminf(fmaxf(r + static_cast<float>(zp), static_cast<float>(lo)), static_cast<float>(hi));
  return static_cast<int32_t>(c);
}

}  // namespace frugal::detail

namespace frugal::cpu {

/// c (M, N) i32 = (a - a_zero_point) b^T with the own blocked kernel.
void qgemm_s32_portable(ConstTensorView a, int32_t a_zero_point, ConstTensorView b, TensorView c,
                        const ExecContext& ctx);
/// Same through oneDNN's matmul (src/quant/cpu/qgemm_dnnl.cpp, only with FRUGAL_HAS_DNNL).
void qgemm_s32_dnnl(ConstTensorView a, int32_t a_zero_point, ConstTensorView b, TensorView c,
                    const ExecContext& ctx);
/// out (M, N) f32 / i8 / u8 from acc, see qgemm.hpp; bias with null data means none.
void qgemm_epilogue(ConstTensorView acc, float a_scale, ConstTensorView b_scale,
                    ConstTensorView bias, float out_scale, int32_t out_zero_point, TensorView out,
                    const ExecContext& ctx);
/// y (M, N) = x (M, K) . dequant(w (N, K) i4 / i8, scale (N, K / group_size))^T.
void woq_matmul(ConstTensorView x, ConstTensorView w, ConstTensorView scale, int64_t group_size,
                TensorView y, const ExecContext& ctx);

}  // namespace frugal::cpu
