// Embedding lookup on the host. The weight gradient is a deterministic scatter-add: a counting
// sort groups the positions by id (stable, so each group is in index order), then oneTBB runs
// over the distinct ids and each sums its rows in order, in double.
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "nn/cpu/transformer.hpp"

namespace frugal::cpu {
namespace {

int64_t row_grain(int64_t d) { return std::max<int64_t>(1, (int64_t{1} << 14) / d); }

template <class T>
void forward_t(ConstTensorView idv, ConstTensorView wv, TensorView outv, const ExecContext& ctx) {
  const int64_t n = idv.shape[0], d = wv.shape[1];
  const int64_t* ids = idv.data_as<int64_t>();
  const T* w = wv.data_as<T>();
  T* out = outv.data_as<T>();
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, row_grain(d)), [&](const auto& r) {
      for (int64_t i = r.begin(); i < r.end(); ++i) {
        std::memcpy(out + i * d, w + ids[i] * d, sizeof(T) * static_cast<std::size_t>(d));
      }
    });
  });
}

template <class T>
void backward_t(ConstTensorView gv, ConstTensorView idv, TensorView gwv, const ExecContext& ctx) {
  const int64_t n = idv.shape[0], v = gwv.shape[0], d = gwv.shape[1];
  const int64_t* ids = idv.data_as<int64_t>();
  const T* g = gv.data_as<T>();
  T* gw = gwv.data_as<T>();
  // start[id] .. start[id + 1]: the positions of id in `order`, ascending.
  std::vector<int64_t> start(static_cast<std::size_t>(v) + 1, 0);
  for (int64_t i = 0; i < n; ++i) ++start[ids[i] + 1];
  for (int64_t k = 0; k < v; ++k) start[k + 1] += start[k];
  std::vector<int64_t> order(static_cast<std::size_t>(n));
  {
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n; ++i) order[next[ids[i]]++] = i;
  }
  std::vector<int64_t> distinct;
  for (int64_t k = 0; k < v; ++k) {
    if (start[k + 1] > start[k]) distinct.push_back(k);
  }
  const int64_t nd = static_cast<int64_t>(distinct.size());
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, nd, 1), [&](const auto& r) {
      std::vector<double> acc(static_cast<std::size_t>(d));
      for (int64_t u = r.begin(); u < r.end(); ++u) {
        const int64_t id = distinct[u];
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t p = start[id]; p < start[id + 1]; ++p) {
          const T* gi = g + order[p] * d;
          for (int64_t j = 0; j < d; ++j) acc[j] += gi[j];
        }
        T* row = gw + id * d;
        for (int64_t j = 0; j < d; ++j) row[j] = static_cast<T>(row[j] + acc[j]);
      }
    });
  });
}

}  // namespace

void embedding_forward(ConstTensorView ids, ConstTensorView weight, TensorView out,
                       const ExecContext& ctx) {
  if (weight.dtype == DType::kF64) return forward_t<double>(ids, weight, out, ctx);
  forward_t<float>(ids, weight, out, ctx);
}

void embedding_backward(ConstTensorView grad_out, ConstTensorView ids, TensorView grad_weight,
                        const ExecContext& ctx) {
  if (grad_weight.dtype == DType::kF64) return backward_t<double>(grad_out, ids, grad_weight, ctx);
  backward_t<float>(grad_out, ids, grad_weight, ctx);
}

}  // namespace frugal::cpu
