#pragma once
#include <array>
#include <cstdint>
#include <initializer_list>
#include <ostream>

#include "frugal/core/config.hpp"

namespace frugal {

/// Most dimensions a tensor may have.
inline constexpr int kMaxRank = 8;

/// A small fixed-capacity list of int64 extents or strides; trivially copyable, usable in kernels.
class Dims {
 public:
  constexpr Dims() = default;
  constexpr Dims(std::initializer_list<int64_t> v) : rank_(static_cast<int>(v.size())) {
    int i = 0;
    for (int64_t x : v) {
      if (i < kMaxRank) d_[i] = x;
      ++i;
    }
  }
  template <class It>
  constexpr Dims(It first, It last) {
    for (; first != last; ++first) {
      if (rank_ < kMaxRank) d_[rank_] = static_cast<int64_t>(*first);
      ++rank_;
    }
  }
  FRUGAL_INLINE constexpr int rank() const { return rank_; }
  FRUGAL_INLINE constexpr int size() const { return rank_; }
  FRUGAL_INLINE constexpr int64_t operator[](int i) const { return d_[i]; }
  FRUGAL_INLINE constexpr int64_t& operator[](int i) { return d_[i]; }
  constexpr const int64_t* begin() const { return d_.data(); }
  constexpr const int64_t* end() const { return d_.data() + rank_; }
  constexpr void push_back(int64_t x) {
    if (rank_ < kMaxRank) d_[rank_] = x;
    ++rank_;
  }
  constexpr void erase(int i) {
    for (int k = i; k + 1 < rank_; ++k) d_[k] = d_[k + 1];
    --rank_;
  }
  /// Product of the extents (1 for rank 0).
  FRUGAL_INLINE constexpr int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < rank_; ++i) n *= d_[i];
    return n;
  }
  friend constexpr bool operator==(const Dims& a, const Dims& b) {
    if (a.rank_ != b.rank_) return false;
    for (int i = 0; i < a.rank_; ++i)
      if (a.d_[i] != b.d_[i]) return false;
    return true;
  }
  friend std::ostream& operator<<(std::ostream& os, const Dims& d) {
    os << '(';
    for (int i = 0; i < d.rank_; ++i) os << (i ? ", " : "") << d.d_[i];
    return os << ')';
  }

 private:
  std::array<int64_t, kMaxRank> d_{};
  int rank_ = 0;
};

using Shape = Dims;
using Strides = Dims;

/// Row-major (C order) element strides of `shape`.
constexpr Strides contiguous_strides(const Shape& shape) {
  Strides s = shape;
  int64_t acc = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

}  // namespace frugal
