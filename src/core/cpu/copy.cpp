#include <tbb/parallel_for.h>

#include <cstring>
#include <vector>

#include "core/convert.hpp"
#include "core/copy.hpp"
#include "core/dtype_dispatch.hpp"
#include "frugal/core/packed.hpp"

namespace frugal::cpu {
namespace {

// Elements per task: large enough that task overhead is small next to ~1 ns per element.
constexpr int64_t kGrain = 1 << 15;

/// Offset (in elements) of the element with row-major linear index `i`.
inline int64_t strided_offset(int64_t i, const Shape& shape, const Strides& strides) {
  int64_t off = 0;
  for (int d = shape.rank() - 1; d >= 0; --d) {
    const int64_t n = shape[d];
    off += (i % n) * strides[d];
    i /= n;
  }
  return off;
}

template <class S, class D>
void copy_typed(ConstTensorView src, TensorView dst, const ExecContext& ctx) {
  const S* s = src.data_as<S>();
  D* d = dst.data_as<D>();
  const int64_t n = src.numel();
  const bool contiguous = src.is_contiguous() && dst.is_contiguous();
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, kGrain),
                      [&](const tbb::blocked_range<int64_t>& r) {
                        if (contiguous) {
                          if constexpr (std::is_same_v<S, D>) {
                            std::memcpy(d + r.begin(), s + r.begin(), r.size() * sizeof(S));
                          } else {
                            for (int64_t i = r.begin(); i < r.end(); ++i) {
                              d[i] = detail::convert<D>(s[i]);
                            }
                          }
                          return;
                        }
                        for (int64_t i = r.begin(); i < r.end(); ++i) {
                          d[strided_offset(i, dst.shape, dst.strides)] = detail::convert<D>(
                              s[strided_offset(i, src.shape, src.strides)]);
                        }
                      },
                      tbb::simple_partitioner());
  });
}

/// Unpacks i4/u4 into a contiguous i8/u8 buffer.
std::vector<int8_t> unpack(ConstTensorView src) {
  std::vector<int8_t> out(static_cast<std::size_t>(src.numel()));
  const auto* p = src.data_as<uint8_t>();
  if (src.dtype == DType::kI4) {
    unpack_i4(p, out.data(), src.numel());
  } else {
    unpack_u4(p, reinterpret_cast<uint8_t*>(out.data()), src.numel());
  }
  return out;
}

}  // namespace

void copy(ConstTensorView src, TensorView dst, const ExecContext& ctx) {
  if (is_packed(src.dtype)) {
    // Unpack to a byte per element, then convert like any other i8/u8 tensor.
    std::vector<int8_t> bytes = unpack(src);
    const DType t = src.dtype == DType::kI4 ? DType::kI8 : DType::kU8;
    copy(ConstTensorView(bytes.data(), src.shape, contiguous_strides(src.shape), t, src.device),
         dst, ctx);
    return;
  }
  if (is_packed(dst.dtype)) {
    // Convert to a byte per element (saturated to the nibble range), then pack.
    const bool is_signed = dst.dtype == DType::kI4;
    std::vector<int8_t> bytes(static_cast<std::size_t>(dst.numel()));
    copy(src,
         TensorView{bytes.data(), dst.shape, contiguous_strides(dst.shape),
                    is_signed ? DType::kI8 : DType::kU8, dst.device},
         ctx);
    for (auto& b : bytes) {
      if (is_signed) {
        b = static_cast<int8_t>(b < -8 ? -8 : (b > 7 ? 7 : b));
      } else {
        const auto u = static_cast<uint8_t>(b);
        b = static_cast<int8_t>(u > 15 ? 15 : u);
      }
    }
    auto* out = dst.data_as<uint8_t>();
    if (is_signed) {
      pack_i4(bytes.data(), out, dst.numel());
    } else {
      pack_u4(reinterpret_cast<const uint8_t*>(bytes.data()), out, dst.numel());
    }
    return;
  }
  detail::visit_dtype(src.dtype, "copy", [&]<class S>() {
    detail::visit_dtype(dst.dtype, "copy", [&]<class D>() { copy_typed<S, D>(src, dst, ctx); });
  });
}

void fill(TensorView dst, double value, const ExecContext& ctx) {
  if (is_packed(dst.dtype)) {
    // One byte holds two equal nibbles, saturated to the nibble range like copy().
    int v = detail::saturate_int<int8_t>(value);
    uint8_t byte = 0;
    if (dst.dtype == DType::kI4) {
      v = v < -8 ? -8 : (v > 7 ? 7 : v);
      byte = pack_i4(static_cast<int8_t>(v), static_cast<int8_t>(v));
    } else {
      v = v < 0 ? 0 : (v > 15 ? 15 : v);
      byte = pack_u4(static_cast<uint8_t>(v), static_cast<uint8_t>(v));
    }
    std::memset(dst.data, byte, static_cast<std::size_t>(dst.nbytes()));
    return;
  }
  detail::visit_dtype(dst.dtype, "fill", [&]<class D>() {
    const D v = detail::from_double<D>(value);
    D* d = dst.data_as<D>();
    const int64_t n = dst.numel();
    const bool contiguous = dst.is_contiguous();
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, kGrain),
                        [&](const tbb::blocked_range<int64_t>& r) {
                          for (int64_t i = r.begin(); i < r.end(); ++i) {
                            d[contiguous ? i : strided_offset(i, dst.shape, dst.strides)] = v;
                          }
                        });
    });
  });
}

}  // namespace frugal::cpu
