// Gradient compressors of data-parallel training (f16 / bf16, int8, top-k, PowerSGD) with
// error feedback. Scalar loops over the flat f32 bucket: the work is linear in the bucket and
// small next to backward; the matrix products and QR of PowerSGD go through core / lowrank.
#include "frugal/parallel/compression.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "frugal/amp/cast.hpp"
#include "frugal/core/error.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/core/random.hpp"
#include "frugal/lowrank/svd.hpp"

namespace frugal::parallel {

namespace {

void check_grad(TensorView grad, const char* op) {
  FRUGAL_REQUIRE(grad.dtype == DType::kF32 && grad.is_contiguous() && grad.device.is_cpu(), op,
                 "bucket must be a contiguous f32 CPU tensor, got ", dtype_name(grad.dtype), " on ",
                 grad.device.str());
}

float* f32(TensorView v) { return v.data_as<float>(); }
float* f32(Tensor& t) { return t.view().data_as<float>(); }

// A (rows, cols) f32 matrix over memory owned elsewhere.
Tensor matrix(float* p, int64_t rows, int64_t cols) {
  return Tensor::wrap(p, {rows, cols}, DType::kF32);
}

}  // namespace

int64_t GradCompressor::sent_bytes(int64_t bucket) const {
  return bucket >= 0 && bucket < static_cast<int64_t>(buckets_.size()) ? buckets_[bucket].sent : 0;
}

Tensor GradCompressor::error(int64_t bucket) const {
  if (bucket < 0 || bucket >= static_cast<int64_t>(buckets_.size())) return {};
  return buckets_[bucket].error;
}

GradCompressor::BucketState& GradCompressor::state(int64_t bucket, int64_t n) {
  FRUGAL_REQUIRE(bucket >= 0, "GradCompressor", "bucket index ", bucket, " must be >= 0");
  if (bucket >= static_cast<int64_t>(buckets_.size())) buckets_.resize(bucket + 1);
  BucketState& s = buckets_[bucket];
  if (s.n == 0) s.n = n;
  FRUGAL_REQUIRE(s.n == n, "GradCompressor", "bucket ", bucket, " had ", s.n,
                 " elements and now has ", n, " (one compressor per DataParallel)");
  return s;
}

TensorView GradCompressor::add_error(BucketState& s, TensorView grad) {
  if (!error_feedback_) return grad;
  if (!s.error.defined()) s.error = Tensor::zeros({s.n}, DType::kF32);
  float* e = f32(s.error);
  const float* g = f32(grad);
  for (int64_t i = 0; i < s.n; ++i) e[i] += g[i];
  return s.error.view();
}

// out = float(x) (or out -= float(x)) for the n 16-bit values of x.
static void widen(const Tensor& x, DType dtype, float* out, bool subtract) {
  const int64_t n = x.numel();
  auto run = [&]<class T>() {
    const T* p = x.cview().data_as<T>();
    for (int64_t i = 0; i < n; ++i) {
      const float v = static_cast<float>(p[i]);
      out[i] = subtract ? out[i] - v : v;
    }
  };
  if (dtype == DType::kF16)
    run.template operator()<Half>();
  else
    run.template operator()<BFloat16>();
}

// ---- f16 / bf16 ------------------------------------------------------------------------------

CastCompressor::CastCompressor(DType dtype, bool error_feedback)
    : GradCompressor(error_feedback), dtype_(dtype) {
  FRUGAL_REQUIRE(dtype == DType::kF16 || dtype == DType::kBF16, "CastCompressor",
                 "dtype must be f16 or bf16, got ", dtype_name(dtype));
}

std::string CastCompressor::name() const { return dtype_ == DType::kF16 ? "fp16" : "bf16"; }

std::shared_ptr<Work> CastCompressor::start(int64_t bucket, const BucketLayout&, TensorView grad,
                                            Communicator& comm) {
  check_grad(grad, "CastCompressor");
  BucketState& s = state(bucket, grad.numel());
  TensorView m = add_error(s, grad);
  if (!s.payload.defined()) s.payload = Tensor::empty({s.n}, dtype_);
  // One thread: the bucket is small next to an arena hand-off, and the caller may be one of
  // several workers sharing the cores.
  ExecContext one;
  one.num_threads = 1;
  amp::cast_into(ConstTensorView(m), s.payload.view(), {}, one);
  if (error_feedback_) {
    float* e = f32(s.error);
    widen(s.payload, dtype_, e, /*subtract=*/true);
  }
  s.sent = s.payload.nbytes();
  ++s.steps;
  return comm.allreduce_async(s.payload.view(), ReduceOp::kAvg);
}

void CastCompressor::finish(int64_t bucket, TensorView grad, Communicator&) {
  BucketState& s = state(bucket, grad.numel());
  widen(s.payload, dtype_, f32(grad), /*subtract=*/false);
}

// ---- int8 ------------------------------------------------------------------------------------

Int8Compressor::Int8Compressor(bool error_feedback) : GradCompressor(error_feedback) {}

std::shared_ptr<Work> Int8Compressor::start(int64_t bucket, const BucketLayout&, TensorView grad,
                                            Communicator& comm) {
  check_grad(grad, "Int8Compressor");
  BucketState& s = state(bucket, grad.numel());
  TensorView mv = add_error(s, grad);
  float* m = f32(mv);
  const int64_t words = 1 + (s.n + 3) / 4;  // the scale, then 4 codes per word
  if (!s.payload.defined()) {
    s.payload = Tensor::zeros({words}, DType::kI32);
    s.gathered = Tensor::zeros({words * comm.size()}, DType::kI32);
  }
  float amax = 0;
  for (int64_t i = 0; i < s.n; ++i) amax = std::max(amax, std::abs(m[i]));
  const float scale = amax > 0 && std::isfinite(amax) ? amax / 127.f : 1.f;
  auto* w = s.payload.view().data_as<int32_t>();
  std::memcpy(w, &scale, sizeof(float));
  auto* q = reinterpret_cast<int8_t*>(w + 1);
  for (int64_t i = 0; i < s.n; ++i) {
    const float c = std::clamp(std::nearbyint(m[i] / scale), -127.f, 127.f);
    q[i] = static_cast<int8_t>(c);
    if (error_feedback_) m[i] -= c * scale;  // m becomes the residual m - D(C(m))
  }
  s.sent = s.payload.nbytes();
  ++s.steps;
  return comm.allgather_async(s.payload.cview(), s.gathered.view());
}

void Int8Compressor::finish(int64_t bucket, TensorView grad, Communicator& comm) {
  BucketState& s = state(bucket, grad.numel());
  const int64_t words = s.payload.numel();
  float* g = f32(grad);
  std::fill(g, g + s.n, 0.f);
  const auto* all = s.gathered.cview().data_as<int32_t>();
  for (int r = 0; r < comm.size(); ++r) {
    const int32_t* w = all + r * words;
    float scale;
    std::memcpy(&scale, w, sizeof(float));
    const auto* q = reinterpret_cast<const int8_t*>(w + 1);
    for (int64_t i = 0; i < s.n; ++i) g[i] += scale * static_cast<float>(q[i]);
  }
  const float inv = 1.f / static_cast<float>(comm.size());
  for (int64_t i = 0; i < s.n; ++i) g[i] *= inv;
}

// ---- top-k -----------------------------------------------------------------------------------

TopKCompressor::TopKCompressor(double ratio, bool error_feedback)
    : GradCompressor(error_feedback), ratio_(ratio) {
  FRUGAL_REQUIRE(ratio > 0 && ratio <= 1, "TopKCompressor", "ratio must be in (0, 1], got ", ratio);
}

std::string TopKCompressor::name() const {
  char buf[32];
  std::snprintf(buf, sizeof buf, "topk%g", ratio_);
  return buf;
}

std::shared_ptr<Work> TopKCompressor::start(int64_t bucket, const BucketLayout&, TensorView grad,
                                            Communicator& comm) {
  check_grad(grad, "TopKCompressor");
  FRUGAL_REQUIRE(grad.numel() < (int64_t{1} << 31), "TopKCompressor", "bucket of ", grad.numel(),
                 " elements: indices are sent as int32");
  BucketState& s = state(bucket, grad.numel());
  TensorView mv = add_error(s, grad);
  float* m = f32(mv);
  const int64_t k = std::clamp<int64_t>(
      static_cast<int64_t>(std::ceil(ratio_ * static_cast<double>(s.n))), 1, s.n);
  if (!s.payload.defined()) {
    s.payload = Tensor::zeros({2 * k}, DType::kI32);
    s.gathered = Tensor::zeros({2 * k * comm.size()}, DType::kI32);
  }
  Tensor a = Tensor::empty({s.n}, DType::kF32);
  float* ap = f32(a);
  for (int64_t i = 0; i < s.n; ++i) ap[i] = std::abs(m[i]);
  TopK top = topk(a.cview(), k, 0, true);
  const auto* idx = top.indices.cview().data_as<int64_t>();
  auto* w = s.payload.view().data_as<int32_t>();
  for (int64_t j = 0; j < k; ++j) {
    const int64_t i = idx[j];
    std::memcpy(w + j, m + i, sizeof(float));
    w[k + j] = static_cast<int32_t>(i);
    if (error_feedback_) m[i] = 0;  // the residual keeps everything not sent
  }
  s.sent = s.payload.nbytes();
  ++s.steps;
  return comm.allgather_async(s.payload.cview(), s.gathered.view());
}

void TopKCompressor::finish(int64_t bucket, TensorView grad, Communicator& comm) {
  BucketState& s = state(bucket, grad.numel());
  const int64_t k = s.payload.numel() / 2;
  float* g = f32(grad);
  std::fill(g, g + s.n, 0.f);
  const auto* all = s.gathered.cview().data_as<int32_t>();
  for (int r = 0; r < comm.size(); ++r) {
    const int32_t* w = all + r * 2 * k;
    for (int64_t j = 0; j < k; ++j) {
      float v;
      std::memcpy(&v, w + j, sizeof(float));
      g[w[k + j]] += v;
    }
  }
  const float inv = 1.f / static_cast<float>(comm.size());
  for (int64_t i = 0; i < s.n; ++i) g[i] *= inv;
}

// ---- PowerSGD --------------------------------------------------------------------------------

PowerSgdCompressor::PowerSgdCompressor(const PowerSgdOptions& options)
    : GradCompressor(options.error_feedback), options_(options) {
  FRUGAL_REQUIRE(options.rank >= 1, "PowerSgdCompressor", "rank must be >= 1, got ", options.rank);
  FRUGAL_REQUIRE(options.start_step >= 0, "PowerSgdCompressor", "start_step must be >= 0, got ",
                 options.start_step);
}

std::string PowerSgdCompressor::name() const { return "powersgd" + std::to_string(options_.rank); }

namespace {
struct MatrixShape {
  int64_t rows, cols, r;
};
MatrixShape matrix_shape(const Shape& shape, int64_t rank) {
  int64_t numel = 1;
  for (int d = 0; d < shape.size(); ++d) numel *= shape[d];
  if (shape.size() < 2 || numel == 0) return {0, 0, 0};
  const int64_t rows = shape[0], cols = numel / rows;
  const int64_t r = std::min({rank, rows, cols});
  if (r * (rows + cols) >= rows * cols) return {0, 0, 0};  // not worth compressing
  return {rows, cols, r};
}

// A fresh random Q (cols, r), the same on every rank: key = seed, counter from bucket / matrix /
// refresh so that different matrices and refreshes draw different numbers.
Tensor random_q(uint64_t seed, int64_t bucket, int64_t j, int64_t refresh, int64_t cols,
                int64_t r) {
  ExecContext ctx;
  ctx.seed = seed;
  ctx.offset = (static_cast<uint64_t>(bucket) << 48) ^ (static_cast<uint64_t>(j) << 32) ^
               (static_cast<uint64_t>(refresh) << 20);
  return rand_normal({cols, r}, DType::kF32, Device::cpu(), ctx);
}
}  // namespace

std::shared_ptr<Work> PowerSgdCompressor::start(int64_t bucket, const BucketLayout& layout,
                                                TensorView grad, Communicator& comm) {
  check_grad(grad, "PowerSgdCompressor");
  BucketState& s = state(bucket, grad.numel());
  if (bucket >= static_cast<int64_t>(layouts_.size())) layouts_.resize(bucket + 1);
  if (layouts_[bucket].offsets.empty()) {
    FRUGAL_REQUIRE(layout.offsets.size() == layout.shapes.size(), "PowerSgdCompressor",
                   "layout has ", layout.offsets.size(), " offsets and ", layout.shapes.size(),
                   " shapes");
    layouts_[bucket] = layout;
    int64_t rest = 0;
    for (size_t i = 0; i < layout.shapes.size(); ++i) {
      MatrixShape ms = matrix_shape(layout.shapes[i], options_.rank);
      if (ms.r > 0) {
        s.matrix.push_back(static_cast<int>(i));
        s.q.push_back(random_q(options_.seed, bucket, static_cast<int64_t>(i), 0, ms.cols, ms.r));
        s.p.emplace_back();
      } else {
        int64_t numel = 1;
        for (int d = 0; d < layout.shapes[i].size(); ++d) numel *= layout.shapes[i][d];
        rest += numel;
      }
    }
    int64_t words = rest;
    for (size_t j = 0; j < s.matrix.size(); ++j)
      words += matrix_shape(layout.shapes[s.matrix[j]], options_.rank).rows * s.q[j].dim(1);
    s.payload = Tensor::zeros({words}, DType::kF32);
    s.rest = Tensor::zeros({rest}, DType::kF32);
  }
  const BucketLayout& lay = layouts_[bucket];
  s.compressed = s.steps >= options_.start_step && !s.matrix.empty();
  ++s.steps;
  if (!s.compressed) {
    // The first start_step steps (PyTorch's start_powerSGD_iter): the plain average, no
    // residual (compression error early in training hurts most, Vogels et al. §4).
    s.sent = grad.nbytes();
    return comm.allreduce_async(grad, ReduceOp::kAvg);
  }
  if (!options_.warm_start && s.steps > 1) {
    for (size_t j = 0; j < s.matrix.size(); ++j)
      s.q[j] = random_q(options_.seed, bucket, s.matrix[j], s.steps, s.q[j].dim(0), s.q[j].dim(1));
  }
  TensorView mv = add_error(s, grad);
  float* m = f32(mv);
  float* pay = f32(s.payload);
  int64_t at = 0;
  for (size_t j = 0; j < s.matrix.size(); ++j) {
    const int i = s.matrix[j];
    const MatrixShape ms = matrix_shape(lay.shapes[i], options_.rank);
    Tensor mj = matrix(m + lay.offsets[i], ms.rows, ms.cols);
    Tensor pj = matrix(pay + at, ms.rows, ms.r);
    gemm_into(mj.cview(), s.q[j].cview(), pj.view());  // P = M Q   (rows, r)
    at += ms.rows * ms.r;
  }
  std::vector<bool> in_matrix(lay.shapes.size(), false);
  for (int i : s.matrix) in_matrix[i] = true;
  for (size_t i = 0; i < lay.shapes.size(); ++i) {
    if (in_matrix[i]) continue;
    int64_t numel = 1;
    for (int d = 0; d < lay.shapes[i].size(); ++d) numel *= lay.shapes[i][d];
    std::memcpy(pay + at, m + lay.offsets[i], sizeof(float) * numel);
    if (error_feedback_) std::fill(m + lay.offsets[i], m + lay.offsets[i] + numel, 0.f);
    at += numel;
  }
  s.sent = s.payload.nbytes();
  return comm.allreduce_async(s.payload.view(), ReduceOp::kAvg);
}

void PowerSgdCompressor::finish(int64_t bucket, TensorView grad, Communicator& comm) {
  BucketState& s = state(bucket, grad.numel());
  if (!s.compressed) return;  // grad itself was averaged
  const BucketLayout& lay = layouts_[bucket];
  float* g = f32(grad);
  // M: the residual buffer holds g + e (error feedback), else grad still holds M.
  float* m = error_feedback_ ? f32(s.error) : g;
  float* pay = f32(s.payload);
  // Orthogonalise each averaged P (its Q factor), then Q = M^T P for all matrices, one
  // all-reduce of the Qs.
  int64_t qwords = 0;
  for (auto& q : s.q) qwords += q.numel();
  Tensor qbuf = Tensor::empty({qwords}, DType::kF32);
  int64_t at = 0, qat = 0;
  for (size_t j = 0; j < s.matrix.size(); ++j) {
    const int i = s.matrix[j];
    const MatrixShape ms = matrix_shape(lay.shapes[i], options_.rank);
    Tensor pj = matrix(pay + at, ms.rows, ms.r);
    s.p[j] = lowrank::qr(pj.cview()).q;  // (rows, r) orthonormal columns
    Tensor mj = matrix(m + lay.offsets[i], ms.rows, ms.cols);
    Tensor qj = matrix(f32(qbuf) + qat, ms.cols, ms.r);
    GemmOptions t;
    t.trans_a = true;
    gemm_into(mj.cview(), s.p[j].cview(), qj.view(), t);  // Q = M^T P   (cols, r)
    at += ms.rows * ms.r;
    qat += ms.cols * ms.r;
  }
  comm.allreduce(qbuf.view(), ReduceOp::kAvg);
  s.sent += qbuf.nbytes();
  qat = 0;
  for (size_t j = 0; j < s.matrix.size(); ++j) {
    const int i = s.matrix[j];
    const MatrixShape ms = matrix_shape(lay.shapes[i], options_.rank);
    Tensor qj = matrix(f32(qbuf) + qat, ms.cols, ms.r);
    GemmOptions t;
    t.trans_b = true;
    Tensor approx = gemm(s.p[j].cview(), qj.cview(), t);  // P Q^T   (rows, cols)
    const float* a = approx.cview().data_as<float>();
    float* mi = m + lay.offsets[i];
    float* gi = g + lay.offsets[i];
    const int64_t numel = ms.rows * ms.cols;
    for (int64_t k = 0; k < numel; ++k) {
      if (error_feedback_) mi[k] -= a[k];  // residual M - P Q^T
      gi[k] = a[k];
    }
    s.q[j].copy_from(qj.cview());  // warm start of the next step
    qat += ms.cols * ms.r;
  }
  // The uncompressed gradients come back averaged behind the Ps.
  std::vector<bool> in_matrix(lay.shapes.size(), false);
  for (int i : s.matrix) in_matrix[i] = true;
  for (size_t i = 0; i < lay.shapes.size(); ++i) {
    if (in_matrix[i]) continue;
    int64_t numel = 1;
    for (int d = 0; d < lay.shapes[i].size(); ++d) numel *= lay.shapes[i][d];
    std::memcpy(g + lay.offsets[i], pay + at, sizeof(float) * numel);
    at += numel;
  }
}

Tensor PowerSgdCompressor::q_factor(int64_t bucket, int64_t j) const {
  if (bucket < 0 || bucket >= static_cast<int64_t>(buckets_.size())) return {};
  const auto& q = buckets_[bucket].q;
  return j >= 0 && j < static_cast<int64_t>(q.size()) ? q[j] : Tensor{};
}

// ---- by name ---------------------------------------------------------------------------------

std::shared_ptr<GradCompressor> make_compressor(const std::string& name, bool error_feedback) {
  constexpr const char* kOp = "make_compressor";
  if (name == "none" || name.empty()) return nullptr;
  if (name == "fp16") return std::make_shared<CastCompressor>(DType::kF16, error_feedback);
  if (name == "bf16") return std::make_shared<CastCompressor>(DType::kBF16, error_feedback);
  if (name == "int8") return std::make_shared<Int8Compressor>(error_feedback);
  auto number = [&](size_t prefix) {
    const std::string tail = name.substr(prefix);
    char* end = nullptr;
    const double v = std::strtod(tail.c_str(), &end);
    FRUGAL_REQUIRE(!tail.empty() && end && *end == '\0', kOp, "bad number in '", name, "'");
    return v;
  };
  if (name.rfind("topk", 0) == 0)
    return std::make_shared<TopKCompressor>(number(4), error_feedback);
  if (name.rfind("powersgd", 0) == 0) {
    PowerSgdOptions o;
    o.rank = static_cast<int64_t>(number(8));
    o.error_feedback = error_feedback;
    return std::make_shared<PowerSgdCompressor>(o);
  }
  detail::fail(ErrorCode::kInvalidArgument, kOp, "unknown compressor '", name,
               "' (none, fp16, bf16, int8, topk<ratio>, powersgd<rank>)");
}

}  // namespace frugal::parallel
