// 2-D convolution through cuDNN's legacy convolution API (cuDNN 8 / 9): cudnnConvolutionForward,
// cudnnConvolutionBackwardData, cudnnConvolutionBackwardFilter, cudnnConvolutionBackwardBias.
//
// - One cudnnHandle_t per (host thread, device), created on first use and bound to the context's
//   stream on every call (a handle must not be shared by threads that set different streams).
// - Math: CUDNN_FMA_MATH for f32, so no TF32 tensor-core kernels (CUDNN_DEFAULT_MATH permits
//   TF32 on Ampere and later): results stay within f32 rounding of the CPU (PyTorch does the same
//   when allow_tf32 is off).
// - Algorithms: the first cudnnGet*Algorithm_v7 heuristic candidate that succeeds, does not use
//   tensor-op math (f32) and is deterministic (backward data skips ALGO_0, backward filter skips
//   ALGO_0 and ALGO_3, which accumulate with atomics); only when no deterministic candidate
//   exists, the first usable one. Choices are cached per geometry.
// - Workspaces come from the stream-ordered pool (Tensor::empty on the device) and are freed on
//   the same stream after the call.
// Every call enqueues on ctx.stream and returns without synchronizing.
#include <array>
#include <map>
#include <mutex>
#include <vector>

#include "common/check_cudnn.cuh"
#include "common/launch.cuh"
#include "cu_ops.hpp"

namespace frugal::cu {
namespace {

// ---- RAII descriptors ------------------------------------------------------------------------

class TensorDesc {
 public:
  TensorDesc() { FRUGAL_CUDNN_CHECK(cudnnCreateTensorDescriptor(&d_)); }
  ~TensorDesc() { cudnnDestroyTensorDescriptor(d_); }  // never throws
  TensorDesc(const TensorDesc&) = delete;
  TensorDesc& operator=(const TensorDesc&) = delete;
  cudnnTensorDescriptor_t get() const { return d_; }

 private:
  cudnnTensorDescriptor_t d_{};
};

class FilterDesc {
 public:
  FilterDesc() { FRUGAL_CUDNN_CHECK(cudnnCreateFilterDescriptor(&d_)); }
  ~FilterDesc() { cudnnDestroyFilterDescriptor(d_); }
  FilterDesc(const FilterDesc&) = delete;
  FilterDesc& operator=(const FilterDesc&) = delete;
  cudnnFilterDescriptor_t get() const { return d_; }

 private:
  cudnnFilterDescriptor_t d_{};
};

class ConvDesc {
 public:
  ConvDesc() { FRUGAL_CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d_)); }
  ~ConvDesc() { cudnnDestroyConvolutionDescriptor(d_); }
  ConvDesc(const ConvDesc&) = delete;
  ConvDesc& operator=(const ConvDesc&) = delete;
  cudnnConvolutionDescriptor_t get() const { return d_; }

 private:
  cudnnConvolutionDescriptor_t d_{};
};

/// The calling thread's cuDNN handles, one per device, destroyed at thread exit.
struct ThreadHandles {
  std::vector<cudnnHandle_t> handles;
  ~ThreadHandles() {
    for (cudnnHandle_t h : handles) {
      if (h != nullptr) cudnnDestroy(h);  // status ignored: destructors never throw
    }
  }
};

/// The handle of `device` for this thread, bound to `stream`. The device must be current.
cudnnHandle_t handle_for(int device, cudaStream_t stream) {
  thread_local ThreadHandles th;
  if (static_cast<std::size_t>(device) >= th.handles.size()) {
    th.handles.resize(static_cast<std::size_t>(device) + 1, nullptr);
  }
  cudnnHandle_t& h = th.handles[static_cast<std::size_t>(device)];
  if (h == nullptr) FRUGAL_CUDNN_CHECK(cudnnCreate(&h));
  FRUGAL_CUDNN_CHECK(cudnnSetStream(h, stream));
  return h;
}

int to_int(int64_t v, const char* what) {
  if (v < 0 || v > INT32_MAX) {
    ::frugal::detail::fail(ErrorCode::kUnsupported, "conv2d", what, " ", v,
                           " exceeds cuDNN's 32-bit extents");
  }
  return static_cast<int>(v);
}

cudnnDataType_t data_type(DType t) {
  return t == DType::kF64 ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT;
}

/// Convolution parameters as cu_ops.def passes them.
struct ConvParams {
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;
};

/// Descriptors of one convolution: input x (N, C, H, W), filter (K, C / groups, kh, kw), output
/// y (N, K, OH, OW).
struct ConvSetup {
  TensorDesc x, y;
  FilterDesc w;
  ConvDesc conv;
  cudnnDataType_t type;
  std::vector<int64_t> key;  // the algorithm-cache key

  ConvSetup(const Shape& xs, const Shape& ws, const Shape& ys, DType dt, const ConvParams& p,
            int device)
      : type(data_type(dt)) {
    FRUGAL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x.get(), CUDNN_TENSOR_NCHW, type,
                                                  to_int(xs[0], "batch"), to_int(xs[1], "channels"),
                                                  to_int(xs[2], "height"), to_int(xs[3], "width")));
    FRUGAL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(y.get(), CUDNN_TENSOR_NCHW, type,
                                                  to_int(ys[0], "batch"), to_int(ys[1], "channels"),
                                                  to_int(ys[2], "height"), to_int(ys[3], "width")));
    FRUGAL_CUDNN_CHECK(cudnnSetFilter4dDescriptor(
        w.get(), type, CUDNN_TENSOR_NCHW, to_int(ws[0], "filters"), to_int(ws[1], "channels"),
        to_int(ws[2], "kernel height"), to_int(ws[3], "kernel width")));
    FRUGAL_CUDNN_CHECK(cudnnSetConvolution2dDescriptor(
        conv.get(), to_int(p.pad_h, "padding"), to_int(p.pad_w, "padding"),
        to_int(p.stride_h, "stride"), to_int(p.stride_w, "stride"), to_int(p.dil_h, "dilation"),
        to_int(p.dil_w, "dilation"), CUDNN_CROSS_CORRELATION, type));
    FRUGAL_CUDNN_CHECK(cudnnSetConvolutionGroupCount(conv.get(), to_int(p.groups, "groups")));
    // FMA only: no TF32 tensor cores for f32 (parity with the CPU).
    FRUGAL_CUDNN_CHECK(cudnnSetConvolutionMathType(
        conv.get(), type == CUDNN_DATA_FLOAT ? CUDNN_FMA_MATH : CUDNN_DEFAULT_MATH));
    key = {device,     static_cast<int64_t>(type),
           xs[0],      xs[1],
           xs[2],      xs[3],
           ws[0],      ws[2],
           ws[3],      p.stride_h,
           p.stride_w, p.pad_h,
           p.pad_w,    p.dil_h,
           p.dil_w,    p.groups};
  }
};

/// Process-wide cache of chosen algorithms: (kind, geometry) -> algorithm enum value.
int cached_algo(int kind, const std::vector<int64_t>& geometry, int (*choose)(void*), void* arg) {
  static std::mutex mu;
  static std::map<std::vector<int64_t>, int> cache;
  std::vector<int64_t> key = geometry;
  key.push_back(kind);
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  const int algo = choose(arg);
  std::lock_guard<std::mutex> lock(mu);
  cache.emplace(std::move(key), algo);
  return algo;
}

/// True when a heuristic candidate is usable: succeeded, and for f32 uses no tensor-op math.
template <class Perf>
bool usable(const Perf& perf, cudnnDataType_t type) {
  if (perf.status != CUDNN_STATUS_SUCCESS) return false;
  if (type == CUDNN_DATA_FLOAT && (perf.mathType == CUDNN_TENSOR_OP_MATH ||
                                   perf.mathType == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)) {
    return false;
  }
  return true;
}

[[noreturn]] void no_algorithm(const char* pass) {
  ::frugal::detail::fail(ErrorCode::kUnsupported, "conv2d",
                         "cuDNN offers no FMA-math algorithm for the ", pass,
                         " pass of this convolution");
}

struct ChooseArgs {
  cudnnHandle_t handle;
  const ConvSetup* s;
};

int choose_forward(void* a) {
  const auto& [h, s] = *static_cast<ChooseArgs*>(a);
  std::array<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT> perf{};
  int n = 0;
  FRUGAL_CUDNN_CHECK(
      cudnnGetConvolutionForwardAlgorithm_v7(h, s->x.get(), s->w.get(), s->conv.get(), s->y.get(),
                                             static_cast<int>(perf.size()), &n, perf.data()));
  for (int i = 0; i < n; ++i) {
    if (usable(perf[i], s->type)) return static_cast<int>(perf[i].algo);  // all are deterministic
  }
  no_algorithm("forward");
}

int choose_backward_data(void* a) {
  const auto& [h, s] = *static_cast<ChooseArgs*>(a);
  std::array<cudnnConvolutionBwdDataAlgoPerf_t, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT> perf{};
  int n = 0;
  FRUGAL_CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(
      h, s->w.get(), s->y.get(), s->conv.get(), s->x.get(), static_cast<int>(perf.size()), &n,
      perf.data()));
  for (int i = 0; i < n; ++i) {
    if (usable(perf[i], s->type) && perf[i].algo != CUDNN_CONVOLUTION_BWD_DATA_ALGO_0) {
      return static_cast<int>(perf[i].algo);
    }
  }
  // No deterministic candidate (rare geometries): take the first usable one rather than fail.
  for (int i = 0; i < n; ++i) {
    if (usable(perf[i], s->type)) return static_cast<int>(perf[i].algo);
  }
  no_algorithm("backward-data");
}

int choose_backward_filter(void* a) {
  const auto& [h, s] = *static_cast<ChooseArgs*>(a);
  std::array<cudnnConvolutionBwdFilterAlgoPerf_t, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT> perf{};
  int n = 0;
  FRUGAL_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
      h, s->x.get(), s->y.get(), s->conv.get(), s->w.get(), static_cast<int>(perf.size()), &n,
      perf.data()));
  for (int i = 0; i < n; ++i) {
    if (usable(perf[i], s->type) && perf[i].algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0 &&
        perf[i].algo != CUDNN_CONVOLUTION_BWD_FILTER_ALGO_3) {
      return static_cast<int>(perf[i].algo);
    }
  }
  // No deterministic candidate (rare geometries): take the first usable one rather than fail.
  for (int i = 0; i < n; ++i) {
    if (usable(perf[i], s->type)) return static_cast<int>(perf[i].algo);
  }
  no_algorithm("backward-filter");
}

/// A device workspace of `bytes` from the stream-ordered pool (an undefined tensor for 0).
Tensor workspace(size_t bytes, int device, const ExecContext& ctx) {
  if (bytes == 0) return Tensor();
  return Tensor::empty(Shape{static_cast<int64_t>(bytes)}, DType::kU8, Device::cuda(device), ctx);
}

/// alpha / beta scalars in the type cuDNN expects for the data type (double for f64).
struct Scalars {
  float f[2];
  double d[2];
  const void* one(cudnnDataType_t t) const {
    return t == CUDNN_DATA_DOUBLE ? (const void*)&d[1] : (const void*)&f[1];
  }
  const void* zero(cudnnDataType_t t) const {
    return t == CUDNN_DATA_DOUBLE ? (const void*)&d[0] : (const void*)&f[0];
  }
};
constexpr Scalars kScalars{{0.f, 1.f}, {0.0, 1.0}};

/// (1, C, 1, 1) descriptor of a per-channel vector.
void set_channel_desc(const TensorDesc& d, int64_t c, cudnnDataType_t type) {
  FRUGAL_CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(d.get(), CUDNN_TENSOR_NCHW, type, 1, to_int(c, "channels"), 1, 1));
}

}  // namespace

void conv2d_forward(ConstTensorView x, ConstTensorView w, ConstTensorView bias, TensorView y,
                    int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                    int64_t dil_w, int64_t groups, const ExecContext& ctx) {
  const int dev = x.device.index;
  FRUGAL_CUDA_CHECK(cudaSetDevice(dev));
  const ConvSetup s(x.shape, w.shape, y.shape, x.dtype,
                    {stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups}, dev);
  cudnnHandle_t h = handle_for(dev, stream_of(ctx));
  ChooseArgs args{h, &s};
  const auto algo =
      static_cast<cudnnConvolutionFwdAlgo_t>(cached_algo(0, s.key, choose_forward, &args));
  size_t bytes = 0;
  FRUGAL_CUDNN_CHECK(cudnnGetConvolutionForwardWorkspaceSize(h, s.x.get(), s.w.get(), s.conv.get(),
                                                             s.y.get(), algo, &bytes));
  Tensor ws = workspace(bytes, dev, ctx);
  FRUGAL_CUDNN_CHECK(cudnnConvolutionForward(
      h, kScalars.one(s.type), s.x.get(), x.data, s.w.get(), w.data, s.conv.get(), algo,
      ws.defined() ? ws.data_ptr() : nullptr, bytes, kScalars.zero(s.type), s.y.get(), y.data));
  if (bias.data != nullptr) {
    TensorDesc bd;
    set_channel_desc(bd, bias.shape[0], s.type);
    FRUGAL_CUDNN_CHECK(cudnnAddTensor(h, kScalars.one(s.type), bd.get(), bias.data,
                                      kScalars.one(s.type), s.y.get(), y.data));
  }
}

void conv2d_backward_data(ConstTensorView dy, ConstTensorView w, TensorView dx, int64_t stride_h,
                          int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                          int64_t dil_w, int64_t groups, const ExecContext& ctx) {
  const int dev = dy.device.index;
  FRUGAL_CUDA_CHECK(cudaSetDevice(dev));
  const ConvSetup s(dx.shape, w.shape, dy.shape, dy.dtype,
                    {stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups}, dev);
  cudnnHandle_t h = handle_for(dev, stream_of(ctx));
  ChooseArgs args{h, &s};
  const auto algo = static_cast<cudnnConvolutionBwdDataAlgo_t>(
      cached_algo(1, s.key, choose_backward_data, &args));
  size_t bytes = 0;
  FRUGAL_CUDNN_CHECK(cudnnGetConvolutionBackwardDataWorkspaceSize(
      h, s.w.get(), s.y.get(), s.conv.get(), s.x.get(), algo, &bytes));
  Tensor ws = workspace(bytes, dev, ctx);
  FRUGAL_CUDNN_CHECK(cudnnConvolutionBackwardData(
      h, kScalars.one(s.type), s.w.get(), w.data, s.y.get(), dy.data, s.conv.get(), algo,
      ws.defined() ? ws.data_ptr() : nullptr, bytes, kScalars.zero(s.type), s.x.get(), dx.data));
}

void conv2d_backward_filter(ConstTensorView dy, ConstTensorView x, TensorView dw, int64_t stride_h,
                            int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                            int64_t dil_w, int64_t groups, const ExecContext& ctx) {
  const int dev = dy.device.index;
  FRUGAL_CUDA_CHECK(cudaSetDevice(dev));
  const ConvSetup s(x.shape, dw.shape, dy.shape, dy.dtype,
                    {stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups}, dev);
  cudnnHandle_t h = handle_for(dev, stream_of(ctx));
  ChooseArgs args{h, &s};
  const auto algo = static_cast<cudnnConvolutionBwdFilterAlgo_t>(
      cached_algo(2, s.key, choose_backward_filter, &args));
  size_t bytes = 0;
  FRUGAL_CUDNN_CHECK(cudnnGetConvolutionBackwardFilterWorkspaceSize(
      h, s.x.get(), s.y.get(), s.conv.get(), s.w.get(), algo, &bytes));
  Tensor ws = workspace(bytes, dev, ctx);
  // beta = 1: the gradient accumulates into dw.
  FRUGAL_CUDNN_CHECK(cudnnConvolutionBackwardFilter(
      h, kScalars.one(s.type), s.x.get(), x.data, s.y.get(), dy.data, s.conv.get(), algo,
      ws.defined() ? ws.data_ptr() : nullptr, bytes, kScalars.one(s.type), s.w.get(), dw.data));
}

void conv2d_backward_bias(ConstTensorView dy, TensorView db, const ExecContext& ctx) {
  const int dev = dy.device.index;
  FRUGAL_CUDA_CHECK(cudaSetDevice(dev));
  const cudnnDataType_t type = data_type(dy.dtype);
  TensorDesc dyd, dbd;
  FRUGAL_CUDNN_CHECK(
      cudnnSetTensor4dDescriptor(dyd.get(), CUDNN_TENSOR_NCHW, type, to_int(dy.shape[0], "batch"),
                                 to_int(dy.shape[1], "channels"), to_int(dy.shape[2], "height"),
                                 to_int(dy.shape[3], "width")));
  set_channel_desc(dbd, db.shape[0], type);
  cudnnHandle_t h = handle_for(dev, stream_of(ctx));
  // beta = 1: the gradient accumulates into db.
  FRUGAL_CUDNN_CHECK(cudnnConvolutionBackwardBias(h, kScalars.one(type), dyd.get(), dy.data,
                                                  kScalars.one(type), dbd.get(), db.data));
}

}  // namespace frugal::cu
