// ReLU / GELU forward and backward on the host: oneTBB over fixed chunks of elements.
//
// The activation kind is a run-time int; each loop is instantiated per kind (Kind below) so the
// switch in act_forward / act_backward folds away and the ReLU loops vectorise (compare and blend,
// bit-exact: x < 0 ? 0 : x keeps NaN and -0). Small tensors run on the calling thread: entering
// the arena and splitting costs microseconds, more than a ReLU over a few thousand elements.
#include <tbb/parallel_for.h>

#include <type_traits>

#include "amp/low_store.hpp"
#include "core/dtype_dispatch.hpp"
#include "nn/basic_ops.hpp"

namespace frugal::nn::cpu {
namespace {

template <class T>
using Acc = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Elements per task: erf / tanh cost ~10 ns, so 8192 elements keep task overhead below 1%.
constexpr int64_t kGrain = 1 << 13;
// ReLU runs near memory speed (~0.1 ns per f32 element on one core): 64 Ki elements (256 KiB of
// f32 in, 256 KiB out) make a task of ~10 us, so splitting overhead (~1 us) stays small.
constexpr int64_t kReluGrain = 1 << 16;

template <class Fn>
void for_chunks(int64_t n, int64_t grain, const ExecContext& ctx, Fn&& fn) {
  if (n <= grain) {
    fn(int64_t{0}, n);
    return;
  }
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, n, grain),
                      [&](const tbb::blocked_range<int64_t>& r) { fn(r.begin(), r.end()); });
  });
}

/// Calls body(std::integral_constant<int, kind>{}, grain) for the run-time activation kind.
template <class Body>
void with_kind(int kind, Body&& body) {
  using detail::ActKind;
  switch (static_cast<ActKind>(kind)) {
    case ActKind::kRelu:
      return body(std::integral_constant<int, static_cast<int>(ActKind::kRelu)>{}, kReluGrain);
    case ActKind::kGeluErf:
      return body(std::integral_constant<int, static_cast<int>(ActKind::kGeluErf)>{}, kGrain);
    case ActKind::kGeluTanh:
      return body(std::integral_constant<int, static_cast<int>(ActKind::kGeluTanh)>{}, kGrain);
  }
}

}  // namespace

void activation_forward(int kind, ConstTensorView x, TensorView y, const ExecContext& ctx) {
  ::frugal::detail::visit_compute_float(x.dtype, "activation_forward", [&]<class T>() {
    const T* px = x.data_as<T>();
    T* py = y.data_as<T>();
    with_kind(kind, [&](auto k, int64_t grain) {
      for_chunks(x.numel(), grain, ctx, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          py[i] = T(detail::act_forward<Acc<T>>(k.value, static_cast<Acc<T>>(px[i])));
        }
      });
    });
  });
}

void activation_backward(int kind, ConstTensorView grad, ConstTensorView x, TensorView out,
                         const ExecContext& ctx) {
  ::frugal::detail::visit_compute_float(x.dtype, "activation_backward", [&]<class T>() {
    const T* pg = grad.data_as<T>();
    const T* px = x.data_as<T>();
    T* po = out.data_as<T>();
    with_kind(kind, [&](auto k, int64_t grain) {
      for_chunks(x.numel(), grain, ctx, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          po[i] = T(detail::act_backward<Acc<T>>(k.value, static_cast<Acc<T>>(pg[i]),
                                                 static_cast<Acc<T>>(px[i])));
        }
      });
    });
  });
}

void activation_forward_low(int kind, ConstTensorView x, TensorView y, const ExecContext& ctx) {
  const auto run = [&]<class L>() {
    const float* px = x.data_as<float>();
    L* py = y.data_as<L>();
    with_kind(kind, [&](auto k, int64_t grain) {
      for_chunks(x.numel(), grain, ctx, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          py[i] = amp::detail::to_low<L>(detail::act_forward<float>(k.value, px[i]));
        }
      });
    });
  };
  if (y.dtype == DType::kF16) {
    run.template operator()<Half>();
  } else {
    run.template operator()<BFloat16>();
  }
}

void activation_backward_low(int kind, ConstTensorView grad, ConstTensorView x, TensorView out,
                             const ExecContext& ctx) {
  // Explicit float loads and stores around the float derivative: the generic bf16 / f16
  // instantiation of activation_backward runs about twice slower than this.
  const auto run = [&]<class L, class G>() {
    const G* pg = grad.data_as<G>();
    const L* px = x.data_as<L>();
    G* po = out.data_as<G>();
    with_kind(kind, [&](auto k, int64_t grain) {
      for_chunks(x.numel(), grain, ctx, [&](int64_t lo, int64_t hi) {
        for (int64_t i = lo; i < hi; ++i) {
          const float d = detail::act_backward<float>(k.value, static_cast<float>(pg[i]),
                                                      static_cast<float>(px[i]));
          if constexpr (std::is_same_v<G, float>) {
            po[i] = d;
          } else {
            po[i] = amp::detail::to_low<G>(d);
          }
        }
      });
    });
  };
  const bool half = x.dtype == DType::kF16;
  if (grad.dtype == DType::kF32) {
    half ? run.template operator()<Half, float>() : run.template operator()<BFloat16, float>();
  } else {
    half ? run.template operator()<Half, Half>() : run.template operator()<BFloat16, BFloat16>();
  }
}

}  // namespace frugal::nn::cpu
