#pragma once
/// Quantized nn layers: quantization-aware training (QatLinear, QatConv2d, prepare_qat,
/// convert_qat), quantized inference layers (QuantizedLinear, QuantizedConv2d) and the
/// post-training quantization flow (ptq). The tensor-level machinery is frugal/quant.hpp.
///
///   QAT:  y = layer(fq_a(x), fq_w(W)) + b, fq = fake quantization (quant::fake_quantize) with the
///         straight-through estimator backward (quant::fake_quantize_backward_ste) and optionally
///         learned scales (LSQ, quant::fake_quantize_backward_lsq). The weight range follows the
///         weights (min-max at every training forward) and the input range a moving-average
///         min-max observer for `observe_steps` training forwards; then both freeze.
///   int8 inference (W8A8): x -> u8/i8 codes (per tensor, calibrated), W -> i8 codes (symmetric,
///         per output channel), y = quant::qgemm_f32 (exact int32 accumulation, f32 epilogue with
///         the bias). Conv2d: im2col of the codes + qgemm_f32 on the CPU.
///   weight-only (W4 / W8): W -> i4 / i8 codes per group along the reduction axis, f32
///         activations, y = quant::woq_matmul (dequantization fused) for Linear; Conv2d
///         dequantizes its (small) weight and runs the float convolution.
/// See docs/quant.md for the flows and the measured accuracy and sizes.
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "frugal/core/exec_context.hpp"
#include "frugal/core/tensor.hpp"
#include "frugal/nn/batch_norm.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/data.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/module.hpp"
#include "frugal/quant/observer.hpp"
#include "frugal/quant/qparams.hpp"
#include "frugal/quant/quantize.hpp"

namespace frugal::nn {

/// int8 weights: symmetric, signed, narrow range [-127, 127], one scale per output channel
/// (axis 0), the layout quant::qgemm_f32 takes.
quant::QuantSpec int8_weight_spec();
/// Group int4 weights: symmetric, signed [-8, 7], one scale per `group_size` consecutive inputs
/// of each output row (axis 1 of the (out, in) weight or of a convolution kernel viewed as
/// (out, in / groups * kh * kw)).
quant::QuantSpec int4_group_weight_spec(int64_t group_size = 32);
/// int8 activations: affine, unsigned [0, 255] with a zero point, one range per tensor (torch's
/// quint8 default; post-ReLU inputs use all 256 codes).
quant::QuantSpec int8_activation_spec();

/// `spec` for a weight whose reduction extent is `k`: per-group specs whose group size does not
/// divide k get the largest divisor of k below the group size (e.g. 24 for k = 144 and 32; a
/// 3x3 kernel over one channel, k = 9, gets 9). Other specs are returned as they are.
quant::QuantSpec fit_group_size(quant::QuantSpec spec, int64_t k);

/// How QAT layers quantize.
struct QatOptions {
  quant::QuantSpec weight = int8_weight_spec();  ///< per channel (axis 0) or per group (axis 1)
  quant::QuantSpec activation = int8_activation_spec();  ///< per tensor
  bool quantize_input = true;        ///< false: weight-only QAT (e.g. int4 group weights)
  int64_t observe_steps = 100;       ///< training forwards that observe before the ranges freeze
  double averaging_constant = 0.01;  ///< the input observer's moving-average constant
  /// Learned step size (Esser et al. 2020): after the freeze the scales are trained as
  /// parameters "weight_scale" and "input_scale" (LSQ gradients, paper's gradient scale).
  bool learn_scale = false;
};

/// The state shared by the quantization-aware layers (QatLinear, QatConv2d): the copied weight
/// and bias, the optional learned scales, the observers and the freezing. Training forwards
/// (is_training()) count steps: for the first observe_steps the weight's min-max qparams are
/// recomputed from the current weight and the input feeds a moving-average observer; then the
/// ranges freeze (freeze() does it at once). Evaluation forwards never observe (except the very
/// first forward when nothing was observed yet).
class QatLayer : public Module {
 public:
  Parameter& weight() { return *weight_; }
  /// nullptr without a bias.
  Parameter* bias() { return bias_; }
  const QatOptions& options() const { return opt_; }
  /// Training forwards seen so far.
  int64_t steps() const { return steps_; }
  bool frozen() const { return frozen_; }
  /// Stops observing: the current ranges stay (learn_scale: the scales start training).
  void freeze() { frozen_ = true; }
  /// The weight's current fake-quantization parameters (f32 scale, i32 zero point), in its
  /// (out, K) view.
  quant::QParams weight_qparams();
  /// The input's current per-tensor parameters; throws before any forward.
  quant::QParams input_qparams();

 protected:
  /// Copies `layer_weight` / `layer_bias` (of a layer with context `ctx`) into parameters
  /// "weight" / "bias", and with learn_scale registers "weight_scale" / "input_scale". `op` names
  /// the layer in errors; the weight is quantized in its (out, K) view.
  QatLayer(const char* op, const Parameter& layer_weight, const Parameter* layer_bias,
           const ExecContext& ctx, bool training, const QatOptions& options, int64_t out,
           int64_t k);

  /// Counts a training forward; freezes after observe_steps of them.
  void count_step();
  /// Parameters of the (out, K) weight w2d for this forward.
  quant::QParams forward_weight_qparams(const Tensor& w2d);
  /// Parameters of the input x for this forward (observing it while warming up).
  quant::QParams forward_input_qparams(const Tensor& x);
  /// Gradient of the (out, K) weight from the gradient of its fake-quantized value (STE, plus
  /// the LSQ scale gradient when learning scales).
  Tensor weight_grad(const Tensor& g_wq, const Tensor& w2d);
  /// Gradient of the input x from the gradient of its fake-quantized value.
  Tensor input_grad(const Tensor& g_xq, const Tensor& x);

  const char* op_;
  int64_t out_;  // output features / channels
  int64_t k_;    // the weight's reduction extent
  QatOptions opt_;
  Parameter* weight_ = nullptr;
  Parameter* bias_ = nullptr;
  Parameter* weight_scale_ = nullptr;  // learn_scale only
  Parameter* input_scale_ = nullptr;   // learn_scale only
  quant::QParams wq_;
  quant::QParams aq_;
  std::unique_ptr<quant::MovingAverageMinMaxObserver> observer_;
  int64_t steps_ = 0;
  bool frozen_ = false;
  // Saved by forward: the input, its fake-quantized value, the fake-quantized weight.
  Tensor x_, xq_, wfq_;
};

/// Quantization-aware Linear: y = fq_a(x) fq_w(W)^T + b. Built from a Linear whose weight and
/// bias it copies (parameters "weight", "bias", plus "weight_scale" / "input_scale" with
/// learn_scale); observation and freezing as QatLayer.
/// Backward: grad_x = STE(g fq_w(W)), grad_W += STE(g^T fq_a(x)), grad_b += column sums of g,
/// and with learn_scale (after the freeze) the LSQ scale gradients. f32 or f64 (f64 for
/// finite-difference tests), CPU or CUDA.
class QatLinear : public QatLayer {
 public:
  QatLinear(Linear& layer, const QatOptions& options = {});

  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "QatLinear"; }

  int64_t in_features() const { return k_; }
  int64_t out_features() const { return out_; }

 private:
  Shape in_shape_, out_shape_;  // x_ holds the input rows (N, in)
};

/// Quantization-aware Conv2d: y = conv(fq_a(x), fq_w(W)) + b, with the weight quantized in its
/// (out, in / groups * kh * kw) view (so per-group specs group along the whole reduction). Same
/// observation, freezing and gradients as QatLinear.
class QatConv2d : public QatLayer {
 public:
  QatConv2d(Conv2d& layer, const QatOptions& options = {});

  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "QatConv2d"; }

  const Conv2dParams& params() const { return params_; }
  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_; }
  Size2 kernel_size() const { return kernel_; }

 private:
  int64_t in_channels_;
  Size2 kernel_;
  Conv2dParams params_;
};

/// A static per-tensor activation quantizer: the spec and its calibrated parameters.
struct ActivationQuant {
  quant::QuantSpec spec;  ///< 8 bits, kPerTensor
  quant::QParams qparams;
};

/// The stored state of a quantized layer, as registered buffers (so Module::to moves it):
/// "weight_codes", "weight_scale" (f16 when every scale is a normal f16 exactly, else f32; see
/// QuantizedLinear), "weight_zero_point", "bias", and for W8A8 "input_scale" {} f32 /
/// "input_zero_point" {} i32 (their host values cached for the GEMM epilogue).
struct QuantizedWeight {
  quant::QuantSpec spec;
  Shape shape;  ///< (out, K)
  Tensor* codes = nullptr;
  Tensor* scale = nullptr;
  Tensor* zero_point = nullptr;
  bool has_input = false;
  quant::QuantSpec input_spec;
  Tensor* input_scale = nullptr;
  Tensor* input_zero_point = nullptr;
  float input_scale_host = 1.f;
  int32_t input_zero_point_host = 0;
};

/// Inference-only quantized Linear: the weight is stored as integer codes and the layer has no
/// gradient (backward throws Unsupported). Two schemes:
/// - `input` given (W8A8): weight spec 8-bit symmetric signed per channel (axis 0), input spec
///   8-bit per tensor; forward quantizes the input rows and runs quant::qgemm_f32 (oneDNN / own
///   VNNI kernel on the CPU, cuBLASLt on CUDA) with the bias in its epilogue.
/// - no `input` (weight-only): weight spec symmetric signed, 3..8 bits, per channel or per group
///   along axis 1; forward runs quant::woq_matmul on the f32 input (an odd group of 4-bit codes
///   falls back to dequantize-then-GEMM).
/// Per-channel min-max weight scales (no `weight_qparams`) are rounded to the nearest f16 before
/// the codes are computed, as ggml's Q8_0 does, and stored as f16 (2 bytes per output channel;
/// scales below f16's normal range stay f32). Given `weight_qparams` are kept exactly (stored as
/// f16 only when f16 holds them exactly). qweight() and the GEMMs see the scales as f32.
/// f32 input (..., in) -> f32 output (..., out), on the layer's device.
class QuantizedLinear : public Module {
 public:
  /// Quantizes `weight` (out, in) f32 with `weight_qparams` (min-max of the weight when empty);
  /// `bias` (out) f32 or undefined. On the weight's device.
  QuantizedLinear(const Tensor& weight, const Tensor& bias, const quant::QuantSpec& weight_spec,
                  std::optional<ActivationQuant> input = std::nullopt,
                  std::optional<quant::QParams> weight_qparams = std::nullopt);

  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "QuantizedLinear"; }

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }
  /// The weight codes (out, in) i8 / i4, their spec and parameters (sharing the buffers).
  quant::QTensor qweight() const;
  /// The input quantizer (W8A8), or nullopt (weight-only).
  std::optional<ActivationQuant> input_quant() const;
  /// The bias (f32, out) or undefined.
  Tensor bias() const { return bias_ != nullptr ? *bias_ : Tensor(); }
  /// dequantize(qweight()): the float weight this layer computes with.
  Tensor dequantized_weight() const;
  /// Stored bytes: weight codes + weight scales (f16 or f32) (+ zero points when affine) + f32
  /// bias + the input's scale and zero point.
  int64_t nbytes() const;
  /// "w8a8", "w4 g32", "w8 per-channel" ...
  std::string scheme() const;

 private:
  int64_t in_features_;
  int64_t out_features_;
  QuantizedWeight w_;
  Tensor* bias_ = nullptr;
  int64_t group_ = 0;  // weight-only: group size along the input axis
};

/// Inference-only quantized Conv2d; schemes as QuantizedLinear with the kernel viewed as
/// (out, K = in / groups * kh * kw). W8A8 on the CPU with groups == 1: the input is quantized
/// once, unfolded (im2col of the codes, padding with the zero-point code) and multiplied by
/// quant::qgemm_f32; elsewhere (CUDA, grouped) and for weight-only specs, the dequantized kernel
/// runs through conv2d (the input fake-quantized first for W8A8), which gives the same result up
/// to float summation order. f32 NCHW in and out.
class QuantizedConv2d : public Module {
 public:
  /// weight (out, in / groups, kh, kw) f32, bias (out) f32 or undefined.
  QuantizedConv2d(const Tensor& weight, const Tensor& bias, const Conv2dParams& params,
                  const quant::QuantSpec& weight_spec,
                  std::optional<ActivationQuant> input = std::nullopt,
                  std::optional<quant::QParams> weight_qparams = std::nullopt);

  Tensor forward(const Tensor& input) override;
  Tensor backward(const Tensor& grad_output) override;
  std::string type_name() const override { return "QuantizedConv2d"; }

  quant::QTensor qweight() const;  ///< codes (out, K)
  std::optional<ActivationQuant> input_quant() const;
  Tensor bias() const { return bias_ != nullptr ? *bias_ : Tensor(); }
  const Conv2dParams& params() const { return params_; }
  /// The dequantized kernel (out, in / groups, kh, kw).
  Tensor dequantized_weight() const;
  int64_t nbytes() const;
  std::string scheme() const;

 private:
  Shape wshape_;  // (out, in / groups, kh, kw)
  Conv2dParams params_;
  QuantizedWeight w_;
  Tensor* bias_ = nullptr;
  Tensor codes_hwc_;  // W8A8 CPU path: the codes as (out, kh * kw * in), made on first use
};

/// What a BatchNorm2d becomes once folded into the convolution before it: the identity.
class FoldedBatchNorm2d : public Module {
 public:
  Tensor forward(const Tensor& input) override { return input; }
  Tensor backward(const Tensor& grad_output) override { return grad_output; }
  std::string type_name() const override { return "FoldedBatchNorm2d"; }
};

/// Bytes of the state a model needs for inference: every parameter and buffer value plus the
/// stored bytes (nbytes()) of its quantized layers.
int64_t model_state_bytes(Module& model);

/// How activation ranges are calibrated.
enum class Calibration {
  kMinMax,      ///< quant::MinMaxObserver
  kPercentile,  ///< quant::PercentileObserver(percentile)
  kMse,         ///< quant::MseObserver
  kEntropy,     ///< quant::EntropyObserver
};

/// Options of ptq.
struct PtqOptions {
  quant::QuantSpec weight = int8_weight_spec();  ///< per channel (axis 0) or per group (axis 1)
  /// Static per-tensor input quantization (W8A8, needs an 8-bit per-channel weight spec);
  /// false: weight-only.
  bool quantize_activations = true;
  quant::QuantSpec activation = int8_activation_spec();
  Calibration calibration = Calibration::kMinMax;
  double percentile = 99.99;        ///< kPercentile
  bool fold_batch_norm = true;      ///< fold an eval-mode BatchNorm2d into the Conv2d before it
  std::vector<std::string> skip{};  ///< layer paths ("0", "3.body.1") left in float
  /// When set, ptq measures the classification accuracy on it before and after.
  const LabeledData* eval = nullptr;
  int64_t eval_batch_size = 256;
};

/// One quantized layer of a report.
struct QuantLayerReport {
  std::string name;    ///< path of the layer ("0", "8")
  std::string type;    ///< "Linear", "Conv2d"
  std::string scheme;  ///< QuantizedLinear::scheme()
  bool folded_batch_norm = false;
  double weight_rel_rms = 0;  ///< relative RMS error of the dequantized weight
  int64_t float_bytes = 0;    ///< f32 weight + bias (+ folded BatchNorm state)
  int64_t quant_bytes = 0;    ///< nbytes() of the quantized layer
};

/// What ptq / convert_qat did.
struct PtqReport {
  std::vector<QuantLayerReport> layers;
  int64_t float_bytes = 0;                                            ///< model_state_bytes before
  int64_t quant_bytes = 0;                                            ///< model_state_bytes after
  double accuracy_before = std::numeric_limits<double>::quiet_NaN();  ///< with options.eval
  double accuracy_after = std::numeric_limits<double>::quiet_NaN();
  double compression() const {
    return quant_bytes > 0 ? static_cast<double>(float_bytes) / quant_bytes : 0.0;
  }
};

/// Post-training quantization of `model` in place: observers on the inputs of every Linear and
/// Conv2d that is a direct child of a Sequential (nested anywhere, as factorize_model), the model
/// run in evaluation mode on `calibration` batches, then BatchNorm2d folding (a Conv2d directly
/// followed by a BatchNorm2d in the same Sequential) and the replacement of each layer by its
/// QuantizedLinear / QuantizedConv2d. Per-group weight specs are fitted to each layer's reduction
/// extent (fit_group_size). Throws InvalidArgument ("[ptq] ...") for no calibration batch (with
/// quantize_activations) or an unsupported spec. The model is left in evaluation mode.
PtqReport ptq(Sequential& model, const std::vector<Tensor>& calibration,
              const PtqOptions& options = {}, const ExecContext& ctx = {});

/// Replaces every Linear / Conv2d under a Sequential of `model` (except `skip` paths) by its
/// QatLinear / QatConv2d (weights copied). Per-group specs are fitted per layer. Returns the
/// paths replaced. Build the optimizer after this call.
std::vector<std::string> prepare_qat(Sequential& model, const QatOptions& options = {},
                                     const std::vector<std::string>& skip = {});

/// Replaces every QatLinear / QatConv2d by its QuantizedLinear / QuantizedConv2d with the QAT
/// layer's frozen parameters (freezing it first), folding a following BatchNorm2d into the
/// convolution (its weight scales multiplied by |gamma / sqrt(var + eps)| so the QAT grid is
/// kept). The model is left in evaluation mode.
PtqReport convert_qat(Sequential& model, bool fold_batch_norm = true,
                      const LabeledData* eval = nullptr, const ExecContext& ctx = {});

}  // namespace frugal::nn
