#pragma once
/// Readable scalar references for the quantized GEMMs (include/frugal/quant/qgemm.hpp): int64
/// accumulation for the integer product, the epilogue with the same float operations as the
/// backends (so requantized codes compare exactly), and double for the weight-only product.
/// Row-major buffers; a (M, K), b (N, K).
#include <cmath>
#include <cstdint>
#include <vector>

#include "frugal/core/packed.hpp"

namespace frugal::ref {

/// acc[m n] = sum_k (a[m k] - za) * b[n k] in int64. A is int8 or uint8 values held in int32.
inline std::vector<int64_t> qgemm_s64(const std::vector<int32_t>& a, int32_t za,
                                      const std::vector<int8_t>& b, int64_t m, int64_t n,
                                      int64_t k) {
  std::vector<int64_t> c(static_cast<size_t>(m * n), 0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      int64_t s = 0;
      for (int64_t t = 0; t < k; ++t) {
        s += (static_cast<int64_t>(a[i * k + t]) - za) * static_cast<int64_t>(b[j * k + t]);
      }
      c[i * n + j] = s;
    }
  }
  return c;
}

/// y = float(acc) * (a_scale * b_scale) + bias, each operation rounded to float (no fma).
inline float qgemm_dequant(int64_t acc, float a_scale, float b_scale, float bias) {
  volatile float mult = a_scale * b_scale;  // volatile: keep each rounding, never fused
  volatile float prod = static_cast<float>(static_cast<int32_t>(acc)) * mult;
  return prod + bias;
}

/// clamp(rint(y / out_scale) + zp, lo, hi), half to even.
inline int32_t qgemm_requantize(float y, float out_scale, int32_t zp, int32_t lo, int32_t hi) {
  const double r = std::nearbyint(static_cast<double>(y / out_scale)) + zp;
  return static_cast<int32_t>(std::fmin(std::fmax(r, lo), hi));
}

/// The f64 value of the dequantized product: sum_k (a - za) b * a_scale * b_scale + bias.
inline double qgemm_f64(int64_t acc, double a_scale, double b_scale, double bias) {
  return static_cast<double>(acc) * a_scale * b_scale + bias;
}

/// y[m n] = sum_k x[m k] * w[n k] * scale[n, k / g] in double; w holds the integer codes.
inline std::vector<double> woq_matmul(const std::vector<float>& x, const std::vector<int8_t>& w,
                                      const std::vector<float>& scale, int64_t m, int64_t n,
                                      int64_t k, int64_t g) {
  std::vector<double> y(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t t = 0; t < k; ++t) {
        s += static_cast<double>(x[i * k + t]) * w[j * k + t] * scale[j * (k / g) + t / g];
      }
      y[i * n + j] = s;
    }
  }
  return y;
}

}  // namespace frugal::ref
