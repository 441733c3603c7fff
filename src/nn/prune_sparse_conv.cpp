// Sparse inference layers for pruned models (include/frugal/nn/prune_layers.hpp): SparseConv2d
// (direct sparse convolution over the padded input, CSR weights) and sparse_inference_model.
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "frugal/core/error.hpp"
#include "frugal/nn/prune_layers.hpp"

namespace frugal::nn {
namespace {

// Direct sparse convolution over a zero-padded input (the shifted-plane form of Park et al.
// 2017, "Faster CNNs with Direct Sparse Convolutions"): with xp (C, N, Hp, Wp) the padded input
// flattened per channel, output position (n, i, j) at stride 1 reads tap (c, a, e) at flat index
// f(n, i, j) + a dil_h Wp + e dil_w, so each nonzero weight is ONE axpy of a shifted run of the
// padded plane: Y (O, N Hp Wp) += w xp[c][off + .]. Y is computed at every padded position
// (stride s uses every s-th row and column of it) and cropped. Work: nnz * N Hp Wp FMAs, no
// im2col matrix; the terms of an output are added in CSR order, whatever the thread count.
// Values per padded input plane: N Hp Wp, plus the largest tap shift so that the last position's
// taps stay inside.
int64_t padded_plane(int64_t N, int64_t H, int64_t W, int64_t kh, int64_t kw,
                     const Conv2dParams& p) {
  const int64_t Hp = H + 2 * p.padding.h, Wp = W + 2 * p.padding.w;
  return N * Hp * Wp + (kh - 1) * p.dilation.h * Wp + (kw - 1) * p.dilation.w;
}

// Outputs per task: 512 bytes of accumulators, 8 vector registers of 64 bytes (GCC vector
// extensions, as the SpMM kernels of src/prune/cpu/sparse.cpp).
template <class T>
struct Tiling {
  static constexpr int64_t kLanes = 64 / sizeof(T);
  static constexpr int64_t kVecs = 8;
  static constexpr int64_t kTile = kLanes * kVecs;
  using V [[gnu::vector_size(64)]] = T;
};

template <class T>
void direct_sparse_conv(const T* x, T* xp, bool fill_padding, const int32_t* row_ptr,
                        const int32_t* col_idx, const T* values, const T* bias, T* out, int64_t N,
                        int64_t C, int64_t H, int64_t W, int64_t O, int64_t kh, int64_t kw,
                        const Conv2dParams& p, int64_t oh, int64_t ow, const ExecContext& ctx) {
  using V = typename Tiling<T>::V;
  constexpr int64_t kLanes = Tiling<T>::kLanes, kVecs = Tiling<T>::kVecs, kTile = Tiling<T>::kTile;
  const int64_t Hp = H + 2 * p.padding.h, Wp = W + 2 * p.padding.w;
  const int64_t L = N * Hp * Wp;
  const int64_t plane = padded_plane(N, H, W, kh, kw, p);
  if (fill_padding) std::fill(xp, xp + C * plane + kTile, T(0));
  const int64_t nnz = row_ptr[O];
  std::vector<int64_t> src(nnz);  // start of each nonzero's shifted run in xp
  for (int64_t q = 0; q < nnz; ++q) {
    const int64_t k = col_idx[q];
    const int64_t c = k / (kh * kw), a = (k / kw) % kh, e = k % kw;
    src[q] = c * plane + a * p.dilation.h * Wp + e * p.dilation.w;
  }
  const int64_t last_r = (oh - 1) * p.stride.h;  // the last padded row that is an output row
  const int64_t tiles = (L + kTile - 1) / kTile;
  ctx.run([&] {
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, N * C, 8), [&](auto r) {
      for (int64_t nc = r.begin(); nc < r.end(); ++nc) {
        const int64_t n = nc / C, c = nc % C;
        for (int64_t i = 0; i < H; ++i) {
          std::memcpy(xp + c * plane + (n * Hp + i + p.padding.h) * Wp + p.padding.w,
                      x + ((n * C + c) * H + i) * W, sizeof(T) * W);
        }
      }
    });
    // Tile-major: the window of every input plane a tile reads (C runs of about kTile + tail
    // values) stays in cache while all O output channels consume it. Each finished tile is
    // cropped straight into the output (plus the bias).
    tbb::parallel_for(tbb::blocked_range<int64_t>(0, tiles * O, 4), [&](auto r) {
      alignas(64) T res[kTile];
      for (int64_t to = r.begin(); to < r.end(); ++to) {
        const int64_t t0 = (to / O) * kTile, o = to % O;
        const int64_t len = std::min(kTile, L - t0);
        V acc[kVecs];
#pragma GCC unroll 16
        for (int64_t v = 0; v < kVecs; ++v) acc[v] = V{};
        for (int32_t q = row_ptr[o]; q < row_ptr[o + 1]; ++q) {
          const T w = values[q];
          const T* s = xp + src[q] + t0;
#pragma GCC unroll 16
          for (int64_t v = 0; v < kVecs; ++v) {
            V xv;
            std::memcpy(&xv, s + v * kLanes, sizeof(V));
            acc[v] += w * xv;
          }
        }
        std::memcpy(res, acc, sizeof(T) * kTile);
        const T b = bias != nullptr ? bias[o] : T(0);
        // Padded rows g = n Hp + r met by the tile; output (n, i, j) sits at r = i stride_h,
        // q = j stride_w.
        for (int64_t g = t0 / Wp; g <= (t0 + len - 1) / Wp; ++g) {
          const int64_t n = g / Hp, rr = g % Hp;
          if (rr > last_r || rr % p.stride.h != 0) continue;
          T* dst = out + ((n * O + o) * oh + rr / p.stride.h) * ow;
          const int64_t base = g * Wp - t0;  // tile index of q = 0
          for (int64_t j = 0; j < ow; ++j) {
            const int64_t idx = base + j * p.stride.w;
            if (idx >= 0 && idx < len) dst[j] = res[idx] + b;
          }
        }
      }
    });
  });
}

}  // namespace

SparseConv2d::SparseConv2d(Conv2d& dense, const Tensor& mask)
    : in_channels_(dense.in_channels()), kernel_(dense.kernel_size()), params_(dense.params()) {
  const char* op = "SparseConv2d";
  FRUGAL_REQUIRE(params_.groups == 1, op, "only groups = 1 convolutions, got groups ",
                 params_.groups);
  const Tensor& w = dense.weight().value;
  FRUGAL_REQUIRE(w.device().kind == DeviceKind::kCpu, op, "the convolution must be on the CPU");
  const Shape flat{w.dim(0), w.numel() / w.dim(0)};
  Tensor wf = w.contiguous().reshape(flat);
  if (mask.defined()) {
    FRUGAL_REQUIRE(mask.shape() == w.shape(), op, "mask shape differs from the weight's");
    w_ = prune::to_csr(wf, mask.to(Device::cpu()).contiguous().reshape(flat));
  } else {
    w_ = prune::to_csr(wf);
  }
  if (dense.bias() != nullptr) bias_ = dense.bias()->value.clone();
  train(false);
}

Tensor SparseConv2d::forward(const Tensor& input) {
  const char* op = "SparseConv2d";
  FRUGAL_REQUIRE(input.rank() == 4 && input.dim(1) == in_channels_, op, "expected input (N, ",
                 in_channels_, ", H, W)");
  FRUGAL_REQUIRE(input.device().kind == DeviceKind::kCpu, op, "CPU only");
  FRUGAL_REQUIRE(input.dtype() == w_.values.dtype(), op, "input dtype ", dtype_name(input.dtype()),
                 " differs from the weight's ", dtype_name(w_.values.dtype()));
  const Shape out_shape = conv2d_output_shape(
      input.shape(), Shape{w_.rows, in_channels_, kernel_.h, kernel_.w}, params_);
  const int64_t N = input.dim(0), C = in_channels_, H = input.dim(2), W = input.dim(3);
  Tensor x = input.contiguous(ctx_);
  Tensor out = Tensor::empty(out_shape, input.dtype());
  // The padded planes are kept between calls with the same input shape: their padding is
  // still zero and their interior is rewritten (a fresh zeroed buffer each call costs page
  // faults comparable to the product itself).
  const bool fresh =
      !padded_.defined() || padded_for_ != input.shape() || padded_.dtype() != input.dtype();
  if (fresh) {
    const int64_t tile = 512 / dtype_nbytes(input.dtype(), 1);
    padded_ = Tensor::empty(Shape{C * padded_plane(N, H, W, kernel_.h, kernel_.w, params_) + tile},
                            input.dtype());
    padded_for_ = input.shape();
  }
  auto run = [&]<class T>() {
    direct_sparse_conv<T>(x.data<T>(), padded_.data<T>(), fresh, w_.row_ptr.data<int32_t>(),
                          w_.col_idx.data<int32_t>(), w_.values.data<T>(),
                          bias_.defined() ? bias_.data<T>() : nullptr, out.data<T>(), N, C, H, W,
                          w_.rows, kernel_.h, kernel_.w, params_, out_shape[2], out_shape[3], ctx_);
  };
  if (input.dtype() == DType::kF32) {
    run.operator()<float>();
  } else {
    run.operator()<double>();
  }
  return out;
}

Tensor SparseConv2d::backward(const Tensor&) {
  detail::fail(ErrorCode::kUnsupported, "SparseConv2d",
               "inference only: backward is not implemented");
}

std::shared_ptr<Sequential> sparse_inference_model(Sequential& model, const Pruner* pruner) {
  std::vector<std::shared_ptr<Module>> layers;
  for (const auto& [name, child] : model.children()) {
    const std::string wname = name + ".weight";
    Tensor mask;
    if (pruner != nullptr) {
      const auto& names = pruner->names();
      if (std::find(names.begin(), names.end(), wname) != names.end()) mask = pruner->mask(wname);
    }
    if (auto* lin = dynamic_cast<Linear*>(child.get())) {
      layers.push_back(std::make_shared<SparseLinear>(*lin, mask));
    } else if (auto* conv = dynamic_cast<Conv2d*>(child.get());
               conv != nullptr && conv->params().groups == 1) {
      layers.push_back(std::make_shared<SparseConv2d>(*conv, mask));
    } else {
      layers.push_back(child);
    }
  }
  auto out = std::make_shared<Sequential>(layers);
  out->set_context(model.context());
  out->eval();
  return out;
}

}  // namespace frugal::nn
