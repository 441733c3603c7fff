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
//
// The autocast convolution (conv2d_*_low, bf16 / f16 operands, f32 results) goes through the cuDNN
// graph (backend) API instead, which, unlike the legacy API, lets the tensors of one convolution
// have different dtypes; see "Low precision" below. NOT YET RUN ON A GPU (no GPU where it was
// written; tests/amp/autocast_conv_cuda.cpp skips there).
#include <array>
#include <cstdint>
#include <map>
#include <memory>
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

// ---- Low precision: conv2d_*_low through the cuDNN graph API ---------------------------------
//
// The legacy API takes bf16 / f16 only in its PSEUDO_BFLOAT16 / PSEUDO_HALF configurations, where
// x, w and y share the low dtype: the output, grad_input and the weight gradient would be rounded
// to bf16 before reaching the fp32 master gradient. The graph API describes each tensor with its
// own dtype: one single-operation graph per pass, x / w / dy in bf16 or f16, y / dx / dw in f32,
// compute type f32 (fp32 accumulation), NCHW strides. Engines come from the heuristics (mode A);
// the first whose plan finalizes and whose numerical notes do not say non-deterministic, reduced-
// precision reduction or down-converted inputs is used (as the legacy path prefers deterministic
// algorithms). The weight gradient is computed into a temporary (beta 0) and added into dw with
// cu::axpy, so no engine has to support beta. When cuDNN has no acceptable engine for a graph the
// functions return false (the answer is cached per geometry) and the caller runs the fp32
// convolution on the operands widened to f32. Plans are cached per (host thread, device, pass,
// dtype, geometry, alignment): a plan belongs to the handle it was built with.

namespace {

/// An owned cudnnBackendDescriptor_t.
class BackendDesc {
 public:
  explicit BackendDesc(cudnnBackendDescriptorType_t type) {
    FRUGAL_CUDNN_CHECK(cudnnBackendCreateDescriptor(type, &d_));
  }
  ~BackendDesc() { cudnnBackendDestroyDescriptor(d_); }  // never throws
  BackendDesc(const BackendDesc&) = delete;
  BackendDesc& operator=(const BackendDesc&) = delete;
  cudnnBackendDescriptor_t get() const { return d_; }
  /// Sets attribute `name` to `count` elements of `type` at `values`.
  void set(cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t count,
           const void* values) {
    FRUGAL_CUDNN_CHECK(cudnnBackendSetAttribute(d_, name, type, count, values));
  }
  void finalize() { FRUGAL_CUDNN_CHECK(cudnnBackendFinalize(d_)); }
  /// Finalizes without throwing: false when cuDNN rejects the descriptor.
  bool try_finalize() { return cudnnBackendFinalize(d_) == CUDNN_STATUS_SUCCESS; }

 private:
  cudnnBackendDescriptor_t d_{};
};

using BackendPtr = std::unique_ptr<BackendDesc>;

BackendPtr make_desc(cudnnBackendDescriptorType_t type) {
  return std::make_unique<BackendDesc>(type);
}

cudnnDataType_t low_type(DType t) {
  return t == DType::kBF16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_HALF;
}

/// A packed NCHW (or KCRS) tensor of the graph.
BackendPtr graph_tensor(int64_t uid, const std::array<int64_t, 4>& dims, cudnnDataType_t type,
                        int64_t alignment) {
  const std::array<int64_t, 4> strides{dims[1] * dims[2] * dims[3], dims[2] * dims[3], dims[3], 1};
  BackendPtr t = make_desc(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  t->set(CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type);
  t->set(CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, 4, dims.data());
  t->set(CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, 4, strides.data());
  t->set(CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid);
  t->set(CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment);
  t->finalize();
  return t;
}

enum LowPass : int64_t { kLowForward = 0, kLowBackwardData = 1, kLowBackwardFilter = 2 };

// Graph tensor ids: x, w, y (dx, dw, dy take the ids of x, w, y).
constexpr int64_t kUidX = 1, kUidW = 2, kUidY = 3;

/// A finalized execution plan and its workspace size; an empty plan means "no engine".
struct LowPlan {
  BackendPtr plan;
  int64_t workspace = 0;
};

/// True when an engine's numerical notes allow it: deterministic, fp32 reduction, no down-
/// conversion of the inputs.
bool acceptable_engine(cudnnBackendDescriptor_t cfg) {
  BackendDesc engine(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  cudnnBackendDescriptor_t e = engine.get();
  int64_t n = 0;
  if (cudnnBackendGetAttribute(cfg, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
                               &n, &e) != CUDNN_STATUS_SUCCESS) {
    return false;
  }
  std::array<cudnnBackendNumericalNote_t, CUDNN_NUMERICAL_NOTE_TYPE_COUNT> notes{};
  int64_t count = 0;
  if (cudnnBackendGetAttribute(e, CUDNN_ATTR_ENGINE_NUMERICAL_NOTE, CUDNN_TYPE_NUMERICAL_NOTE,
                               static_cast<int64_t>(notes.size()), &count,
                               notes.data()) != CUDNN_STATUS_SUCCESS) {
    return false;
  }
  for (int64_t i = 0; i < count; ++i) {
    if (notes[i] == CUDNN_NUMERICAL_NOTE_NONDETERMINISTIC ||
        notes[i] == CUDNN_NUMERICAL_NOTE_REDUCED_PRECISION_REDUCTION ||
        notes[i] == CUDNN_NUMERICAL_NOTE_DOWN_CONVERT_INPUTS) {
      return false;
    }
  }
  return true;
}

/// Builds the single-convolution graph of `pass` and its first acceptable plan.
LowPlan build_low_plan(cudnnHandle_t h, LowPass pass, DType low, const Shape& xs, const Shape& ws,
                       const Shape& ys, const ConvParams& p, int64_t alignment) {
  const cudnnDataType_t lt = low_type(low), ft = CUDNN_DATA_FLOAT;
  const std::array<int64_t, 4> xd{xs[0], xs[1], xs[2], xs[3]}, wd{ws[0], ws[1], ws[2], ws[3]},
      yd{ys[0], ys[1], ys[2], ys[3]};
  // Low operands, f32 results: forward x, w -> y; backward data dy, w -> dx; filter dy, x -> dw.
  BackendPtr x = graph_tensor(kUidX, xd, pass == kLowBackwardData ? ft : lt, alignment);
  BackendPtr w = graph_tensor(kUidW, wd, pass == kLowBackwardFilter ? ft : lt, alignment);
  BackendPtr y = graph_tensor(kUidY, yd, pass == kLowForward ? ft : lt, alignment);

  BackendPtr conv = make_desc(CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR);
  const int64_t spatial = 2;
  const cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
  const std::array<int64_t, 2> stride{p.stride_h, p.stride_w}, pad{p.pad_h, p.pad_w},
      dil{p.dil_h, p.dil_w};
  // Post-padding = pre-padding, as the legacy descriptor: the output extent is floor-divided.
  conv->set(CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS, CUDNN_TYPE_INT64, 1, &spatial);
  conv->set(CUDNN_ATTR_CONVOLUTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &ft);
  conv->set(CUDNN_ATTR_CONVOLUTION_CONV_MODE, CUDNN_TYPE_CONVOLUTION_MODE, 1, &mode);
  conv->set(CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES, CUDNN_TYPE_INT64, 2, stride.data());
  conv->set(CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS, CUDNN_TYPE_INT64, 2, pad.data());
  conv->set(CUDNN_ATTR_CONVOLUTION_POST_PADDINGS, CUDNN_TYPE_INT64, 2, pad.data());
  conv->set(CUDNN_ATTR_CONVOLUTION_DILATIONS, CUDNN_TYPE_INT64, 2, dil.data());
  conv->finalize();

  const float alpha = 1.f, beta = 0.f;
  cudnnBackendDescriptor_t xv = x->get(), wv = w->get(), yv = y->get(), cv = conv->get();
  // The operation of each pass: its descriptor type and the attributes of its three tensors
  // (in the order x, w, y above), the convolution, alpha and beta.
  struct OpAttributes {
    cudnnBackendDescriptorType_t type;
    cudnnBackendAttributeName_t x, w, y, conv, alpha, beta;
  };
  const OpAttributes a =
      pass == kLowForward ? OpAttributes{CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR,
                                         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                                         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                                         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
                                         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                                         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                                         CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA}
      : pass == kLowBackwardData
          ? OpAttributes{CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_DATA_DESCRIPTOR,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DX,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_W,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_DY,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_CONV_DESC,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_ALPHA,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_DATA_BETA}
          : OpAttributes{CUDNN_BACKEND_OPERATION_CONVOLUTION_BACKWARD_FILTER_DESCRIPTOR,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_X,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DW,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_DY,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_CONV_DESC,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_ALPHA,
                         CUDNN_ATTR_OPERATION_CONVOLUTION_BWD_FILTER_BETA};
  BackendPtr op = make_desc(a.type);
  op->set(a.x, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &xv);
  op->set(a.w, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &wv);
  op->set(a.y, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &yv);
  op->set(a.conv, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &cv);
  op->set(a.alpha, CUDNN_TYPE_FLOAT, 1, &alpha);
  op->set(a.beta, CUDNN_TYPE_FLOAT, 1, &beta);
  LowPlan result;
  // A graph cuDNN rejects (no support for these dtypes together) means "no engine".
  if (!op->try_finalize()) return result;

  BackendPtr graph = make_desc(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  cudnnBackendDescriptor_t opv = op->get();
  graph->set(CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
  graph->set(CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &opv);
  if (!graph->try_finalize()) return result;

  BackendPtr heur = make_desc(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
  cudnnBackendDescriptor_t gv = graph->get();
  const cudnnBackendHeurMode_t heur_mode = CUDNN_HEUR_MODE_A;
  heur->set(CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &gv);
  heur->set(CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &heur_mode);
  if (!heur->try_finalize()) return result;
  int64_t available = 0;
  FRUGAL_CUDNN_CHECK(cudnnBackendGetAttribute(heur->get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &available,
                                              nullptr));
  if (available <= 0) return result;
  std::vector<BackendPtr> cfgs;
  std::vector<cudnnBackendDescriptor_t> raw;
  for (int64_t i = 0; i < available; ++i) {
    cfgs.push_back(make_desc(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    raw.push_back(cfgs.back()->get());
  }
  int64_t got = 0;
  FRUGAL_CUDNN_CHECK(cudnnBackendGetAttribute(heur->get(), CUDNN_ATTR_ENGINEHEUR_RESULTS,
                                              CUDNN_TYPE_BACKEND_DESCRIPTOR, available, &got,
                                              raw.data()));
  for (int64_t i = 0; i < got; ++i) {
    if (!acceptable_engine(raw[static_cast<std::size_t>(i)])) continue;
    BackendPtr plan = make_desc(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
    plan->set(CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h);
    plan->set(CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1,
              &raw[static_cast<std::size_t>(i)]);
    if (!plan->try_finalize()) continue;
    int64_t ws = 0, n = 0;
    FRUGAL_CUDNN_CHECK(cudnnBackendGetAttribute(
        plan->get(), CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n, &ws));
    result.plan = std::move(plan);
    result.workspace = ws;
    return result;
  }
  return result;
}

/// Largest power of two <= 16 dividing every address: the graph tensors' byte alignment.
int64_t common_alignment(std::initializer_list<const void*> ptrs) {
  int64_t a = 16;
  for (const void* q : ptrs) {
    const auto v = reinterpret_cast<std::uintptr_t>(q);
    while (a > 1 && v % static_cast<std::uintptr_t>(a) != 0) a /= 2;
  }
  return a;
}

/// This thread's plan for (device, pass, dtype, geometry, alignment), built on first use.
const LowPlan& low_plan(cudnnHandle_t h, int device, LowPass pass, DType low, const Shape& xs,
                        const Shape& ws, const Shape& ys, const ConvParams& p, int64_t alignment) {
  thread_local std::map<std::vector<int64_t>, LowPlan> plans;
  std::vector<int64_t> key{device, pass, static_cast<int64_t>(low), alignment};
  for (const Shape* s : {&xs, &ws}) {
    for (int i = 0; i < 4; ++i) key.push_back((*s)[i]);
  }
  for (int64_t v : {p.stride_h, p.stride_w, p.pad_h, p.pad_w, p.dil_h, p.dil_w, p.groups}) {
    key.push_back(v);
  }
  auto it = plans.find(key);
  if (it == plans.end()) {
    it =
        plans.emplace(std::move(key), build_low_plan(h, pass, low, xs, ws, ys, p, alignment)).first;
  }
  return it->second;
}

/// Runs `plan` on (x, w, y) pointers (by graph id) with a pool workspace.
void execute_low(cudnnHandle_t h, const LowPlan& plan, const void* x, const void* w, const void* y,
                 int device, const ExecContext& ctx) {
  Tensor ws = workspace(static_cast<size_t>(plan.workspace), device, ctx);
  std::array<int64_t, 3> uids{kUidX, kUidW, kUidY};
  std::array<void*, 3> ptrs{const_cast<void*>(x), const_cast<void*>(w), const_cast<void*>(y)};
  void* wsp = ws.defined() ? ws.data_ptr() : nullptr;
  BackendDesc pack(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR);
  pack.set(CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, 3, uids.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, 3, ptrs.data());
  pack.set(CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &wsp);
  pack.finalize();
  FRUGAL_CUDNN_CHECK(cudnnBackendExecute(h, plan.plan->get(), pack.get()));
}

}  // namespace

bool conv2d_forward_low(ConstTensorView x, ConstTensorView w, ConstTensorView bias, TensorView y,
                        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                        int64_t dil_h, int64_t dil_w, int64_t groups, const ExecContext& ctx) {
  const int dev = x.device.index;
  FRUGAL_CUDA_CHECK(cudaSetDevice(dev));
  cudnnHandle_t h = handle_for(dev, stream_of(ctx));
  const ConvParams p{stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups};
  const LowPlan& plan = low_plan(h, dev, kLowForward, x.dtype, x.shape, w.shape, y.shape, p,
                                 common_alignment({x.data, w.data, y.data}));
  if (!plan.plan) return false;
  execute_low(h, plan, x.data, w.data, y.data, dev, ctx);
  if (bias.data != nullptr) {
    TensorDesc yd, bd;
    FRUGAL_CUDNN_CHECK(cudnnSetTensor4dDescriptor(
        yd.get(), CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, to_int(y.shape[0], "batch"),
        to_int(y.shape[1], "channels"), to_int(y.shape[2], "height"), to_int(y.shape[3], "width")));
    set_channel_desc(bd, bias.shape[0], CUDNN_DATA_FLOAT);
    FRUGAL_CUDNN_CHECK(cudnnAddTensor(h, kScalars.one(CUDNN_DATA_FLOAT), bd.get(), bias.data,
                                      kScalars.one(CUDNN_DATA_FLOAT), yd.get(), y.data));
  }
  return true;
}

bool conv2d_backward_data_low(ConstTensorView dy, ConstTensorView w, TensorView dx,
                              int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                              int64_t dil_h, int64_t dil_w, int64_t groups,
                              const ExecContext& ctx) {
  const int dev = dy.device.index;
  FRUGAL_CUDA_CHECK(cudaSetDevice(dev));
  cudnnHandle_t h = handle_for(dev, stream_of(ctx));
  const ConvParams p{stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups};
  const LowPlan& plan = low_plan(h, dev, kLowBackwardData, dy.dtype, dx.shape, w.shape, dy.shape, p,
                                 common_alignment({dx.data, w.data, dy.data}));
  if (!plan.plan) return false;
  execute_low(h, plan, dx.data, w.data, dy.data, dev, ctx);
  return true;
}

bool conv2d_backward_filter_low(ConstTensorView dy, ConstTensorView x, TensorView dw,
                                int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                int64_t dil_h, int64_t dil_w, int64_t groups,
                                const ExecContext& ctx) {
  const int dev = dy.device.index;
  FRUGAL_CUDA_CHECK(cudaSetDevice(dev));
  cudnnHandle_t h = handle_for(dev, stream_of(ctx));
  const ConvParams p{stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups};
  // The gradient of this call goes to a fresh f32 tensor (beta 0), then dw += it.
  Tensor tmp = Tensor::empty(dw.shape, DType::kF32, dw.device, ctx);
  const LowPlan& plan = low_plan(h, dev, kLowBackwardFilter, dy.dtype, x.shape, dw.shape, dy.shape,
                                 p, common_alignment({x.data, tmp.data_ptr(), dy.data}));
  if (!plan.plan) return false;
  execute_low(h, plan, x.data, tmp.data_ptr(), dy.data, dev, ctx);
  axpy(1.0, tmp.cview(), dw, ctx);
  return true;
}

}  // namespace frugal::cu
