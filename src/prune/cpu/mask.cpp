// CPU backend of the prune masks: radix select of the k-th smallest key, N:M groups.
#include <tbb/combinable.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <vector>

#include "prune/prune_internal.hpp"

namespace frugal::cpu {
namespace {

using prune::detail::order_key;
using prune::detail::Segment;

template <class T>
T score_of(T v, bool use_abs) {
  return use_abs ? std::abs(v) : v;
}

// Key of the k-th smallest (1-based) score over the segments and the number of keys below it.
// Radix select with 16-bit digits from the top: each pass histograms the next digit of the
// keys that share the prefix found so far. Integer histograms: the result is independent of
// the thread count.
template <class T, class K>
std::pair<K, int64_t> radix_select(std::span<const Segment<T>> segs, int64_t k, bool use_abs,
                                   int num_threads) {
  constexpr int kBits = 8 * sizeof(K);
  constexpr int kDigit = 16;
  constexpr int64_t kBins = int64_t{1} << kDigit;
  constexpr int64_t kChunk = int64_t{1} << 16;
  K prefix = 0;
  int64_t below = 0;
  for (int shift = kBits - kDigit; shift >= 0; shift -= kDigit) {
    const int top = shift + kDigit;  // bits [top, kBits) must equal the prefix
    std::vector<int64_t> hist(kBins, 0);
    for (const auto& s : segs) {
      auto body = [&](std::vector<int64_t>& h, int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const K key = order_key(score_of(s.data[i], use_abs));
          if (top < kBits && (key >> top) != (prefix >> top)) continue;
          ++h[static_cast<int64_t>((key >> shift) & (kBins - 1))];
        }
      };
      if (num_threads == 1 || s.n <= kChunk) {
        body(hist, 0, s.n);
      } else {
        tbb::combinable<std::vector<int64_t>> local([] { return std::vector<int64_t>(kBins, 0); });
        tbb::parallel_for(tbb::blocked_range<int64_t>(0, s.n, kChunk * 4),
                          [&](auto r) { body(local.local(), r.begin(), r.end()); });
        local.combine_each([&](const std::vector<int64_t>& h) {
          for (int64_t b = 0; b < kBins; ++b) hist[b] += h[b];
        });
      }
    }
    int64_t cum = 0, d = 0;
    for (; d < kBins; ++d) {
      if (below + cum + hist[d] >= k) break;
      cum += hist[d];
    }
    below += cum;
    prefix |= static_cast<K>(d) << shift;
  }
  return {prefix, below};
}

template <class T, class K>
double select_mask(std::span<const Segment<T>> segs, int64_t k, bool use_abs, int num_threads) {
  K t{};
  int64_t need = 0;
  if (k > 0) {
    auto [key, below] = radix_select<T, K>(segs, k, use_abs, num_threads);
    t = key;
    need = k - below;  // keys equal to t to prune, lowest index first
  }
  double min_kept = std::numeric_limits<double>::infinity();
  for (const auto& s : segs) {
    for (int64_t i = 0; i < s.n; ++i) {
      const T v = score_of(s.data[i], use_abs);
      uint8_t keep = 1;
      if (k > 0) {
        const K key = order_key(v);
        if (key < t) {
          keep = 0;
        } else if (key == t && need > 0) {
          keep = 0;
          --need;
        }
      }
      s.mask[i] = keep;
      if (keep && static_cast<double>(v) < min_kept) min_kept = static_cast<double>(v);
    }
  }
  return min_kept;
}

}  // namespace

double prune_select_mask_f32(std::span<const prune::detail::Segment<float>> segs, int64_t k,
                             bool use_abs, int num_threads) {
  return select_mask<float, uint32_t>(segs, k, use_abs, num_threads);
}
double prune_select_mask_f64(std::span<const prune::detail::Segment<double>> segs, int64_t k,
                             bool use_abs, int num_threads) {
  return select_mask<double, uint64_t>(segs, k, use_abs, num_threads);
}

void prune_nm_mask(ConstTensorView scores, int n, int m, bool use_abs, TensorView mask,
                   const ExecContext& ctx) {
  const int64_t groups = scores.numel() / m;
  uint8_t* out = mask.data_as<uint8_t>();
  auto run = [&]<class T>(const T* s) {
    ctx.run([&] {
      tbb::parallel_for(tbb::blocked_range<int64_t>(0, groups, 4096), [&](auto r) {
        for (int64_t g = r.begin(); g < r.end(); ++g) {
          const T* x = s + g * m;
          for (int i = 0; i < m; ++i) {
            // rank of i: elements strictly larger, or equal with a lower index (kept first).
            const T xi = score_of(x[i], use_abs);
            int rank = 0;
            for (int j = 0; j < m; ++j) {
              const T xj = score_of(x[j], use_abs);
              rank += (xj > xi) || (xj == xi && j < i);
            }
            out[g * m + i] = rank < n ? 1 : 0;
          }
        }
      });
    });
  };
  if (scores.dtype == DType::kF32) {
    run(scores.data_as<float>());
  } else {
    run(scores.data_as<double>());
  }
}

}  // namespace frugal::cpu
