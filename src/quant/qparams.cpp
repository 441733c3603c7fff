// compute_qparams: the min-max rule of PyTorch's UniformQuantizationObserverBase._calculate_qparams
// (torch/ao/quantization/observer.py), evaluated in float as torch does on float32 tensors.
#include "frugal/quant/qparams.hpp"

#include <cmath>
#include <limits>
#include <vector>

#include "quant/quant_internal.hpp"

namespace frugal::quant {
namespace detail {

QParams compute_qparams_checked(const char* op, ConstTensorView min, ConstTensorView max,
                                const QuantSpec& spec, const ExecContext& ctx) {
  check_spec(op, spec);
  auto is_float = [](DType t) {
    return t == DType::kF32 || t == DType::kF64 || t == DType::kF16 || t == DType::kBF16;
  };
  FRUGAL_REQUIRE(is_float(min.dtype) && is_float(max.dtype), op, "min / max have dtypes ",
                 dtype_name(min.dtype), " / ", dtype_name(max.dtype),
                 "; expected f32, f64, f16 or bf16");
  FRUGAL_REQUIRE(min.shape == max.shape, op, "min has shape ", min.shape, " but max has shape ",
                 max.shape);
  FRUGAL_REQUIRE(min.device == max.device, op, "min is on ", min.device.str(), " but max is on ",
                 max.device.str());
  FRUGAL_REQUIRE(min.numel() > 0, op, "min / max are empty (shape ", min.shape, ")");
  FRUGAL_REQUIRE(min.data != nullptr && max.data != nullptr, op, "min / max have null data");

  Tensor hmin = Tensor::empty(min.shape, DType::kF32);
  Tensor hmax = Tensor::empty(max.shape, DType::kF32);
  hmin.copy_from(min, ctx);
  hmax.copy_from(max, ctx);
  const std::vector<float> lo = hmin.to_vector<float>();
  const std::vector<float> hi = hmax.to_vector<float>();

  const int64_t qmin = spec.qmin(), qmax = spec.qmax();
  constexpr float kEps = std::numeric_limits<float>::epsilon();  // torch.finfo(float32).eps
  std::vector<float> scale(lo.size());
  std::vector<int32_t> zp(lo.size());
  for (std::size_t k = 0; k < lo.size(); ++k) {
    FRUGAL_REQUIRE(std::isfinite(lo[k]) && std::isfinite(hi[k]), op, "range [", lo[k], ", ", hi[k],
                   "] at index ", k, " is not finite (NaN or Inf in the data?)");
    FRUGAL_REQUIRE(lo[k] <= hi[k], op, "min ", lo[k], " > max ", hi[k], " at index ", k);
    const float min_neg = std::min(lo[k], 0.0f);
    const float max_pos = std::max(hi[k], 0.0f);
    float s;
    int64_t z;
    if (spec.symmetric) {
      const float amax = std::max(-min_neg, max_pos);
      s = amax / static_cast<float>(static_cast<double>(qmax - qmin) / 2.0);
      s = std::max(s, kEps);
      z = spec.is_signed ? 0 : (int64_t{1} << (spec.bits - 1));
    } else {
      s = (max_pos - min_neg) / static_cast<float>(qmax - qmin);
      s = std::max(s, kEps);
      z = qmin - static_cast<int64_t>(std::rint(min_neg / s));
      z = std::clamp(z, qmin, qmax);
    }
    FRUGAL_REQUIRE(std::isfinite(s), op, "range [", lo[k], ", ", hi[k], "] at index ", k,
                   " overflows the scale");
    scale[k] = s;
    zp[k] = static_cast<int32_t>(z);
  }
  QParams out;
  out.scale = Tensor::from_vector(scale, min.shape).to(min.device, ctx);
  out.zero_point = Tensor::from_vector(zp, min.shape).to(min.device, ctx);
  return out;
}

}  // namespace detail

QParams compute_qparams(ConstTensorView min, ConstTensorView max, const QuantSpec& spec,
                        const ExecContext& ctx) {
  return detail::compute_qparams_checked("compute_qparams", min, max, spec, ctx);
}

}  // namespace frugal::quant
