// QAT layers, quantized inference layers and the PTQ / QAT conversion flows
// (include/frugal/nn/quant_layers.hpp).
#include "frugal/nn/quant_layers.hpp"

#include <tbb/parallel_for.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "frugal/core/error.hpp"
#include "frugal/core/ops.hpp"
#include "frugal/nn/train.hpp"
#include "frugal/quant/fake_quant.hpp"
#include "frugal/quant/qgemm.hpp"
#include "nn/basic_ops.hpp"

namespace frugal::nn {
namespace {

using quant::Granularity;
using quant::QParams;
using quant::QuantSpec;

/// x as contiguous rows (N, cols).
Tensor as_rows(const Tensor& x, int64_t cols, const ExecContext& ctx) {
  const Tensor c = x.contiguous(ctx);
  return c.reshape({c.numel() / cols, cols});
}

Shape with_last(Shape s, int64_t last) {
  s[s.rank() - 1] = last;
  return s;
}

/// A weight spec a layer can use: per channel along axis 0 or per group along axis 1 of the
/// (out, K) view; the group fitted to K.
QuantSpec checked_weight_spec(const char* op, QuantSpec spec, int64_t k) {
  FRUGAL_REQUIRE(spec.bits >= 2 && spec.bits <= 8, op, "weight bits ", spec.bits, " outside 2..8");
  FRUGAL_REQUIRE((spec.granularity == Granularity::kPerChannel && spec.axis == 0) ||
                     (spec.granularity == Granularity::kPerGroup && spec.axis == 1),
                 op, "weight spec must be per channel along axis 0 or per group along axis 1");
  return fit_group_size(spec, k);
}

void check_activation_spec(const char* op, const QuantSpec& spec) {
  FRUGAL_REQUIRE(spec.bits >= 2 && spec.bits <= 8, op, "activation bits ", spec.bits,
                 " outside 2..8");
  FRUGAL_REQUIRE(spec.granularity == Granularity::kPerTensor, op,
                 "activation spec must be per tensor");
}

/// {} f32 / i32 parameters on `device`.
QParams scalar_qparams(float scale, int32_t zp, Device device) {
  return {Tensor::full({}, scale, DType::kF32).to(device),
          Tensor::full({}, zp, DType::kI32).to(device)};
}

/// Keeps a learned scale positive and finite (an optimizer step may push it through zero).
void clamp_scale(Tensor& scale) {
  std::vector<float> v = scale.to(Device::cpu()).to_vector<float>();
  bool changed = false;
  for (float& s : v) {
    if (!(s >= 1e-8f) || !std::isfinite(s)) {
      s = std::isfinite(s) && s > 0 ? s : 1e-8f;
      s = std::max(s, 1e-8f);
      changed = true;
    }
  }
  if (changed) scale.copy_from(Tensor::from_vector(v, scale.shape()).to(scale.device()));
}

void accumulate(Tensor& grad, const Tensor& g, const ExecContext& ctx) {
  axpy(1.0, g.reshape(grad.shape()), grad, ctx);
}

QatOptions checked_qat_options(const char* op, QatOptions opt, int64_t k) {
  opt.weight = checked_weight_spec(op, opt.weight, k);
  check_activation_spec(op, opt.activation);
  FRUGAL_REQUIRE(opt.observe_steps >= 0, op, "observe_steps ", opt.observe_steps, " < 0");
  FRUGAL_REQUIRE(opt.averaging_constant > 0 && opt.averaging_constant <= 1, op,
                 "averaging_constant ", opt.averaging_constant, " outside (0, 1]");
  return opt;
}

}  // namespace

// ---- specs --------------------------------------------------------------------------------------

QuantSpec int8_weight_spec() {
  QuantSpec s;
  s.bits = 8;
  s.symmetric = true;
  s.is_signed = true;
  s.narrow_range = true;
  s.granularity = Granularity::kPerChannel;
  s.axis = 0;
  return s;
}

QuantSpec int4_group_weight_spec(int64_t group_size) {
  QuantSpec s;
  s.bits = 4;
  s.symmetric = true;
  s.is_signed = true;
  s.granularity = Granularity::kPerGroup;
  s.axis = 1;
  s.group_size = group_size;
  return s;
}

QuantSpec int8_activation_spec() {
  QuantSpec s;
  s.bits = 8;
  s.symmetric = false;
  s.is_signed = false;
  s.granularity = Granularity::kPerTensor;
  return s;
}

QuantSpec fit_group_size(QuantSpec spec, int64_t k) {
  if (spec.granularity != Granularity::kPerGroup || k <= 0) return spec;
  FRUGAL_REQUIRE(spec.group_size > 0, "fit_group_size", "group size ", spec.group_size,
                 " must be > 0");
  int64_t g = std::min(spec.group_size, k);
  while (k % g != 0) --g;
  spec.group_size = g;
  return spec;
}

// ---- QatLayer ----------------------------------------------------------------------------------

QatLayer::QatLayer(const char* op, const Parameter& layer_weight, const Parameter* layer_bias,
                   const ExecContext& ctx, bool training, const QatOptions& options, int64_t out,
                   int64_t k)
    : op_(op),
      out_(out),
      k_(k),
      opt_(checked_qat_options(op, options, k)),
      observer_(std::make_unique<quant::MovingAverageMinMaxObserver>(options.averaging_constant)) {
  ctx_ = ctx;
  train(training);
  weight_ = &register_parameter("weight", layer_weight.value.clone(ctx_), layer_weight.trainable);
  if (layer_bias != nullptr) {
    bias_ = &register_parameter("bias", layer_bias->value.clone(ctx_), layer_bias->trainable);
  }
  const Tensor& w = weight_->value;
  if (opt_.learn_scale) {
    const Shape ws = quant::qparams_shape(Shape{out_, k_}, opt_.weight);
    weight_scale_ =
        &register_parameter("weight_scale", Tensor::full(ws, 1.0, DType::kF32, w.device()));
    if (opt_.quantize_input) {
      input_scale_ =
          &register_parameter("input_scale", Tensor::full({}, 1.0, DType::kF32, w.device()));
    }
  }
}

quant::QParams QatLayer::weight_qparams() {
  return forward_weight_qparams(weight_->value.reshape({out_, k_}));
}

quant::QParams QatLayer::input_qparams() {
  FRUGAL_REQUIRE(aq_.scale.defined(), op_, "no input observed yet");
  return aq_;
}

void QatLayer::count_step() {
  if (!is_training()) return;
  ++steps_;
  if (steps_ > opt_.observe_steps && !frozen_) frozen_ = true;
}

quant::QParams QatLayer::forward_weight_qparams(const Tensor& w2d) {
  if (frozen_ && wq_.scale.defined()) {
    if (weight_scale_ != nullptr) {
      clamp_scale(weight_scale_->value);
      wq_.scale = weight_scale_->value;
    }
    return wq_;
  }
  wq_ = quant::minmax_qparams(w2d, opt_.weight, ctx_);
  if (weight_scale_ != nullptr) weight_scale_->value.copy_from(wq_.scale, ctx_);
  return wq_;
}

quant::QParams QatLayer::forward_input_qparams(const Tensor& x) {
  if ((is_training() && !frozen_) || !observer_->has_data()) {
    observer_->observe(x, ctx_);
    const QParams q = observer_->qparams(opt_.activation);
    aq_ = {q.scale.to(x.device(), ctx_), q.zero_point.to(x.device(), ctx_)};
    if (input_scale_ != nullptr) input_scale_->value.copy_from(aq_.scale, ctx_);
    return aq_;
  }
  if (frozen_ && input_scale_ != nullptr) {
    clamp_scale(input_scale_->value);
    aq_.scale = input_scale_->value;
  }
  return aq_;
}

Tensor QatLayer::weight_grad(const Tensor& g_wq, const Tensor& w2d) {
  if (weight_scale_ != nullptr && frozen_ && weight_scale_->trainable) {
    quant::LsqGrads r = quant::fake_quantize_backward_lsq(g_wq, w2d, opt_.weight, wq_, 0.0, ctx_);
    accumulate(weight_scale_->grad, r.grad_scale, ctx_);
    return r.grad_x;
  }
  return quant::fake_quantize_backward_ste(g_wq, w2d, opt_.weight, wq_, ctx_);
}

Tensor QatLayer::input_grad(const Tensor& g_xq, const Tensor& x) {
  if (!opt_.quantize_input) return g_xq;
  if (input_scale_ != nullptr && frozen_ && input_scale_->trainable) {
    quant::LsqGrads r = quant::fake_quantize_backward_lsq(g_xq, x, opt_.activation, aq_, 0.0, ctx_);
    accumulate(input_scale_->grad, r.grad_scale, ctx_);
    return r.grad_x;
  }
  return quant::fake_quantize_backward_ste(g_xq, x, opt_.activation, aq_, ctx_);
}

// ---- QatLinear ----------------------------------------------------------------------------------

QatLinear::QatLinear(Linear& layer, const QatOptions& options)
    : QatLayer("QatLinear", layer.weight(), layer.bias(), layer.context(), layer.is_training(),
               options, layer.out_features(), layer.in_features()) {}

Tensor QatLinear::forward(const Tensor& input) {
  const Tensor& w = weight_->value;
  FRUGAL_REQUIRE(input.defined(), op_, "input is undefined");
  FRUGAL_REQUIRE(input.rank() >= 1 && input.dim(-1) == k_, op_, "input has shape ", input.shape(),
                 "; expected (..., ", k_, ")");
  FRUGAL_REQUIRE(input.device() == w.device() && input.dtype() == w.dtype(), op_,
                 "input must have the layer's device and dtype");
  count_step();
  x_ = as_rows(input, k_, ctx_);  // (N, in)
  in_shape_ = input.shape();
  out_shape_ = with_last(input.shape(), out_);
  wfq_ = quant::fake_quantize(w, opt_.weight, forward_weight_qparams(w), ctx_);  // (out, in)
  xq_ = x_;
  if (opt_.quantize_input)
    xq_ = quant::fake_quantize(x_, opt_.activation, forward_input_qparams(x_), ctx_);
  Tensor y = Tensor::empty({x_.dim(0), out_}, w.dtype(), w.device(), ctx_);
  gemm_into(xq_, wfq_, y, GemmOptions{.trans_b = true}, ctx_);
  if (bias_ != nullptr) linear_add_bias(y, bias_->value, ctx_);
  return y.reshape(out_shape_);
}

Tensor QatLinear::backward(const Tensor& grad_output) {
  const char* op = "QatLinear::backward";
  FRUGAL_REQUIRE(x_.defined(), op, "called before forward");
  FRUGAL_REQUIRE(grad_output.defined() && grad_output.shape() == out_shape_, op,
                 "grad_output has shape ", grad_output.defined() ? grad_output.shape() : Shape{},
                 "; expected ", out_shape_);
  FRUGAL_REQUIRE(grad_output.device() == x_.device() && grad_output.dtype() == x_.dtype(), op,
                 "grad_output must have the layer's device and dtype");
  const Tensor g = as_rows(grad_output, out_, ctx_);  // (N, out)
  if (weight_->trainable) {
    const Tensor g_wq = gemm(g, xq_, GemmOptions{.trans_a = true}, ctx_);  // (out, in)
    accumulate(weight_->grad, weight_grad(g_wq, weight_->value), ctx_);
  }
  if (bias_ != nullptr && bias_->trainable) linear_bias_grad(g, bias_->grad, ctx_);
  const Tensor g_xq = gemm(g, wfq_, GemmOptions{}, ctx_);  // (N, in)
  return input_grad(g_xq, x_).reshape(in_shape_);
}

// ---- QatConv2d ----------------------------------------------------------------------------------

QatConv2d::QatConv2d(Conv2d& layer, const QatOptions& options)
    : QatLayer("QatConv2d", layer.weight(), layer.bias(), layer.context(), layer.is_training(),
               options, layer.out_channels(), layer.weight().value.numel() / layer.out_channels()),
      in_channels_(layer.in_channels()),
      kernel_(layer.kernel_size()),
      params_(layer.params()) {}

Tensor QatConv2d::forward(const Tensor& input) {
  const Tensor& w = weight_->value;
  FRUGAL_REQUIRE(input.defined(), op_, "input is undefined");
  FRUGAL_REQUIRE(input.rank() == 4 && input.dim(1) == in_channels_, op_, "input has shape ",
                 input.shape(), "; expected (N, ", in_channels_, ", H, W)");
  FRUGAL_REQUIRE(input.device() == w.device() && input.dtype() == w.dtype(), op_,
                 "input must have the layer's device and dtype");
  count_step();
  const Tensor w2 = w.reshape({out_, k_});  // (out, K)
  wfq_ = quant::fake_quantize(w2, opt_.weight, forward_weight_qparams(w2), ctx_).reshape(w.shape());
  x_ = input.contiguous(ctx_);
  xq_ = x_;
  if (opt_.quantize_input)
    xq_ = quant::fake_quantize(x_, opt_.activation, forward_input_qparams(x_), ctx_);
  return conv2d(xq_, wfq_, bias_ != nullptr ? bias_->value.cview() : ConstTensorView{}, params_,
                ctx_);
}

Tensor QatConv2d::backward(const Tensor& grad_output) {
  const char* op = "QatConv2d::backward";
  FRUGAL_REQUIRE(x_.defined(), op, "called before forward");
  FRUGAL_REQUIRE(grad_output.defined() && grad_output.rank() == 4 &&
                     grad_output.dim(0) == x_.dim(0) && grad_output.dim(1) == out_,
                 op, "grad_output has shape ",
                 grad_output.defined() ? grad_output.shape() : Shape{}, "; expected (", x_.dim(0),
                 ", ", out_, ", H_out, W_out)");
  const Tensor g = grad_output.contiguous(ctx_);
  const Tensor& w = weight_->value;
  if (weight_->trainable) {
    Tensor g_wq = Tensor::zeros(w.shape(), w.dtype(), w.device(), ctx_);
    conv2d_backward_weight(g, xq_, g_wq, params_, ctx_);
    accumulate(weight_->grad, weight_grad(g_wq.reshape({out_, k_}), w.reshape({out_, k_})), ctx_);
  }
  if (bias_ != nullptr && bias_->trainable) conv2d_backward_bias(g, bias_->grad, ctx_);
  const Tensor g_xq = conv2d_backward_input(g, wfq_, x_.shape(), params_, ctx_);
  return input_grad(g_xq, x_);
}

// ---- quantized inference layers -----------------------------------------------------------------

namespace {

constexpr int64_t kWoqMaxRows = 16;  // weight-only: woq_matmul below, dequantize + GEMM from here

/// True when every value of the f32 tensor t is a normal f16 number exactly (so t can be stored as
/// f16 without loss and without f16's subnormal range, where the relative precision drops).
bool is_normal_f16(const Tensor& t) {
  const std::vector<float> v = t.to(Device::cpu()).to_vector<float>();
  const std::vector<float> r =
      t.to(Device::cpu()).to(DType::kF16).to(DType::kF32).to_vector<float>();
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (v[i] != r[i] || !std::isfinite(v[i]) || !(std::abs(v[i]) >= 0x1p-14f)) return false;
  }
  return true;
}

/// Per-channel min-max weight scales rounded to the nearest f16 (as ggml's Q8_0 stores its block
/// scales), so that the layer stores them in 2 bytes instead of 4; the codes are then computed on
/// the rounded grid. A relative change of at most 2^-11 of each scale: the dequantized weight
/// stays within half a step of the weight, plus at most 127 * 2^-11 ~ 0.06 step where the
/// largest element clamps to the edge code.
/// Scales outside f16's normal range (below 2^-14 ~ 6.1e-5 or above 65504) stay as they are.
Tensor f16_rounded(const Tensor& scale) {
  const Tensor r = scale.to(DType::kF16).to(DType::kF32);
  return is_normal_f16(r) ? r : scale;
}

/// The weight scales as stored: f16 when that is exact (is_normal_f16), else f32.
Tensor compact_scale(const Tensor& scale) {
  return is_normal_f16(scale) ? scale.to(DType::kF16) : scale;
}

/// The stored weight scales as f32 (what the GEMMs and QTensor take; exact).
Tensor scale_f32(const QuantizedWeight& w) {
  return w.scale->dtype() == DType::kF32 ? *w.scale : w.scale->to(DType::kF32);
}

/// Quantizes `w2` (out, K) f32 into buffers of `m` and fills `qw`.
void init_quantized_weight(const char* op, Module& m, QuantizedWeight& qw,
                           Tensor& (*reg)(Module&, const std::string&, Tensor), const Tensor& w2,
                           const QuantSpec& spec, const std::optional<QParams>& wqp,
                           const std::optional<ActivationQuant>& input) {
  QParams qp = wqp ? QParams{wqp->scale.to(w2.device()), wqp->zero_point.to(w2.device())}
                   : quant::minmax_qparams(w2, spec);
  if (!wqp && spec.granularity == Granularity::kPerChannel) qp.scale = f16_rounded(qp.scale);
  quant::QTensor q = quant::quantize(w2, spec, qp);
  qw.spec = spec;
  qw.shape = w2.shape();
  qw.codes = &reg(m, "weight_codes", q.codes);
  qw.scale = &reg(m, "weight_scale",
                  spec.granularity == Granularity::kPerChannel ? compact_scale(q.qparams.scale)
                                                               : q.qparams.scale);
  qw.zero_point = &reg(m, "weight_zero_point", q.qparams.zero_point);
  if (input) {
    check_activation_spec(op, input->spec);
    FRUGAL_REQUIRE(input->spec.bits == 8, op, "W8A8 needs an 8-bit input spec, got ",
                   input->spec.bits, " bits");
    FRUGAL_REQUIRE(spec.bits == 8 && spec.symmetric && spec.is_signed &&
                       spec.granularity == Granularity::kPerChannel,
                   op, "W8A8 needs 8-bit symmetric signed per-channel weights");
    FRUGAL_REQUIRE(input->qparams.scale.defined() && input->qparams.scale.numel() == 1 &&
                       input->qparams.zero_point.defined() &&
                       input->qparams.zero_point.numel() == 1,
                   op, "the input needs per-tensor parameters");
    qw.has_input = true;
    qw.input_spec = input->spec;
    qw.input_scale_host =
        input->qparams.scale.to(Device::cpu()).to(DType::kF32).reshape({}).to_vector<float>()[0];
    qw.input_zero_point_host = input->qparams.zero_point.to(Device::cpu())
                                   .to(DType::kI32)
                                   .reshape({})
                                   .to_vector<int32_t>()[0];
    FRUGAL_REQUIRE(std::isfinite(qw.input_scale_host) && qw.input_scale_host > 0, op,
                   "input scale ", qw.input_scale_host, " must be finite and > 0");
    FRUGAL_REQUIRE(qw.input_zero_point_host >= input->spec.qmin() &&
                       qw.input_zero_point_host <= input->spec.qmax(),
                   op, "input zero point ", qw.input_zero_point_host, " outside the code range");
    const QParams s = scalar_qparams(qw.input_scale_host, qw.input_zero_point_host, w2.device());
    qw.input_scale = &reg(m, "input_scale", s.scale);
    qw.input_zero_point = &reg(m, "input_zero_point", s.zero_point);
  } else {
    FRUGAL_REQUIRE(spec.symmetric && spec.is_signed, op,
                   "weight-only quantization needs symmetric signed weights");
  }
}

quant::QTensor make_qtensor(const QuantizedWeight& w) {
  return {*w.codes, w.spec, {scale_f32(w), *w.zero_point}, w.shape};
}

std::optional<ActivationQuant> make_input(const QuantizedWeight& w) {
  if (!w.has_input) return std::nullopt;
  return ActivationQuant{w.input_spec, {*w.input_scale, *w.input_zero_point}};
}

int64_t weight_nbytes(const QuantizedWeight& w, const Tensor* bias) {
  int64_t n = w.codes->nbytes() + w.scale->nbytes();
  if (!w.spec.symmetric) n += w.zero_point->nbytes();
  if (bias != nullptr) n += bias->nbytes();
  if (w.has_input) n += 4 + (w.input_spec.symmetric ? 0 : 4);
  return n;
}

std::string scheme_name(const QuantizedWeight& w) {
  std::string s = "w" + std::to_string(w.spec.bits);
  if (w.spec.granularity == Granularity::kPerGroup) {
    s += " g" + std::to_string(w.spec.group_size);
  } else {
    s += " per-channel";
  }
  if (w.has_input) s = "w" + std::to_string(w.spec.bits) + "a" + std::to_string(w.input_spec.bits);
  return s;
}

/// Registers a buffer through the protected member (a helper shared by both layer types).
struct BufferRegistrar : Module {
  static Tensor& reg(Module& m, const std::string& name, Tensor t) {
    return (m.*(&BufferRegistrar::register_buffer))(name, std::move(t));
  }
};

/// im2col of one-byte codes (N, C, H, W) -> (N * Ho * Wo, kh * kw * C), padding with `pad`:
/// the codes are first laid out as NHWC so that every (i, j) tap copies C contiguous bytes.
/// Column (i, j, ci) of row (b, oh, ow) is x[b, ci, oh * sh - ph + i * dh, ow * sw - pw + j * dw],
/// which is why the W8A8 CPU path multiplies by the kernel in (out, kh, kw, C) order.
Tensor im2col_codes(const Tensor& x, int64_t kh, int64_t kw, const Conv2dParams& p, int64_t ho,
                    int64_t wo, uint8_t pad, const ExecContext& ctx) {
  const int64_t n = x.dim(0), c = x.dim(1), h = x.dim(2), wd = x.dim(3);
  const int64_t k = c * kh * kw;
  Tensor nhwc = Tensor::empty({n, h, wd, c}, x.dtype(), Device::cpu());
  Tensor cols = Tensor::empty({n * ho * wo, k}, x.dtype(), Device::cpu());
  const auto* src = static_cast<const uint8_t*>(x.data_ptr());
  auto* t = static_cast<uint8_t*>(nhwc.data_ptr());
  auto* dst = static_cast<uint8_t*>(cols.data_ptr());
  const int64_t sh = p.stride.h, sw = p.stride.w, ph = p.padding.h, pw = p.padding.w;
  const int64_t dh = p.dilation.h, dw = p.dilation.w;
  ctx.run([&] {
    // Locals only in the bodies: byte stores may alias anything captured by reference.
    tbb::parallel_for(int64_t{0}, n, [=](int64_t b) {
      const int64_t plane = h * wd;
      for (int64_t ci = 0; ci < c; ++ci) {
        const uint8_t* s = src + (b * c + ci) * plane;
        uint8_t* o = t + b * plane * c + ci;
        for (int64_t q = 0; q < plane; ++q) o[q * c] = s[q];
      }
    });
    tbb::parallel_for(int64_t{0}, n * ho, [=](int64_t r) {
      const int64_t b = r / ho, oh = r % ho;
      uint8_t* out = dst + r * wo * k;
      for (int64_t ow = 0; ow < wo; ++ow, out += k) {
        uint8_t* o = out;
        for (int64_t i = 0; i < kh; ++i) {
          const int64_t ih = oh * sh - ph + i * dh;
          for (int64_t j = 0; j < kw; ++j, o += c) {
            const int64_t iw = ow * sw - pw + j * dw;
            if (ih >= 0 && ih < h && iw >= 0 && iw < wd) {
              std::memcpy(o, t + ((b * h + ih) * wd + iw) * c, static_cast<std::size_t>(c));
            } else {
              std::memset(o, pad, static_cast<std::size_t>(c));
            }
          }
        }
      }
    });
  });
  return cols;
}

/// The kernel codes (out, C, kh, kw) reordered to (out, kh, kw, C) (one-byte codes).
Tensor codes_to_hwc(const Tensor& codes, const Shape& wshape) {
  const int64_t out = wshape[0], c = wshape[1], kh = wshape[2], kw = wshape[3];
  const Tensor h = codes.to(Device::cpu());
  Tensor r = Tensor::empty({out, c * kh * kw}, h.dtype(), Device::cpu());
  const auto* s = static_cast<const uint8_t*>(h.data_ptr());
  auto* d = static_cast<uint8_t*>(r.data_ptr());
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t ci = 0; ci < c; ++ci) {
      for (int64_t q = 0; q < kh * kw; ++q)
        d[(o * kh * kw + q) * c + ci] = s[(o * c + ci) * kh * kw + q];
    }
  }
  return r;
}

}  // namespace

QuantizedLinear::QuantizedLinear(const Tensor& weight, const Tensor& bias,
                                 const quant::QuantSpec& weight_spec,
                                 std::optional<ActivationQuant> input,
                                 std::optional<quant::QParams> weight_qparams) {
  const char* op = "QuantizedLinear";
  FRUGAL_REQUIRE(weight.defined() && weight.rank() == 2 && weight.numel() > 0, op,
                 "weight must be a non-empty (out, in) tensor");
  FRUGAL_REQUIRE(weight.dtype() == DType::kF32, op, "weight has dtype ", dtype_name(weight.dtype()),
                 "; expected f32");
  out_features_ = weight.dim(0);
  in_features_ = weight.dim(1);
  const QuantSpec spec = checked_weight_spec(op, weight_spec, in_features_);
  if (bias.defined()) {
    FRUGAL_REQUIRE(bias.rank() == 1 && bias.dim(0) == out_features_ &&
                       bias.dtype() == DType::kF32 && bias.device() == weight.device(),
                   op, "bias must be f32 (", out_features_, ") on the weight's device");
  }
  init_quantized_weight(op, *this, w_, &BufferRegistrar::reg, weight.contiguous(), spec,
                        weight_qparams, input);
  if (bias.defined()) bias_ = &register_buffer("bias", bias.clone());
  group_ = spec.granularity == Granularity::kPerGroup ? spec.group_size : in_features_;
}

quant::QTensor QuantizedLinear::qweight() const { return make_qtensor(w_); }
std::optional<ActivationQuant> QuantizedLinear::input_quant() const { return make_input(w_); }
Tensor QuantizedLinear::dequantized_weight() const { return quant::dequantize(qweight()); }
int64_t QuantizedLinear::nbytes() const { return weight_nbytes(w_, bias_); }
std::string QuantizedLinear::scheme() const { return scheme_name(w_); }

Tensor QuantizedLinear::forward(const Tensor& input) {
  const char* op = "QuantizedLinear";
  const Tensor& codes = *w_.codes;
  FRUGAL_REQUIRE(input.defined(), op, "input is undefined");
  FRUGAL_REQUIRE(input.rank() >= 1 && input.dim(-1) == in_features_, op, "input has shape ",
                 input.shape(), "; expected (..., ", in_features_, ")");
  FRUGAL_REQUIRE(input.dtype() == DType::kF32, op, "input has dtype ", dtype_name(input.dtype()),
                 "; expected f32");
  FRUGAL_REQUIRE(input.device() == codes.device(), op, "input is on ", input.device().str(),
                 " but the layer is on ", codes.device().str());
  const Tensor x = as_rows(input, in_features_, ctx_);  // (N, in)
  const Shape out_shape = with_last(input.shape(), out_features_);
  const ConstTensorView b = bias_ != nullptr ? bias_->cview() : ConstTensorView{};
  if (w_.has_input) {
    const quant::QTensor a = quant::quantize(
        x, w_.input_spec, {*w_.input_scale, *w_.input_zero_point}, ctx_);  // (N, in) u8 / i8
    return quant::qgemm_f32(a.codes, w_.input_scale_host, w_.input_zero_point_host, codes,
                            scale_f32(w_), b, {}, ctx_)
        .reshape(out_shape);
  }
  Tensor y;
  // The fused kernel streams the codes once per input row: the decoding case (few rows). For
  // batches the weight is dequantized once (out x in floats) and multiplied by the float GEMM,
  // measured faster from 16 rows on (bench_quant BM_LinearLayer).
  if ((codes.dtype() == DType::kI4 && group_ % 2 != 0) || x.dim(0) >= kWoqMaxRows) {
    y = gemm(x, dequantized_weight(), GemmOptions{.trans_b = true}, ctx_);
  } else {
    const Tensor scale = scale_f32(w_).reshape({out_features_, in_features_ / group_});
    y = quant::woq_matmul(x, codes, scale, group_, ctx_);
  }
  if (bias_ != nullptr) linear_add_bias(y, *bias_, ctx_);
  return y.reshape(out_shape);
}

Tensor QuantizedLinear::backward(const Tensor&) {
  frugal::detail::fail(ErrorCode::kUnsupported, "QuantizedLinear::backward",
                       "a quantized layer is inference only (train with QatLinear)");
}

QuantizedConv2d::QuantizedConv2d(const Tensor& weight, const Tensor& bias,
                                 const Conv2dParams& params, const quant::QuantSpec& weight_spec,
                                 std::optional<ActivationQuant> input,
                                 std::optional<quant::QParams> weight_qparams)
    : params_(params) {
  const char* op = "QuantizedConv2d";
  FRUGAL_REQUIRE(weight.defined() && weight.rank() == 4 && weight.numel() > 0, op,
                 "weight must be a non-empty (out, in / groups, kh, kw) tensor");
  FRUGAL_REQUIRE(weight.dtype() == DType::kF32, op, "weight has dtype ", dtype_name(weight.dtype()),
                 "; expected f32");
  wshape_ = weight.shape();
  const int64_t out = weight.dim(0), k = weight.numel() / out;
  const QuantSpec spec = checked_weight_spec(op, weight_spec, k);
  if (bias.defined()) {
    FRUGAL_REQUIRE(bias.rank() == 1 && bias.dim(0) == out && bias.dtype() == DType::kF32 &&
                       bias.device() == weight.device(),
                   op, "bias must be f32 (", out, ") on the weight's device");
  }
  init_quantized_weight(op, *this, w_, &BufferRegistrar::reg, weight.contiguous().reshape({out, k}),
                        spec, weight_qparams, input);
  if (bias.defined()) bias_ = &register_buffer("bias", bias.clone());
}

quant::QTensor QuantizedConv2d::qweight() const { return make_qtensor(w_); }
std::optional<ActivationQuant> QuantizedConv2d::input_quant() const { return make_input(w_); }
Tensor QuantizedConv2d::dequantized_weight() const {
  return quant::dequantize(qweight()).reshape(wshape_);
}
int64_t QuantizedConv2d::nbytes() const { return weight_nbytes(w_, bias_); }
std::string QuantizedConv2d::scheme() const { return scheme_name(w_); }

Tensor QuantizedConv2d::forward(const Tensor& input) {
  const char* op = "QuantizedConv2d";
  const Tensor& codes = *w_.codes;
  FRUGAL_REQUIRE(input.defined() && input.rank() == 4, op, "input must be (N, C, H, W)");
  FRUGAL_REQUIRE(input.dtype() == DType::kF32, op, "input has dtype ", dtype_name(input.dtype()),
                 "; expected f32");
  FRUGAL_REQUIRE(input.device() == codes.device(), op, "input is on ", input.device().str(),
                 " but the layer is on ", codes.device().str());
  const Shape os = conv2d_output_shape(input.shape(), wshape_, params_);  // validates
  const ConstTensorView b = bias_ != nullptr ? bias_->cview() : ConstTensorView{};
  const QParams aq = w_.has_input ? QParams{*w_.input_scale, *w_.input_zero_point} : QParams{};
  if (w_.has_input && params_.groups == 1 && codes.device().kind == DeviceKind::kCpu) {
    const Tensor x = input.contiguous(ctx_);
    const quant::QTensor a = quant::quantize(x, w_.input_spec, aq, ctx_);  // (N, C, H, W)
    const int64_t n = os[0], co = os[1], ho = os[2], wo = os[3];
    const Tensor cols = im2col_codes(a.codes, wshape_[2], wshape_[3], params_, ho, wo,
                                     static_cast<uint8_t>(w_.input_zero_point_host), ctx_);
    if (!codes_hwc_.defined()) codes_hwc_ = codes_to_hwc(codes, wshape_);
    const Tensor y =
        quant::qgemm_f32(cols, w_.input_scale_host, w_.input_zero_point_host, codes_hwc_,
                         scale_f32(w_), b, {}, ctx_);  // (N * Ho * Wo, out)
    // (N * Ho * Wo, out) rows -> NCHW (a plain loop: the generic strided copy is ~10x slower).
    Tensor out = Tensor::empty(os, DType::kF32, Device::cpu());
    const float* src = y.data<float>();
    float* dst = out.data<float>();
    const int64_t hw = ho * wo;
    ctx_.run([&] {
      tbb::parallel_for(int64_t{0}, n, [&](int64_t bi) {
        const float* ys = src + bi * hw * co;
        float* yd = dst + bi * co * hw;
        for (int64_t p = 0; p < hw; ++p) {
          for (int64_t c = 0; c < co; ++c) yd[c * hw + p] = ys[p * co + c];
        }
      });
    });
    return out;
  }
  Tensor x = input;
  if (w_.has_input) x = quant::fake_quantize(input, w_.input_spec, aq, ctx_);
  return conv2d(x, dequantized_weight(), b, params_, ctx_);
}

Tensor QuantizedConv2d::backward(const Tensor&) {
  frugal::detail::fail(ErrorCode::kUnsupported, "QuantizedConv2d::backward",
                       "a quantized layer is inference only (train with QatConv2d)");
}

// ---- model flows --------------------------------------------------------------------------------

namespace {

void add_quantized_overhead(Module& m, int64_t& total) {
  int64_t own = -1;
  if (auto* q = dynamic_cast<QuantizedLinear*>(&m)) own = q->nbytes();
  if (auto* q = dynamic_cast<QuantizedConv2d*>(&m)) own = q->nbytes();
  if (own >= 0) {
    for (const NamedBuffer& b : m.named_buffers()) total -= b.tensor->nbytes();
    total += own;
  }
  for (const auto& [name, child] : m.children()) add_quantized_overhead(*child, total);
}

double accuracy_on(Module& model, const LabeledData* data, int64_t batch) {
  if (data == nullptr) return std::numeric_limits<double>::quiet_NaN();
  DataLoaderOptions o;
  o.batch_size = batch;
  return evaluate_accuracy(
      model, DataLoader(std::make_shared<TensorDataset>(data->inputs, data->labels), o));
}

/// A layer with an observer on its input (calibration).
class ObservedLayer : public Module {
 public:
  ObservedLayer(std::shared_ptr<Module> layer, std::unique_ptr<quant::Observer> obs)
      : layer_(std::move(layer)), obs_(std::move(obs)) {}
  Tensor forward(const Tensor& input) override {
    obs_->observe(input, ctx_);
    return layer_->forward(input);
  }
  Tensor backward(const Tensor& g) override { return layer_->backward(g); }
  std::string type_name() const override { return "ObservedLayer"; }
  quant::Observer& observer() { return *obs_; }

 private:
  std::shared_ptr<Module> layer_;
  std::unique_ptr<quant::Observer> obs_;
};

std::unique_ptr<quant::Observer> make_observer(const PtqOptions& o) {
  switch (o.calibration) {
    case Calibration::kMinMax:
      return std::make_unique<quant::MinMaxObserver>();
    case Calibration::kPercentile:
      return std::make_unique<quant::PercentileObserver>(o.percentile);
    case Calibration::kMse:
      return std::make_unique<quant::MseObserver>();
    case Calibration::kEntropy:
      return std::make_unique<quant::EntropyObserver>();
  }
  return std::make_unique<quant::MinMaxObserver>();
}

/// A layer slot found by walking the model.
struct Slot {
  Sequential* parent;
  std::size_t index;
  std::string name;
};

template <class Pred>
void collect(Module& m, const std::string& prefix, const std::vector<std::string>& skip, Pred pred,
             std::vector<Slot>& out) {
  auto* seq = dynamic_cast<Sequential*>(&m);
  const auto& ch = m.children();
  for (std::size_t i = 0; i < ch.size(); ++i) {
    const std::string name = prefix + ch[i].first;
    if (seq != nullptr && pred(*ch[i].second)) {
      if (std::find(skip.begin(), skip.end(), name) == skip.end()) out.push_back({seq, i, name});
      continue;
    }
    collect(*ch[i].second, name + ".", skip, pred, out);
  }
}

/// The BatchNorm2d right after slot `s` in its Sequential, or nullptr.
BatchNorm2d* next_batch_norm(const Slot& s) {
  const auto& ch = s.parent->children();
  if (s.index + 1 >= ch.size()) return nullptr;
  return dynamic_cast<BatchNorm2d*>(ch[s.index + 1].second.get());
}

/// Per-channel factors a = gamma / sqrt(var + eps) and shifts beta - mean a of a BatchNorm2d.
void bn_affine(BatchNorm2d& bn, std::vector<double>& a, std::vector<double>& shift) {
  const int64_t c = bn.num_features();
  const auto mean = bn.running_mean().to(Device::cpu()).to(DType::kF64).to_vector<double>();
  const auto var = bn.running_var().to(Device::cpu()).to(DType::kF64).to_vector<double>();
  std::vector<double> gamma(c, 1.0), beta(c, 0.0);
  if (bn.weight() != nullptr)
    gamma = bn.weight()->value.to(Device::cpu()).to(DType::kF64).to_vector<double>();
  if (bn.bias() != nullptr)
    beta = bn.bias()->value.to(Device::cpu()).to(DType::kF64).to_vector<double>();
  a.resize(c);
  shift.resize(c);
  for (int64_t i = 0; i < c; ++i) {
    a[i] = gamma[i] / std::sqrt(var[i] + bn.eps());
    shift[i] = beta[i] - mean[i] * a[i];
  }
}

/// Folds the BatchNorm into (weight (out, ...), bias): W' = a W, b' = a b + shift (f32 results
/// on the weight's device). Returns the factors a.
std::vector<double> fold_batch_norm(BatchNorm2d& bn, Tensor& weight, Tensor& bias) {
  std::vector<double> a, shift;
  bn_affine(bn, a, shift);
  const int64_t out = weight.dim(0), k = weight.numel() / out;
  FRUGAL_REQUIRE(bn.num_features() == out, "ptq", "BatchNorm2d of ", bn.num_features(),
                 " channels after a convolution with ", out, " output channels");
  const Device dev = weight.device();
  auto w = weight.to(Device::cpu()).to(DType::kF64).contiguous().to_vector<double>();
  std::vector<double> b(out, 0.0);
  if (bias.defined()) b = bias.to(Device::cpu()).to(DType::kF64).to_vector<double>();
  std::vector<float> wf(w.size()), bf(out);
  for (int64_t o = 0; o < out; ++o) {
    for (int64_t j = 0; j < k; ++j) wf[o * k + j] = static_cast<float>(w[o * k + j] * a[o]);
    bf[o] = static_cast<float>(b[o] * a[o] + shift[o]);
  }
  weight = Tensor::from_vector(wf, weight.shape()).to(dev);
  bias = Tensor::from_vector(bf, {out}).to(dev);
  return a;
}

double weight_error(const Tensor& w, const Tensor& dq) {
  return quant::quantization_error(w, dq).rel_rms;
}

int64_t float_layer_bytes(const Tensor& w, const Tensor& b, BatchNorm2d* bn) {
  int64_t n = w.nbytes() + (b.defined() ? b.nbytes() : 0);
  if (bn != nullptr) {
    for (auto* p : bn->parameters()) n += p->value.nbytes();
    for (auto& nb : bn->named_buffers()) n += nb.tensor->nbytes();
  }
  return n;
}

/// Puts the quantized layer q into slot s (with context ctx, in evaluation mode) and adds lr to
/// rep, completed with q's scheme, size and the relative error of its weight against w_float.
template <class Q>
void install(const Slot& s, const std::shared_ptr<Q>& q, const Tensor& w_float, QuantLayerReport lr,
             const ExecContext& ctx, PtqReport& rep) {
  lr.weight_rel_rms = weight_error(w_float, q->dequantized_weight());
  lr.scheme = q->scheme();
  lr.quant_bytes = q->nbytes();
  q->set_context(ctx);
  q->eval();
  s.parent->replace_child(s.index, q);
  rep.layers.push_back(std::move(lr));
}

/// The end of a flow: the model in evaluation mode, its quantized size and accuracy in rep.
void finish(Sequential& model, const LabeledData* eval, int64_t batch, PtqReport& rep) {
  model.eval();
  rep.quant_bytes = model_state_bytes(model);
  rep.accuracy_after = accuracy_on(model, eval, batch);
}

}  // namespace

int64_t model_state_bytes(Module& model) {
  int64_t total = 0;
  for (const NamedParameter& p : model.named_parameters()) total += p.param->value.nbytes();
  for (const NamedBuffer& b : model.named_buffers()) total += b.tensor->nbytes();
  add_quantized_overhead(model, total);
  return total;
}

PtqReport ptq(Sequential& model, const std::vector<Tensor>& calibration, const PtqOptions& options,
              const ExecContext& ctx) {
  const char* op = "ptq";
  if (options.quantize_activations) {
    FRUGAL_REQUIRE(!calibration.empty(), op, "no calibration batch");
    check_activation_spec(op, options.activation);
    FRUGAL_REQUIRE(
        options.weight.bits == 8 && options.weight.granularity == Granularity::kPerChannel, op,
        "static activation quantization needs 8-bit per-channel weights");
  }
  PtqReport rep;
  rep.float_bytes = model_state_bytes(model);
  model.eval();
  rep.accuracy_before = accuracy_on(model, options.eval, options.eval_batch_size);

  std::vector<Slot> slots;
  collect(
      model, "", options.skip,
      [](Module& m) {
        return dynamic_cast<Linear*>(&m) != nullptr || dynamic_cast<Conv2d*>(&m) != nullptr;
      },
      slots);
  // Calibration: wrap every layer with an observer on its input and run the batches.
  std::vector<std::shared_ptr<Module>> originals;
  std::vector<ObservedLayer*> probes;
  for (const Slot& s : slots) {
    originals.push_back(s.parent->children()[s.index].second);
    if (!options.quantize_activations) continue;
    auto probe = std::make_shared<ObservedLayer>(originals.back(), make_observer(options));
    probe->set_context(ctx);
    probes.push_back(probe.get());
    s.parent->replace_child(s.index, probe);
  }
  if (options.quantize_activations) {
    model.eval();
    ctx.run([&] {
      for (const Tensor& b : calibration) (void)model.forward(b);
    });
  }
  for (std::size_t i = 0; i < slots.size(); ++i) {
    const Slot& s = slots[i];
    std::optional<ActivationQuant> act;
    if (options.quantize_activations) {
      const QParams q = probes[i]->observer().qparams(options.activation);
      act = ActivationQuant{options.activation, q};
    }
    QuantLayerReport lr;
    lr.name = s.name;
    if (auto* lin = dynamic_cast<Linear*>(originals[i].get())) {
      lr.type = "Linear";
      const Tensor w = lin->weight().value.to(DType::kF32);
      const Tensor b = lin->bias() != nullptr ? lin->bias()->value.to(DType::kF32) : Tensor();
      lr.float_bytes = float_layer_bytes(
          lin->weight().value, lin->bias() != nullptr ? lin->bias()->value : Tensor(), nullptr);
      install(s, std::make_shared<QuantizedLinear>(w, b, options.weight, act), w, lr, ctx, rep);
    } else {
      auto* cv = dynamic_cast<Conv2d*>(originals[i].get());
      lr.type = "Conv2d";
      Tensor w = cv->weight().value.to(DType::kF32);
      Tensor b = cv->bias() != nullptr ? cv->bias()->value.to(DType::kF32) : Tensor();
      BatchNorm2d* bn = options.fold_batch_norm ? next_batch_norm(s) : nullptr;
      lr.float_bytes = float_layer_bytes(cv->weight().value,
                                         cv->bias() != nullptr ? cv->bias()->value : Tensor(), bn);
      if (bn != nullptr) {
        (void)fold_batch_norm(*bn, w, b);
        lr.folded_batch_norm = true;
        s.parent->replace_child(s.index + 1, std::make_shared<FoldedBatchNorm2d>());
      }
      install(s, std::make_shared<QuantizedConv2d>(w, b, cv->params(), options.weight, act), w, lr,
              ctx, rep);
    }
  }
  finish(model, options.eval, options.eval_batch_size, rep);
  return rep;
}

std::vector<std::string> prepare_qat(Sequential& model, const QatOptions& options,
                                     const std::vector<std::string>& skip) {
  std::vector<Slot> slots;
  collect(
      model, "", skip,
      [](Module& m) {
        return dynamic_cast<Linear*>(&m) != nullptr || dynamic_cast<Conv2d*>(&m) != nullptr;
      },
      slots);
  std::vector<std::string> names;
  for (const Slot& s : slots) {
    Module* m = s.parent->children()[s.index].second.get();
    std::shared_ptr<Module> repl;
    if (auto* lin = dynamic_cast<Linear*>(m)) {
      repl = std::make_shared<QatLinear>(*lin, options);
    } else {
      repl = std::make_shared<QatConv2d>(*dynamic_cast<Conv2d*>(m), options);
    }
    s.parent->replace_child(s.index, repl);
    names.push_back(s.name);
  }
  return names;
}

PtqReport convert_qat(Sequential& model, bool fold_bn, const LabeledData* eval,
                      const ExecContext& ctx) {
  const char* op = "convert_qat";
  PtqReport rep;
  rep.float_bytes = model_state_bytes(model);
  std::vector<Slot> slots;
  collect(
      model, "", {},
      [](Module& m) {
        return dynamic_cast<QatLinear*>(&m) != nullptr || dynamic_cast<QatConv2d*>(&m) != nullptr;
      },
      slots);
  for (const Slot& s : slots) {
    Module* m = s.parent->children()[s.index].second.get();
    QuantLayerReport lr;
    lr.name = s.name;
    auto act_of = [&](const QatOptions& o, const QParams& aq) -> std::optional<ActivationQuant> {
      if (!o.quantize_input) return std::nullopt;
      FRUGAL_REQUIRE(o.weight.bits == 8 && o.weight.granularity == Granularity::kPerChannel, op,
                     "quantized inputs need 8-bit per-channel weights");
      return ActivationQuant{o.activation, aq};
    };
    if (auto* ql = dynamic_cast<QatLinear*>(m)) {
      ql->freeze();
      lr.type = "Linear";
      const QParams wq = ql->weight_qparams();
      const Tensor w = ql->weight().value.to(DType::kF32);
      const Tensor b = ql->bias() != nullptr ? ql->bias()->value.to(DType::kF32) : Tensor();
      lr.float_bytes = float_layer_bytes(w, b, nullptr);
      auto act =
          act_of(ql->options(), ql->options().quantize_input ? ql->input_qparams() : QParams{});
      install(s, std::make_shared<QuantizedLinear>(w, b, ql->options().weight, act, wq), w, lr, ctx,
              rep);
    } else {
      auto* qc = dynamic_cast<QatConv2d*>(m);
      qc->freeze();
      lr.type = "Conv2d";
      QParams wq = qc->weight_qparams();
      Tensor w = qc->weight().value.to(DType::kF32);
      Tensor b = qc->bias() != nullptr ? qc->bias()->value.to(DType::kF32) : Tensor();
      BatchNorm2d* bn = fold_bn ? next_batch_norm(s) : nullptr;
      lr.float_bytes = float_layer_bytes(w, b, bn);
      Tensor w_float;  // the folded float weight (for the error report)
      if (bn != nullptr) {
        // Fold the fake-quantized weight: code * s * a_c lies on the grid s |a_c| exactly (up to
        // one rounding), so requantizing gives the QAT codes back; folding the float weight
        // instead would move the many elements that sit on a tie (x / s = -7.5 at 4 bits).
        const int64_t k = w.numel() / w.dim(0);
        Tensor wg = quant::fake_quantize(w.reshape({w.dim(0), k}), qc->options().weight, wq)
                        .reshape(w.shape());
        Tensor bg = b;
        w_float = w;
        (void)fold_batch_norm(*bn, w_float, bg);
        const std::vector<double> a = fold_batch_norm(*bn, wg, b);
        w = wg;
        // Per-channel and per-group grids scale with their channel: s' = s |a_c| keeps the codes.
        const int64_t out = w.dim(0);
        auto sc = wq.scale.to(Device::cpu()).contiguous().to_vector<float>();
        const int64_t per = static_cast<int64_t>(sc.size()) / out;
        for (int64_t o = 0; o < out; ++o) {
          for (int64_t j = 0; j < per; ++j) {
            sc[o * per + j] = static_cast<float>(sc[o * per + j] * std::abs(a[o]));
            sc[o * per + j] = std::max(sc[o * per + j], 1e-12f);
          }
        }
        wq.scale = Tensor::from_vector(sc, wq.scale.shape()).to(w.device());
        lr.folded_batch_norm = true;
        s.parent->replace_child(s.index + 1, std::make_shared<FoldedBatchNorm2d>());
      }
      auto act =
          act_of(qc->options(), qc->options().quantize_input ? qc->input_qparams() : QParams{});
      install(s,
              std::make_shared<QuantizedConv2d>(w, b, qc->params(), qc->options().weight, act, wq),
              w_float.defined() ? w_float : w, lr, ctx, rep);
    }
  }
  finish(model, eval, 256, rep);
  return rep;
}

}  // namespace frugal::nn
