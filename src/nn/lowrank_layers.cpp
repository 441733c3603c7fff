// Factorized layers, the model rewrite and LoRA (include/frugal/nn/lowrank_layers.hpp).
#include "frugal/nn/lowrank_layers.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include "frugal/core/ops.hpp"
#include "frugal/core/random.hpp"
#include "frugal/lowrank/response.hpp"
#include "frugal/lowrank/svd.hpp"

namespace frugal::nn {
namespace {

/// diag(values) (r, r) of `dtype` on `device`.
Tensor diag_tensor(const std::vector<double>& values, DType dtype, Device device,
                   const ExecContext& ctx) {
  const auto r = static_cast<int64_t>(values.size());
  std::vector<double> d(static_cast<std::size_t>(r * r), 0.0);
  for (int64_t i = 0; i < r; ++i)
    d[static_cast<std::size_t>(i * r + i)] = values[static_cast<std::size_t>(i)];
  return Tensor::from_vector(d, {r, r}).to(dtype, ctx).to(device, ctx);
}

/// sqrt(sum_{i >= r} s_i^2 / sum s_i^2), the Eckart-Young error of rank r, summed from the tail.
double tail_ratio(const std::vector<double>& s, int64_t r) {
  double tail = 0.0, total = 0.0;
  for (std::size_t i = s.size(); i-- > 0;) {
    total += s[i] * s[i];
    if (static_cast<int64_t>(i) >= r) tail += s[i] * s[i];
  }
  return total == 0.0 ? 0.0 : std::sqrt(tail / total);
}

/// Copies `value` (any device) into the parameter's value (shapes must match).
void set_value(Parameter& p, const Tensor& value, const ExecContext& ctx) {
  p.value.copy_from(value.reshape(p.value.shape()), ctx);
}

/// The second layer's bias: the layer's (if any) plus `shift` (if defined); undefined if neither.
Tensor pair_bias(Parameter* bias, const Tensor& shift, const ExecContext& ctx) {
  if (!shift.defined()) return bias != nullptr ? bias->value : Tensor();
  if (bias == nullptr) return shift;
  return add(bias->value, shift.reshape(bias->value.shape()), ctx);
}

/// Two Linears (in -> r, no bias; r -> out, the layer's bias plus `shift`) with weights first
/// (r, in) and second (out, r).
std::shared_ptr<Sequential> linear_pair(Linear& layer, const Tensor& first, const Tensor& second,
                                        const Tensor& shift, const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const int64_t m = w.dim(0), n = w.dim(1), r = first.dim(0);
  const Tensor bias = pair_bias(layer.bias(), shift, ctx);
  auto a = std::make_shared<Linear>(n, r, false, 0, w.dtype());
  auto b = std::make_shared<Linear>(r, m, bias.defined(), 0, w.dtype());
  a->to(w.device(), ctx);
  b->to(w.device(), ctx);
  set_value(a->weight(), first, ctx);
  set_value(b->weight(), second, ctx);
  if (bias.defined()) set_value(*b->bias(), bias, ctx);
  a->set_context(layer.context());
  b->set_context(layer.context());
  auto seq = std::make_shared<FactorizedSequential>("LowRankLinear");
  seq->add(a).add(b);
  return seq;
}

/// The Sequential of factorize_linear from a thin SVD (all k triplets) of the weight.
std::shared_ptr<Sequential> linear_from_svd(Linear& layer, const lowrank::SvdResult& f,
                                            int64_t rank, const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  std::vector<double> root = f.s.slice(0, 0, rank).contiguous(ctx).to_vector<double>();
  for (double& v : root) v = std::sqrt(v);
  const Tensor d = diag_tensor(root, w.dtype(), w.device(), ctx);
  // W1 = S^1/2 V^T (r, n), W2 = U S^1/2 (m, r).
  const Tensor w1 = gemm(d, f.vt.slice(0, 0, rank), {}, ctx);
  const Tensor w2 = gemm(f.u.slice(1, 0, rank), d, {}, ctx);
  return linear_pair(layer, w1, w2, Tensor(), ctx);
}

/// A Conv2d on `device` whose weight (and bias) are `weight` (and `bias`, if defined).
std::shared_ptr<Conv2d> make_conv(int64_t in, int64_t out, Size2 kernel, const Conv2dOptions& opt,
                                  const Tensor& weight, const Tensor& bias, DType dtype,
                                  Device device, const ExecContext& ctx) {
  auto c = std::make_shared<Conv2d>(in, out, kernel, opt, 0, dtype);
  c->to(device, ctx);
  set_value(c->weight(), weight, ctx);
  if (bias.defined()) set_value(*c->bias(), bias, ctx);
  return c;
}

void require_dense_conv(const char* op, Conv2d& layer) {
  FRUGAL_REQUIRE(layer.params().groups == 1, op,
                 "only groups = 1 convolutions are factorized, got groups ", layer.params().groups);
}

std::shared_ptr<Sequential> conv_from_tucker2(Conv2d& layer, const lowrank::Tucker2Result& t,
                                              const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const int64_t co = w.dim(0), ci = w.dim(1);
  const int64_t r1 = t.core.dim(0), r2 = t.core.dim(1);
  const Conv2dParams& p = layer.params();
  const Tensor bias = layer.bias() != nullptr ? layer.bias()->value : Tensor();
  auto seq = std::make_shared<FactorizedSequential>("Tucker2Conv2d");
  seq->add(make_conv(ci, r2, 1, Conv2dOptions{.bias = false}, t.u_in.t().contiguous(ctx), {},
                     w.dtype(), w.device(), ctx));
  seq->add(make_conv(
      r2, r1, layer.kernel_size(),
      Conv2dOptions{
          .stride = p.stride, .padding = p.padding, .dilation = p.dilation, .bias = false},
      t.core, {}, w.dtype(), w.device(), ctx));
  seq->add(make_conv(r1, co, 1, Conv2dOptions{.bias = bias.defined()}, t.u_out, bias, w.dtype(),
                     w.device(), ctx));
  seq->set_context(layer.context());
  return seq;
}

std::shared_ptr<Sequential> conv_from_cp(Conv2d& layer, const lowrank::CpResult& cp,
                                         const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const int64_t co = w.dim(0), ci = w.dim(1);
  const int64_t r = cp.out.dim(1);
  const Conv2dParams& p = layer.params();
  const Size2 k = layer.kernel_size();
  const Tensor bias = layer.bias() != nullptr ? layer.bias()->value : Tensor();
  auto seq = std::make_shared<FactorizedSequential>("CPConv2d");
  seq->add(make_conv(ci, r, 1, Conv2dOptions{.bias = false}, cp.in.t().contiguous(ctx), {},
                     w.dtype(), w.device(), ctx));
  seq->add(make_conv(r, r, Size2{k.h, 1},
                     Conv2dOptions{.stride = Size2{p.stride.h, 1},
                                   .padding = Size2{p.padding.h, 0},
                                   .dilation = Size2{p.dilation.h, 1},
                                   .groups = r,
                                   .bias = false},
                     cp.h.t().contiguous(ctx), {}, w.dtype(), w.device(), ctx));
  seq->add(make_conv(r, r, Size2{1, k.w},
                     Conv2dOptions{.stride = Size2{1, p.stride.w},
                                   .padding = Size2{0, p.padding.w},
                                   .dilation = Size2{1, p.dilation.w},
                                   .groups = r,
                                   .bias = false},
                     cp.w.t().contiguous(ctx), {}, w.dtype(), w.device(), ctx));
  seq->add(make_conv(r, co, 1, Conv2dOptions{.bias = bias.defined()}, cp.out, bias, w.dtype(),
                     w.device(), ctx));
  seq->set_context(layer.context());
  return seq;
}

/// A conv with `layer`'s kernel size, stride, padding and dilation, dtype and device, weight
/// `weight` (out, in, kh, kw) and bias `bias` (none when undefined).
std::shared_ptr<Conv2d> conv_like(Conv2d& layer, const Tensor& weight, const Tensor& bias,
                                  const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const Conv2dParams& p = layer.params();
  return make_conv(
      weight.dim(1), weight.dim(0), layer.kernel_size(),
      Conv2dOptions{
          .stride = p.stride, .padding = p.padding, .dilation = p.dilation, .bias = bias.defined()},
      weight, bias, w.dtype(), w.device(), ctx);
}

/// A kh x kw conv C_in -> r (the layer's stride, padding, dilation) then a 1x1 conv r -> C_out
/// (the layer's bias plus `shift`): weights first (r, C_in, kh, kw) and second (C_out, r, 1, 1).
std::shared_ptr<Sequential> conv_channel_pair(Conv2d& layer, const Tensor& first,
                                              const Tensor& second, const Tensor& shift,
                                              const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const int64_t co = w.dim(0), r = first.dim(0);
  const Tensor bias = pair_bias(layer.bias(), shift, ctx);
  auto seq = std::make_shared<FactorizedSequential>("ChannelConv2d");
  seq->add(conv_like(layer, first, {}, ctx));
  seq->add(make_conv(r, co, 1, Conv2dOptions{.bias = bias.defined()}, second.reshape({co, r, 1, 1}),
                     bias, w.dtype(), w.device(), ctx));
  seq->set_context(layer.context());
  return seq;
}

/// kh x 1 conv C_in -> r then 1 x kw conv r -> C_out (the bias), each with its axis's stride,
/// padding and dilation (lowrank::spatial_svd).
std::shared_ptr<Sequential> conv_from_spatial(Conv2d& layer, const lowrank::ConvSvdResult& f,
                                              const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const int64_t co = w.dim(0), ci = w.dim(1), r = f.first.dim(0);
  const Conv2dParams& p = layer.params();
  const Size2 k = layer.kernel_size();
  const Tensor bias = layer.bias() != nullptr ? layer.bias()->value : Tensor();
  auto seq = std::make_shared<FactorizedSequential>("SpatialConv2d");
  seq->add(make_conv(ci, r, Size2{k.h, 1},
                     Conv2dOptions{.stride = Size2{p.stride.h, 1},
                                   .padding = Size2{p.padding.h, 0},
                                   .dilation = Size2{p.dilation.h, 1},
                                   .bias = false},
                     f.first, {}, w.dtype(), w.device(), ctx));
  seq->add(make_conv(r, co, Size2{1, k.w},
                     Conv2dOptions{.stride = Size2{1, p.stride.w},
                                   .padding = Size2{0, p.padding.w},
                                   .dilation = Size2{1, p.dilation.w},
                                   .bias = bias.defined()},
                     f.second, bias, w.dtype(), w.device(), ctx));
  seq->set_context(layer.context());
  return seq;
}

/// Rows (N H W, C) of maps (N, C, H, W): one row per image and position.
Tensor channel_rows(const Tensor& x, const ExecContext& ctx) {
  return x.contiguous(ctx).transpose(1, 2).transpose(2, 3).contiguous(ctx).reshape({-1, x.dim(1)});
}

/// The outputs without bias on `inputs` of `layer` with kernel `w`, one row per output position
/// and image: (N H_out W_out, C_out).
Tensor kernel_responses(Conv2d& layer, const Tensor& w, const Tensor& inputs,
                        const ExecContext& ctx) {
  auto c = conv_like(layer, w, {}, ctx);
  c->set_context(layer.context());
  c->train(false);
  return channel_rows(c->forward(inputs), ctx);  // from (N, C_out, H, W)
}

Tensor conv_responses(Conv2d& layer, const Tensor& inputs, const ExecContext& ctx) {
  return kernel_responses(layer, layer.weight().value, inputs, ctx);
}

// ---- data-aware Tucker-2 (tucker2_response_table) ----------------------------------------------

/// a - 1 mu^T for a (rows, cols) and mu (1, cols): a rank-1 update through gemm.
Tensor center_rows(const Tensor& a, const Tensor& mu, const ExecContext& ctx) {
  Tensor out = a.clone(ctx);
  const Tensor ones = Tensor::full({a.dim(0), 1}, 1.0, a.dtype(), a.device());
  gemm_into(ones, mu.reshape({1, a.dim(1)}), out, GemmOptions{.alpha = -1.0, .beta = 1.0}, ctx);
  return out;
}

/// The input-channel mode product of a kernel w (C_out, C_in, kh, kw) with m (C_in, k):
/// out[o, j, :, :] = sum_c w[o, c, :, :] m[c, j], shape (C_out, k, kh, kw).
Tensor kernel_in_product(const Tensor& w, const Tensor& m, const ExecContext& ctx) {
  const int64_t co = w.dim(0), kh = w.dim(2), kw = w.dim(3), k = m.dim(1);
  return gemm(channel_rows(w, ctx), m, {}, ctx)  // (C_out kh kw, C_in) x (C_in, k)
      .reshape({co, kh, kw, k})
      .transpose(2, 3)
      .transpose(1, 2)
      .contiguous(ctx);
}

/// The projector P_b P_b^T (C_in, C_in) onto the first b input directions.
Tensor input_projector(const Tucker2ResponseTable& t, int64_t b, const ExecContext& ctx) {
  const Tensor p = t.p_in.slice(1, 0, b).contiguous(ctx);
  return gemm(p, p, GemmOptions{.trans_b = true}, ctx);
}

void check_response_inputs(const char* op, Conv2d& layer, const Tensor& inputs) {
  require_dense_conv(op, layer);
  const Tensor& w = layer.weight().value;
  FRUGAL_REQUIRE(
      inputs.defined() && inputs.rank() == 4 && inputs.numel() > 0 && inputs.dim(1) == w.dim(1), op,
      "inputs must be non-empty (N, ", w.dim(1), ", H, W)");
  FRUGAL_REQUIRE(inputs.dtype() == w.dtype(), op, "inputs have dtype ", dtype_name(inputs.dtype()),
                 ", the layer ", dtype_name(w.dtype()));
  FRUGAL_REQUIRE(inputs.device() == w.device(), op, "inputs and layer are on different devices");
}

Tucker2ResponseTable response_table(Conv2d& layer, const Tensor& inputs, const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const int64_t co = w.dim(0), ci = w.dim(1);
  Tucker2ResponseTable t;
  const Tensor y = conv_responses(layer, inputs, ctx);  // (M, C_out)
  const lowrank::ResponseBasis out = lowrank::response_basis(y, true, ctx);
  const lowrank::ResponseBasis in = lowrank::response_basis(channel_rows(inputs, ctx), false, ctx);
  t.u_out = out.u;
  t.mean = out.mean;
  t.p_in = in.u;
  t.r_out_max = out.u.dim(1);
  t.r_in_max = in.u.dim(1);
  t.converged = out.converged && in.converged;
  const auto ro = static_cast<std::size_t>(t.r_out_max), ri = static_cast<std::size_t>(t.r_in_max);
  t.kept.assign(ro * ri, 1.0);
  const std::vector<double> s = out.s.to_vector<double>();
  double total = 0.0;
  for (double v : s) total += v * v;
  if (!t.converged) {
    t.kept.assign(ro * ri, std::numeric_limits<double>::quiet_NaN());
    return t;
  }
  if (total == 0.0) return t;  // constant responses: the bias keeps them all
  const std::vector<double> u = out.u.to_vector<double>();  // (C_out, R_out) row-major
  const Tensor yc = center_rows(y, out.mean, ctx);
  std::vector<double> gain(ro);
  for (std::size_t b = 1; b <= ri; ++b) {
    if (static_cast<int64_t>(b) == ci) {
      // P P^T = I: Z = Y, and direction a keeps its variance s_a^2.
      for (std::size_t a = 0; a < ro; ++a) gain[a] = s[a] * s[a];
    } else {
      // ||Yc - Zc U U^T||^2 = ||Yc||^2 - sum_a (2 u_a^T G u_a - u_a^T H u_a) with G = Yc^T Zc,
      // H = Zc^T Zc (rows = samples; Zc the centered responses to the projected inputs).
      const Tensor z = kernel_responses(
          layer, kernel_in_product(w, input_projector(t, b, ctx), ctx), inputs, ctx);
      const Tensor zc = center_rows(z, mean(z, 0, true, ctx), ctx);
      const std::vector<double> g =
          gemm(yc, zc, GemmOptions{.trans_a = true}, ctx).to_vector<double>();
      const std::vector<double> h =
          gemm(zc, zc, GemmOptions{.trans_a = true}, ctx).to_vector<double>();
      const auto c = static_cast<std::size_t>(co);
      for (std::size_t a = 0; a < ro; ++a) {
        double qg = 0.0, qh = 0.0;
        for (std::size_t i = 0; i < c; ++i)
          for (std::size_t j = 0; j < c; ++j) {
            const double uu = u[i * ro + a] * u[j * ro + a];
            qg += uu * g[i * c + j];
            qh += uu * h[i * c + j];
          }
        gain[a] = 2.0 * qg - qh;
      }
    }
    double acc = 0.0;
    for (std::size_t a = 0; a < ro; ++a) {
      acc += gain[a];
      t.kept[a * ri + (b - 1)] = acc / total;
    }
  }
  return t;
}

/// The bias shift and its factors (see factorize_conv_tucker2_response), appended to `seq`;
/// returns ||W - W_approx||_F / ||W||_F of the kernel.
double append_tucker2_response(Conv2d& layer, const Tucker2ResponseTable& t, const Tensor& inputs,
                               int64_t ro, int64_t ri, Sequential& seq, const ExecContext& ctx) {
  const Tensor& w = layer.weight().value;
  const int64_t co = w.dim(0), ci = w.dim(1), kh = w.dim(2), kw = w.dim(3);
  const bool full_in = ri == ci, full_out = ro == co;
  const Tensor p = t.p_in.slice(1, 0, ri).contiguous(ctx);       // (C_in, r_in)
  const Tensor u = t.u_out.slice(1, 0, ro).contiguous(ctx);      // (C_out, r_out)
  const Tensor wp = full_in ? w : kernel_in_product(w, p, ctx);  // (C_out, r_in, kh, kw)
  const Tensor core = full_out ? wp
                               : gemm(u, wp.reshape({co, -1}), GemmOptions{.trans_a = true}, ctx)
                                     .reshape({ro, ri, kh, kw});
  // c = mean(Y) - U U^T mean(Z): the least-squares constant (Z = responses to P P^T x).
  const Tensor ybar = t.mean.contiguous(ctx).reshape({co, 1});
  const Tensor zbar =
      full_in ? ybar
              : mean(kernel_responses(layer, kernel_in_product(w, input_projector(t, ri, ctx), ctx),
                                      inputs, ctx),
                     0, true, ctx)
                    .reshape({co, 1});
  const Tensor kept_mean =
      full_out ? zbar : gemm(u, gemm(u, zbar, GemmOptions{.trans_a = true}, ctx), {}, ctx);
  const Tensor bias = pair_bias(layer.bias(), sub(ybar, kept_mean, ctx).reshape({co}), ctx);
  if (!full_in) {
    seq.add(make_conv(ci, ri, 1, Conv2dOptions{.bias = false}, p.t().contiguous(ctx), {}, w.dtype(),
                      w.device(), ctx));
  }
  seq.add(conv_like(layer, core, full_out ? bias : Tensor(), ctx));
  if (!full_out) {
    seq.add(make_conv(ro, co, 1, Conv2dOptions{.bias = true}, u, bias, w.dtype(), w.device(), ctx));
  }
  for (std::size_t i = 0; i < seq.children().size(); ++i)
    seq.children()[i].second->set_context(layer.context());
  // The kernel the factors compose: U U^T W P P^T.
  Tensor rec = full_out ? core : gemm(u, core.reshape({ro, -1}), {}, ctx).reshape({co, ri, kh, kw});
  if (!full_in) rec = kernel_in_product(rec, p.t().contiguous(ctx), ctx);
  const double norm = lowrank::frobenius_norm_sq(w, ctx);
  return norm == 0.0 ? 0.0 : std::sqrt(lowrank::frobenius_norm_sq(sub(w, rec, ctx), ctx) / norm);
}

/// A Linear (out, C H W) as the H x W valid convolution C -> out over (N, C, H, W) maps.
std::shared_ptr<Conv2d> linear_as_conv(Linear& lin, const Tensor& map, const ExecContext& ctx) {
  const Tensor& w = lin.weight().value;
  const Tensor bias = lin.bias() != nullptr ? lin.bias()->value : Tensor();
  auto c = make_conv(map.dim(1), w.dim(0), Size2{map.dim(2), map.dim(3)},
                     Conv2dOptions{.bias = bias.defined()}, w.contiguous(ctx), bias, w.dtype(),
                     w.device(), ctx);
  c->set_context(lin.context());
  return c;
}

// ---- parameter and FLOP counts ------------------------------------------------------------

int64_t tucker2_params(int64_t co, int64_t ci, int64_t hw, int64_t r1, int64_t r2) {
  return ci * r2 + r2 * r1 * hw + r1 * co;
}
int64_t cp_params(int64_t co, int64_t ci, int64_t kh, int64_t kw, int64_t r) {
  return r * (ci + kh + kw + co);
}

/// The largest r with f(r) <= budget for an increasing f, in [1, hi]; 0 if none.
template <class F>
int64_t largest_within(int64_t hi, int64_t budget, F&& f) {
  int64_t best = 0;
  for (int64_t r = 1; r <= hi; ++r) {
    if (f(r) <= budget) best = r;
  }
  return best;
}

/// Records the input of the layer it wraps (calibration pass of factorize_model).
class InputRecorder : public Module {
 public:
  explicit InputRecorder(std::shared_ptr<Module> inner) : inner_(std::move(inner)) {}
  Tensor forward(const Tensor& input) override {
    input_ = input.contiguous(ctx_).clone();
    return inner_->forward(input);
  }
  Tensor backward(const Tensor&) override {
    detail::fail(ErrorCode::kUnsupported, "InputRecorder", "backward is not supported");
  }
  std::string type_name() const override { return "InputRecorder"; }
  const Tensor& input() const { return input_; }

 private:
  std::shared_ptr<Module> inner_;
  Tensor input_;
};

/// How one eligible layer is decomposed and what its rank rule sees.
enum class Method {
  kLinearSvd,
  kLinearResponse,
  kTucker2,
  kCp,
  kChannel,
  kChannelResponse,
  kSpatial,
  kTucker2Response,  // data-aware Tucker-2 of a conv, or of a Linear read as a conv
};

/// One eligible layer: where it is, and its spectra.
struct Site {
  Module* parent = nullptr;
  std::size_t index = 0;
  std::string name;
  Linear* lin = nullptr;
  Conv2d* conv = nullptr;
  Method method = Method::kLinearSvd;
  Tensor calib;                     // recorded input (kResponses)
  std::vector<double> s;            // matrix-like methods: the spectrum the rule measures
  int64_t m = 0, n = 0;             // matrix-like: cost per rank m + n, dense m n
  lowrank::SvdResult svd;           // kLinearSvd
  lowrank::ResponseBasis basis;     // response methods
  std::vector<double> s_out, s_in;  // Tucker-2 per mode
  std::vector<double> core;         // Tucker-2 core energies (R_out, R_in)
  int64_t ro = 0, ri = 0;
  bool converged = true;
  int64_t r1 = 0, r2 = 0;           // chosen
  bool keep_dense = false;          // the global allocation keeps the whole layer
  Tensor map;                       // linear_as_conv: the recorded input of the Flatten before it
  std::shared_ptr<Conv2d> as_conv;  // linear_as_conv: the Linear as an H x W convolution
  Tucker2ResponseTable t2r;         // kTucker2Response
};

/// False, with the reason in the report, for a convolution no rule factorizes here (grouped,
/// 1x1) or whose decomposition did not converge.
bool conv_can_factorize(Conv2d& c, const Site& s, LowRankLayerReport& rep) {
  const Tensor& w = c.weight().value;
  if (c.params().groups != 1 || w.dim(2) * w.dim(3) == 1) {
    rep.reason = c.params().groups != 1 ? "grouped convolution" : "1x1 convolution";
    return false;
  }
  if (!s.converged) {
    rep.reason = "SVD did not converge";
    return false;
  }
  return true;
}

bool matrix_like(Method k) {
  return k != Method::kTucker2 && k != Method::kCp && k != Method::kTucker2Response;
}

const char* method_name(Method k) {
  switch (k) {
    case Method::kLinearSvd:
      return "svd";
    case Method::kLinearResponse:
      return "response";
    case Method::kTucker2:
      return "tucker2";
    case Method::kCp:
      return "cp";
    case Method::kChannel:
      return "channel";
    case Method::kChannelResponse:
      return "channel_response";
    case Method::kSpatial:
      return "spatial";
    case Method::kTucker2Response:
      return "tucker2_response";
  }
  return "?";
}

double kept_fraction(const std::vector<double>& s, int64_t r) {
  double kept = 0.0, total = 0.0;
  for (std::size_t i = s.size(); i-- > 0;) {
    total += s[i] * s[i];
    if (static_cast<int64_t>(i) < r) kept += s[i] * s[i];
  }
  return total == 0.0 ? 1.0 : kept / total;
}

struct Rewriter {
  const lowrank::RankPolicy& policy;
  const FactorizeOptions& opt;
  const ExecContext& ctx;
  std::vector<Site> sites;

  bool skipped(const std::string& name) const {
    return std::find(opt.skip.begin(), opt.skip.end(), name) != opt.skip.end();
  }

  void collect(Module& mod, const std::string& prefix) {
    if (dynamic_cast<FactorizedSequential*>(&mod) != nullptr) return;  // already factorized
    // Parents whose children are used only through the registry, so replace_child is safe:
    // Sequential and the GPT MLP. Other modules may hold their layers as members too.
    const bool replaceable =
        dynamic_cast<Sequential*>(&mod) != nullptr || dynamic_cast<MLP*>(&mod) != nullptr;
    const auto& children = mod.children();
    for (std::size_t i = 0; i < children.size(); ++i) {
      const std::string name = prefix + children[i].first;
      Module* child = children[i].second.get();
      auto* lin = dynamic_cast<Linear*>(child);
      auto* cv = dynamic_cast<Conv2d*>(child);
      const bool eligible =
          replaceable && ((lin != nullptr && opt.linear) ||
                          (cv != nullptr && opt.conv != ConvFactorization::kNone));
      if (!eligible) {
        collect(*child, name + ".");
        continue;
      }
      if (skipped(name)) continue;
      Site s;
      s.parent = &mod;
      s.index = i;
      s.name = name;
      s.lin = lin;
      s.conv = cv;
      sites.push_back(std::move(s));
    }
  }

  /// Runs the calibration batch once through the model with recorders around every site.
  void record(Module& model) {
    struct Hook {
      Module* parent;
      std::size_t index;
      std::shared_ptr<Module> original;
      std::shared_ptr<InputRecorder> recorder;
      Tensor* into;
    };
    std::vector<Hook> hooks;
    auto hook = [&](Module* parent, std::size_t index, Tensor* into) {
      Hook h{parent, index, parent->children()[index].second, nullptr, into};
      h.recorder = std::make_shared<InputRecorder>(h.original);
      parent->replace_child(index, h.recorder);
      hooks.push_back(std::move(h));
    };
    for (Site& s : sites) {
      hook(s.parent, s.index, &s.calib);
      // linear_as_conv: the map a Flatten right before the Linear reads.
      if (s.lin != nullptr && opt.linear_as_conv && s.index > 0 &&
          dynamic_cast<Flatten*>(s.parent->children()[s.index - 1].second.get()) != nullptr) {
        hook(s.parent, s.index - 1, &s.map);
      }
    }
    const bool training = model.is_training();
    model.train(false);
    auto restore = [&] {
      for (Hook& h : hooks) h.parent->replace_child(h.index, h.original);
      model.train(training);
    };
    try {
      (void)model.forward(opt.calibration);
    } catch (...) {
      restore();
      throw;
    }
    for (Hook& h : hooks) *h.into = h.recorder->input();
    restore();
  }

  /// The recorded map of a linear_as_conv site, if it is the Flatten(1) of its calibration input.
  bool reads_map(const Site& s) const {
    if (!opt.linear_as_conv || !s.map.defined() || s.map.rank() != 4) return false;
    // A 1 x 1 map makes the Linear a 1x1 conv: nothing to gain over the response SVD.
    return s.map.dim(1) * s.map.dim(2) * s.map.dim(3) == s.n && s.map.dim(2) * s.map.dim(3) > 1 &&
           s.calib.rank() == 2 && s.calib.dim(0) == s.map.dim(0);
  }

  /// The method and the spectra of one site.
  void analyse(Site& s) {
    const bool responses = opt.energy_source == EnergySource::kResponses;
    if (s.lin != nullptr) {
      const Tensor& w = s.lin->weight().value;
      s.m = w.dim(0);
      s.n = w.dim(1);
      if (responses && needs_spectrum() && reads_map(s)) {
        s.method = Method::kTucker2Response;
        s.as_conv = linear_as_conv(*s.lin, s.map, ctx);
        s.t2r = response_table(*s.as_conv, s.map, ctx);
        s.converged = s.t2r.converged;
      } else if (responses && needs_spectrum()) {
        s.method = Method::kLinearResponse;
        s.basis = lowrank::linear_response_basis(s.calib.reshape({-1, s.n}), w,
                                                 opt.response_centered, ctx);
        s.s = s.basis.s.to_vector<double>();
        s.converged = s.basis.converged;
      } else {
        s.method = Method::kLinearSvd;
        s.svd = lowrank::svd(w, lowrank::SvdMode::kThin, ctx);
        s.s = s.svd.s.to_vector<double>();
        s.converged = s.svd.converged;
      }
      return;
    }
    const Tensor& w = s.conv->weight().value;
    const int64_t co = w.dim(0), ci = w.dim(1), kh = w.dim(2), kw = w.dim(3), hw = kh * kw;
    if (responses && needs_spectrum() && opt.conv == ConvFactorization::kTucker2 &&
        s.conv->params().groups == 1 && hw > 1) {
      s.method = Method::kTucker2Response;
      s.t2r = response_table(*s.conv, s.calib, ctx);
      s.converged = s.t2r.converged;
      return;
    }
    switch (opt.conv) {
      case ConvFactorization::kChannel:
        s.m = co;
        s.n = ci * hw;
        if (responses && needs_spectrum()) {
          s.method = Method::kChannelResponse;
          s.basis = lowrank::response_basis(conv_responses(*s.conv, s.calib, ctx),
                                            opt.response_centered, ctx);
          s.s = s.basis.s.to_vector<double>();
          s.converged = s.basis.converged;
        } else {
          s.method = Method::kChannel;
          if (needs_spectrum())
            s.s =
                lowrank::singular_values(lowrank::channel_unfold(w, ctx), ctx).to_vector<double>();
        }
        return;
      case ConvFactorization::kSpatial:
        s.method = Method::kSpatial;
        s.m = ci * kh;
        s.n = co * kw;
        if (needs_spectrum())
          s.s = lowrank::singular_values(lowrank::spatial_unfold(w, ctx), ctx).to_vector<double>();
        return;
      case ConvFactorization::kCp:
        s.method = Method::kCp;
        break;
      default:
        s.method = Method::kTucker2;
        break;
    }
    s.ro = std::min(co, ci * hw);
    s.ri = std::min(ci, co * hw);
    if (!needs_spectrum()) return;
    if (s.method == Method::kTucker2 && (global() || opt.tucker2_energy == Tucker2Energy::kCore)) {
      s.core = lowrank::tucker2_core_energy(w, ctx).to_vector<double>();
    } else {
      const lowrank::Tucker2Spectra sp = lowrank::tucker2_spectra(w, ctx);
      s.s_out = sp.s_out.to_vector<double>();
      s.s_in = sp.s_in.to_vector<double>();
    }
  }

  bool needs_spectrum() const { return lowrank::needs_singular_values(policy); }
  bool global() const { return policy.rule == lowrank::RankRule::kGlobalEnergy; }
  /// The energy an energy / error rule asks for (error tol -> 1 - tol^2).
  double energy_target() const {
    return policy.rule == lowrank::RankRule::kError ? 1.0 - policy.value * policy.value
                                                    : policy.value;
  }

  /// Per-layer rank choice (every rule but kGlobalEnergy).
  void choose_local(Site& s) {
    if (s.method == Method::kTucker2Response) {
      if (!s.converged) return;  // build reports it; the table holds NaN
      const Tensor& w = (s.as_conv ? *s.as_conv : *s.conv).weight().value;
      const lowrank::Tucker2Ranks t =
          lowrank::tucker2_ranks_for_kept(s.t2r.kept, s.t2r.r_out_max, s.t2r.r_in_max, w.dim(0),
                                          w.dim(1), w.dim(2) * w.dim(3), energy_target());
      s.r1 = std::max(t.out, std::min(policy.min_rank, s.t2r.r_out_max));
      s.r2 = std::max(t.in, std::min(policy.min_rank, s.t2r.r_in_max));
      return;
    }
    if (matrix_like(s.method)) {
      s.r1 = lowrank::select_rank(s.s, s.m, s.n, policy);
      if (!s.s.empty()) s.r1 = std::min<int64_t>(s.r1, static_cast<int64_t>(s.s.size()));
      return;
    }
    const Tensor& w = s.conv->weight().value;
    const int64_t co = w.dim(0), ci = w.dim(1), kh = w.dim(2), kw = w.dim(3), hw = kh * kw;
    const int64_t before = co * ci * hw;
    if (needs_spectrum()) {
      if (!s.core.empty()) {
        const lowrank::Tucker2Ranks t =
            lowrank::tucker2_ranks_for_core_energy(s.core, s.ro, s.ri, co, ci, hw, energy_target());
        s.r1 = std::max(t.out, std::min(policy.min_rank, s.ro));
        s.r2 = std::max(t.in, std::min(policy.min_rank, s.ri));
      } else {
        s.r1 = lowrank::select_rank(s.s_out, co, ci * hw, policy);
        s.r2 = lowrank::select_rank(s.s_in, ci, co * hw, policy);
      }
    } else if (policy.rule == lowrank::RankRule::kFixed) {
      s.r1 = std::min<int64_t>(static_cast<int64_t>(policy.value), s.ro);
      s.r2 = std::min<int64_t>(static_cast<int64_t>(policy.value), s.ri);
    } else {
      const auto budget =
          static_cast<int64_t>(policy.rule == lowrank::RankRule::kParamBudget
                                   ? policy.value
                                   : std::floor(static_cast<double>(before) / policy.value));
      if (s.method == Method::kCp) {
        s.r1 = s.r2 = largest_within(std::max(co, ci) * hw, budget,
                                     [&](int64_t r) { return cp_params(co, ci, kh, kw, r); });
      } else {
        s.r1 = s.r2 = largest_within(std::min(s.ro, s.ri), budget,
                                     [&](int64_t r) { return tucker2_params(co, ci, hw, r, r); });
      }
    }
  }

  /// kGlobalEnergy: one greedy allocation over every site.
  void choose_global() {
    std::vector<lowrank::EnergyChain> chains;
    std::vector<std::vector<lowrank::Tucker2Ranks>> paths(sites.size());
    for (std::size_t k = 0; k < sites.size(); ++k) {
      Site& s = sites[k];
      // Dense parameters of the layer (weight; a response factorization's added bias counts
      // against it).
      double dense = 0;
      if (matrix_like(s.method)) {
        dense = static_cast<double>(s.m * s.n);
        chains.push_back(lowrank::matrix_energy_chain(s.s, s.m, s.n));
        if ((s.method == Method::kLinearResponse || s.method == Method::kChannelResponse) &&
            opt.response_centered) {
          const bool had_bias =
              s.lin != nullptr ? s.lin->bias() != nullptr : s.conv->bias() != nullptr;
          if (!had_bias) chains.back().costs[0] += static_cast<double>(s.m);
        }
      } else {
        const Tensor& w = s.conv->weight().value;
        dense = static_cast<double>(w.numel());
        lowrank::Tucker2Chain t = lowrank::tucker2_energy_chain(s.core, s.ro, s.ri, w.dim(0),
                                                                w.dim(1), w.dim(2) * w.dim(3));
        paths[k] = std::move(t.ranks);
        chains.push_back(std::move(t.chain));
      }
      chains.back() = lowrank::cap_at_dense(chains.back(), dense);
    }
    const std::vector<int64_t> steps =
        lowrank::allocate_global_energy(chains, policy.value, opt.global_normalized);
    for (std::size_t k = 0; k < sites.size(); ++k) {
      Site& s = sites[k];
      if (chains[k].last_is_dense && steps[k] == static_cast<int64_t>(chains[k].gains.size())) {
        s.keep_dense = true;
        continue;
      }
      if (matrix_like(s.method)) {
        s.r1 = std::min<int64_t>(std::max(steps[k], policy.min_rank),
                                 static_cast<int64_t>(s.s.size()));
      } else {
        const lowrank::Tucker2Ranks t = paths[k][static_cast<std::size_t>(steps[k] - 1)];
        s.r1 = std::max(t.out, std::min(policy.min_rank, s.ro));
        s.r2 = std::max(t.in, std::min(policy.min_rank, s.ri));
      }
    }
  }

  /// kTucker2Response: the data-aware Tucker-2 of a conv, or of a Linear read as a conv (then
  /// wrapped in Unflatten ... Flatten).
  std::shared_ptr<Module> build_tucker2_response(Site& s, LowRankLayerReport& rep) {
    Conv2d& c = s.as_conv ? *s.as_conv : *s.conv;
    const Tensor& w = c.weight().value;
    const int64_t co = w.dim(0), ci = w.dim(1), hw = w.dim(2) * w.dim(3);
    const int64_t bias_before = c.bias() != nullptr ? co : 0;
    const int64_t ro = s.r1, ri = s.r2;
    rep.type = s.lin != nullptr ? "Linear" : "Conv2d";
    rep.params_before = rep.params_after = co * ci * hw + bias_before;
    rep.flops_before = rep.flops_after = 2 * co * ci * hw;
    rep.rank = ro;
    rep.rank_in = ri;
    if (!conv_can_factorize(c, s, rep)) return nullptr;
    const int64_t after = lowrank::tucker2_folded_params(co, ci, hw, ro, ri) + co;  // + the bias
    if (after >= rep.params_before) {
      rep.reason = "ranks (" + std::to_string(ro) + ", " + std::to_string(ri) +
                   ") would not save parameters";
      return nullptr;
    }
    rep.params_after = after;
    // Per output position; the input 1x1 runs at the input resolution (H W positions for a
    // Linear read as a conv, one output position).
    const int64_t in_positions = s.as_conv ? s.map.dim(2) * s.map.dim(3) : 1;
    rep.flops_after =
        2 * ((ri < ci ? ci * ri * in_positions : 0) + ri * ro * hw + (ro < co ? ro * co : 0));
    rep.energy_kept = s.t2r.kept[static_cast<std::size_t>((ro - 1) * s.t2r.r_in_max + (ri - 1))];
    rep.factorized = true;
    if (!s.as_conv) {
      auto seq = std::make_shared<FactorizedSequential>("Tucker2Conv2d");
      rep.relative_error = append_tucker2_response(c, s.t2r, s.calib, ro, ri, *seq, ctx);
      seq->set_context(c.context());
      return seq;
    }
    auto seq = std::make_shared<FactorizedSequential>("Tucker2Linear");
    seq->add(std::make_shared<Unflatten>(s.map.dim(1), s.map.dim(2), s.map.dim(3)));
    rep.relative_error = append_tucker2_response(c, s.t2r, s.map, ro, ri, *seq, ctx);
    seq->add(std::make_shared<Flatten>(1));
    seq->set_context(s.lin->context());
    return seq;
  }

  /// The replacement of one site at its chosen rank(s), or nullptr (reason in the report).
  std::shared_ptr<Module> build(Site& s, LowRankLayerReport& rep) {
    rep.name = s.name;
    rep.method = method_name(s.method);
    rep.energy_kept = std::numeric_limits<double>::quiet_NaN();
    if (s.keep_dense) {
      // The global allocation priced this layer's remaining energy below its factorizations.
      const int64_t p = s.lin != nullptr ? s.lin->weight().value.numel() +
                                               (s.lin->bias() ? s.lin->bias()->value.numel() : 0)
                                         : s.conv->weight().value.numel() +
                                               (s.conv->bias() ? s.conv->bias()->value.numel() : 0);
      rep.type = s.lin != nullptr ? "Linear" : "Conv2d";
      rep.params_before = rep.params_after = p;
      rep.flops_before = rep.flops_after =
          2 * (s.lin != nullptr ? s.lin->weight().value.numel() : s.conv->weight().value.numel());
      rep.reason = "the global energy allocation keeps it dense";
      return nullptr;
    }
    if (s.method == Method::kTucker2Response) return build_tucker2_response(s, rep);
    if (s.lin != nullptr) {
      const int64_t m = s.m, n = s.n, r = s.r1;
      const bool adds_bias = s.method == Method::kLinearResponse && opt.response_centered;
      const int64_t bias = s.lin->bias() != nullptr || adds_bias ? m : 0;
      rep.type = "Linear";
      rep.params_before = rep.params_after = m * n + bias;
      rep.flops_before = rep.flops_after = 2 * m * n;
      rep.rank = r;
      if (!s.converged) {
        rep.reason = "SVD did not converge";
        return nullptr;
      }
      if (r == 0 || !lowrank::worth_factorizing(m, n, r)) {
        rep.reason = "rank " + std::to_string(r) + " would not save parameters";
        return nullptr;
      }
      rep.params_after = r * (m + n) + bias;
      rep.flops_after = 2 * r * (m + n);
      rep.factorized = true;
      if (s.method == Method::kLinearSvd) {
        rep.relative_error = tail_ratio(s.s, r);
        rep.energy_kept = 1.0 - rep.relative_error * rep.relative_error;
        return linear_from_svd(*s.lin, s.svd, r, ctx);
      }
      const lowrank::ProjectedFactors f = lowrank::project_output(
          s.lin->weight().value, s.basis.u.slice(1, 0, r), s.basis.mean, ctx);
      rep.relative_error = f.relative_error;
      rep.energy_kept = kept_fraction(s.s, r);
      return linear_pair(*s.lin, f.first, f.second, adds_bias ? f.bias_shift : Tensor(), ctx);
    }
    Conv2d& c = *s.conv;
    const Tensor& w = c.weight().value;
    const int64_t co = w.dim(0), ci = w.dim(1), kh = w.dim(2), kw = w.dim(3), hw = kh * kw;
    const bool adds_bias = s.method == Method::kChannelResponse && opt.response_centered;
    const int64_t bias_before = c.bias() != nullptr ? co : 0;
    const int64_t bias = c.bias() != nullptr || adds_bias ? co : 0;
    const int64_t before = co * ci * hw;
    rep.type = "Conv2d";
    rep.params_before = rep.params_after = before + bias_before;
    rep.flops_before = rep.flops_after = 2 * before;
    if (!conv_can_factorize(c, s, rep)) return nullptr;
    if (matrix_like(s.method)) {
      const int64_t r = s.r1;
      rep.rank = r;
      if (r == 0 || r * (s.m + s.n) + bias - bias_before >= before) {
        rep.reason = "rank " + std::to_string(r) + " would not save parameters";
        return nullptr;
      }
      rep.params_after = r * (s.m + s.n) + bias;
      rep.flops_after = 2 * r * (s.m + s.n);
      rep.factorized = true;
      if (s.method == Method::kChannelResponse) {
        const lowrank::ProjectedFactors f =
            lowrank::project_output(w, s.basis.u.slice(1, 0, r), s.basis.mean, ctx);
        rep.relative_error = f.relative_error;
        rep.energy_kept = kept_fraction(s.s, r);
        return conv_channel_pair(c, f.first, f.second, adds_bias ? f.bias_shift : Tensor(), ctx);
      }
      const lowrank::ConvSvdResult f = s.method == Method::kChannel
                                           ? lowrank::channel_svd(w, r, ctx)
                                           : lowrank::spatial_svd(w, r, ctx);
      rep.relative_error = f.relative_error;
      rep.energy_kept = 1.0 - f.relative_error * f.relative_error;
      return s.method == Method::kChannel ? conv_channel_pair(c, f.first, f.second, Tensor(), ctx)
                                          : conv_from_spatial(c, f, ctx);
    }
    if (s.method == Method::kCp) {
      // CP has one rank: the larger of the two channel-mode ranks (a heuristic, docs/lowrank.md).
      const int64_t r = std::max(s.r1, s.r2);
      rep.rank = r;
      if (r == 0 || cp_params(co, ci, kh, kw, r) >= before) {
        rep.reason = "rank " + std::to_string(r) + " would not save parameters";
        return nullptr;
      }
      const lowrank::CpResult cp = lowrank::cp_als(w, r, opt.cp, ctx);
      rep.relative_error = cp.relative_error;
      rep.params_after = cp_params(co, ci, kh, kw, r) + bias;
      rep.flops_after = 2 * cp_params(co, ci, kh, kw, r);
      rep.factorized = true;
      return conv_from_cp(c, cp, ctx);
    }
    const int64_t r1 = s.r1, r2 = s.r2;
    rep.rank = r1;
    rep.rank_in = r2;
    if (r1 == 0 || r2 == 0 || tucker2_params(co, ci, hw, r1, r2) >= before) {
      rep.reason = "ranks (" + std::to_string(r1) + ", " + std::to_string(r2) +
                   ") would not save parameters";
      return nullptr;
    }
    const lowrank::Tucker2Result t = lowrank::tucker2(w, r1, r2, ctx);
    rep.relative_error = t.relative_error;
    rep.energy_kept = 1.0 - t.relative_error * t.relative_error;
    rep.params_after = tucker2_params(co, ci, hw, r1, r2) + bias;
    rep.flops_after = 2 * tucker2_params(co, ci, hw, r1, r2);
    rep.factorized = true;
    return conv_from_tucker2(c, t, ctx);
  }

  std::vector<LowRankLayerReport> run(Module& model) {
    collect(model, "");
    if (sites.empty()) return {};
    const bool responses = opt.energy_source == EnergySource::kResponses;
    for (const Site& s : sites) {
      FRUGAL_REQUIRE(s.conv == nullptr || !responses || opt.conv == ConvFactorization::kChannel ||
                         opt.conv == ConvFactorization::kTucker2,
                     "factorize_model",
                     "EnergySource::kResponses supports convolutions only "
                     "with ConvFactorization::kChannel or kTucker2 (layer ",
                     s.name, ")");
      FRUGAL_REQUIRE(!(global() && responses && opt.conv == ConvFactorization::kTucker2 &&
                       (s.conv != nullptr || opt.linear_as_conv)),
                     "factorize_model",
                     "RankRule::kGlobalEnergy does not support the data-aware Tucker-2 "
                     "(EnergySource::kResponses with ConvFactorization::kTucker2; layer ",
                     s.name, ")");
    }
    if (opt.energy_source == EnergySource::kResponses && needs_spectrum()) record(model);
    for (Site& s : sites) analyse(s);
    if (global()) {
      choose_global();
    } else {
      for (Site& s : sites) choose_local(s);
    }
    std::vector<LowRankLayerReport> reports;
    for (Site& s : sites) {
      LowRankLayerReport rep;
      std::shared_ptr<Module> repl = build(s, rep);
      if (repl) {
        Module* child = s.parent->children()[s.index].second.get();
        repl->train(child->is_training());
        s.parent->replace_child(s.index, std::move(repl));
      }
      reports.push_back(std::move(rep));
    }
    return reports;
  }
};

}  // namespace

std::shared_ptr<Sequential> factorize_linear(Linear& layer, int64_t rank, const ExecContext& ctx) {
  const char* op = "factorize_linear";
  const Tensor& w = layer.weight().value;
  const int64_t k = std::min(w.dim(0), w.dim(1));
  FRUGAL_REQUIRE(rank >= 1 && rank <= k, op, "rank ", rank, " outside [1, min(out, in) = ", k, "]");
  const lowrank::SvdResult f = lowrank::svd(w, lowrank::SvdMode::kThin, ctx);
  return linear_from_svd(layer, f, rank, ctx);
}

std::shared_ptr<Sequential> factorize_conv_tucker2(Conv2d& layer, int64_t rank_out, int64_t rank_in,
                                                   const ExecContext& ctx) {
  require_dense_conv("factorize_conv_tucker2", layer);
  const lowrank::Tucker2Result t = lowrank::tucker2(layer.weight().value, rank_out, rank_in, ctx);
  return conv_from_tucker2(layer, t, ctx);
}

std::shared_ptr<Sequential> factorize_conv_cp(Conv2d& layer, int64_t rank,
                                              const lowrank::CpOptions& opt,
                                              const ExecContext& ctx) {
  require_dense_conv("factorize_conv_cp", layer);
  const lowrank::CpResult cp = lowrank::cp_als(layer.weight().value, rank, opt, ctx);
  return conv_from_cp(layer, cp, ctx);
}

std::shared_ptr<Sequential> factorize_conv_channel(Conv2d& layer, int64_t rank,
                                                   const ExecContext& ctx) {
  require_dense_conv("factorize_conv_channel", layer);
  const lowrank::ConvSvdResult f = lowrank::channel_svd(layer.weight().value, rank, ctx);
  return conv_channel_pair(layer, f.first, f.second, Tensor(), ctx);
}

std::shared_ptr<Sequential> factorize_conv_spatial(Conv2d& layer, int64_t rank,
                                                   const ExecContext& ctx) {
  require_dense_conv("factorize_conv_spatial", layer);
  const lowrank::ConvSvdResult f = lowrank::spatial_svd(layer.weight().value, rank, ctx);
  return conv_from_spatial(layer, f, ctx);
}

std::shared_ptr<Sequential> factorize_linear_response(Linear& layer, const Tensor& inputs,
                                                      int64_t rank, bool centered,
                                                      const ExecContext& ctx) {
  const char* op = "factorize_linear_response";
  const Tensor& w = layer.weight().value;
  const int64_t m = w.dim(0), n = w.dim(1);
  FRUGAL_REQUIRE(inputs.defined() && inputs.rank() >= 1 && inputs.numel() > 0 &&
                     inputs.dim(inputs.rank() - 1) == n,
                 op, "inputs must be non-empty (..., ", n, ")");
  const int64_t rows = inputs.numel() / n;
  const int64_t k = std::min({m, n, rows});
  FRUGAL_REQUIRE(rank >= 1 && rank <= k, op, "rank ", rank, " outside [1, min(out, in, rows) = ", k,
                 "]");
  const lowrank::ResponseBasis b =
      lowrank::linear_response_basis(inputs.contiguous(ctx).reshape({rows, n}), w, centered, ctx);
  FRUGAL_REQUIRE(rank <= b.u.dim(1), op, "rank ", rank, " exceeds the ", b.u.dim(1),
                 " response directions");
  const lowrank::ProjectedFactors f =
      lowrank::project_output(w, b.u.slice(1, 0, rank), b.mean, ctx);
  return linear_pair(layer, f.first, f.second, centered ? f.bias_shift : Tensor(), ctx);
}

std::shared_ptr<Sequential> factorize_conv_response(Conv2d& layer, const Tensor& inputs,
                                                    int64_t rank, bool centered,
                                                    const ExecContext& ctx) {
  const char* op = "factorize_conv_response";
  check_response_inputs(op, layer, inputs);
  const Tensor& w = layer.weight().value;
  FRUGAL_REQUIRE(rank >= 1 && rank <= w.dim(0), op, "rank ", rank,
                 " outside [1, C_out = ", w.dim(0), "]");
  const lowrank::ResponseBasis b =
      lowrank::response_basis(conv_responses(layer, inputs, ctx), centered, ctx);
  FRUGAL_REQUIRE(rank <= b.u.dim(1), op, "rank ", rank, " exceeds the ", b.u.dim(1),
                 " response directions");
  const lowrank::ProjectedFactors f =
      lowrank::project_output(w, b.u.slice(1, 0, rank), b.mean, ctx);
  return conv_channel_pair(layer, f.first, f.second, centered ? f.bias_shift : Tensor(), ctx);
}

Tucker2ResponseTable tucker2_response_table(Conv2d& layer, const Tensor& inputs,
                                            const ExecContext& ctx) {
  check_response_inputs("tucker2_response_table", layer, inputs);
  return response_table(layer, inputs, ctx);
}

std::shared_ptr<Sequential> factorize_conv_tucker2_response(Conv2d& layer, const Tensor& inputs,
                                                            int64_t rank_out, int64_t rank_in,
                                                            const ExecContext& ctx) {
  const char* op = "factorize_conv_tucker2_response";
  check_response_inputs(op, layer, inputs);
  const Tensor& w = layer.weight().value;
  FRUGAL_REQUIRE(rank_out >= 1 && rank_out <= w.dim(0) && rank_in >= 1 && rank_in <= w.dim(1), op,
                 "ranks (", rank_out, ", ", rank_in, ") outside [1, C_out = ", w.dim(0),
                 "] x [1, C_in = ", w.dim(1), "]");
  const Tucker2ResponseTable t = response_table(layer, inputs, ctx);
  FRUGAL_REQUIRE(rank_out <= t.r_out_max && rank_in <= t.r_in_max, op, "ranks (", rank_out, ", ",
                 rank_in, ") exceed the (", t.r_out_max, ", ", t.r_in_max,
                 ") directions the calibration rows give");
  auto seq = std::make_shared<FactorizedSequential>("Tucker2Conv2d");
  (void)append_tucker2_response(layer, t, inputs, rank_out, rank_in, *seq, ctx);
  seq->set_context(layer.context());
  return seq;
}

Unflatten::Unflatten(int64_t channels, int64_t height, int64_t width)
    : c_(channels), h_(height), w_(width) {
  FRUGAL_REQUIRE(channels > 0 && height > 0 && width > 0, "Unflatten", "map (", channels, ", ",
                 height, ", ", width, ") must be positive");
}

Tensor Unflatten::forward(const Tensor& input) {
  FRUGAL_REQUIRE(input.defined() && input.rank() == 2 && input.dim(1) == c_ * h_ * w_, "Unflatten",
                 "input must be (N, ", c_ * h_ * w_, "), got ",
                 input.defined() ? input.shape() : Shape{});
  return input.contiguous(ctx_).reshape({input.dim(0), c_, h_, w_});
}

Tensor Unflatten::backward(const Tensor& grad_output) {
  FRUGAL_REQUIRE(grad_output.defined() && grad_output.rank() == 4 && grad_output.dim(1) == c_ &&
                     grad_output.dim(2) == h_ && grad_output.dim(3) == w_,
                 "Unflatten::backward", "grad_output must be (N, ", c_, ", ", h_, ", ", w_, ")");
  return grad_output.contiguous(ctx_).reshape({grad_output.dim(0), c_ * h_ * w_});
}

std::vector<LowRankLayerReport> factorize_model(Module& model, const lowrank::RankPolicy& policy,
                                                const FactorizeOptions& opt,
                                                const ExecContext& ctx) {
  const char* op = "factorize_model";
  // Validate the policy once up front (select_rank checks the value against its rule).
  if (!lowrank::needs_singular_values(policy)) {
    (void)lowrank::select_rank({}, 2, 2, policy);
  } else {
    const std::vector<double> probe{1.0};
    (void)lowrank::select_rank(probe, 2, 2, policy);
  }
  if (opt.energy_source == EnergySource::kResponses) {
    FRUGAL_REQUIRE(opt.calibration.defined() && opt.calibration.numel() > 0, op,
                   "EnergySource::kResponses needs calibration inputs");
  }
  FRUGAL_REQUIRE(
      !(policy.rule == lowrank::RankRule::kGlobalEnergy && opt.conv == ConvFactorization::kCp), op,
      "RankRule::kGlobalEnergy does not support CP convolutions");
  FRUGAL_REQUIRE(!opt.linear_as_conv || (opt.energy_source == EnergySource::kResponses &&
                                         opt.conv == ConvFactorization::kTucker2),
                 op,
                 "linear_as_conv needs EnergySource::kResponses with ConvFactorization::kTucker2");
  Rewriter rw{policy, opt, ctx, {}};
  return rw.run(model);
}

LowRankSummary summarize(const std::vector<LowRankLayerReport>& reports) {
  LowRankSummary s;
  for (const LowRankLayerReport& r : reports) {
    s.eligible_params_before += r.params_before;
    s.eligible_params_after += r.params_after;
    if (!r.factorized) continue;
    ++s.layers;
    s.params_before += r.params_before;
    s.params_after += r.params_after;
    s.flops_before += r.flops_before;
    s.flops_after += r.flops_after;
  }
  if (s.eligible_params_after > 0) {
    s.eligible_ratio = static_cast<double>(s.eligible_params_before) /
                       static_cast<double>(s.eligible_params_after);
  }
  if (s.params_after > 0) {
    s.param_ratio = static_cast<double>(s.params_before) / static_cast<double>(s.params_after);
  }
  return s;
}

namespace {

double seconds_between(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

/// Factorizes `model` with the loop's thread count and fills the first fields of the result.
LowRankFineTuneResult factorize_for_fine_tune(Module& model, const lowrank::RankPolicy& policy,
                                              const FactorizeOptions& fopt,
                                              const TrainOptions& train_opt) {
  LowRankFineTuneResult res;
  ExecContext ctx;
  ctx.num_threads = train_opt.num_threads;
  const auto t0 = std::chrono::steady_clock::now();
  ctx.run([&] { res.layers = factorize_model(model, policy, fopt, ctx); });
  res.factorize_seconds = seconds_between(t0);
  res.summary = summarize(res.layers);
  return res;
}

}  // namespace

LowRankFineTuneResult fine_tune_factorized_classifier(
    Module& model, const lowrank::RankPolicy& policy, const FactorizeOptions& fopt,
    const LabeledData& train, const LabeledData& test, const AdamWOptions& adamw,
    const TrainOptions& train_opt) {
  LowRankFineTuneResult res = factorize_for_fine_tune(model, policy, fopt, train_opt);
  if (test.inputs.defined() && test.inputs.numel() > 0) {
    DataLoaderOptions eo;
    eo.batch_size = 256;  // as train_classifier evaluates
    res.accuracy_before_fine_tune = evaluate_accuracy(
        model, DataLoader(std::make_shared<TensorDataset>(test.inputs, test.labels), eo));
  }
  AdamW opt(model.named_parameters(), adamw);
  res.fine_tune = train_classifier(model, opt, train, test, train_opt);
  return res;
}

LowRankFineTuneResult fine_tune_factorized_char_gpt(GPT& model, const lowrank::RankPolicy& policy,
                                                    const FactorizeOptions& fopt,
                                                    const CharCorpus& corpus,
                                                    const AdamWOptions& adamw,
                                                    const TrainOptions& train_opt) {
  LowRankFineTuneResult res = factorize_for_fine_tune(model, policy, fopt, train_opt);
  const int64_t t = train_opt.seq_len > 0 ? train_opt.seq_len : model.config().block_size;
  if (train_opt.eval_batches > 0 && t <= model.config().block_size) {
    // The windows train_char_gpt's val_loss uses (its evaluation key), so the two compare.
    const uint64_t eval_seed = char_eval_seed(train_opt);
    res.val_loss_before_fine_tune =
        estimate_char_loss(model, corpus, CorpusSplit::kVal, train_opt.eval_batches,
                           train_opt.batch_size, t, eval_seed);
  }
  AdamW opt(model.named_parameters(), adamw);
  res.fine_tune = train_char_gpt(model, opt, corpus, train_opt);
  return res;
}

// ---- LoRALinear -------------------------------------------------------------------------------

LoRALinear::LoRALinear(std::shared_ptr<Linear> base, int64_t rank, double alpha, uint64_t seed)
    : base_(std::move(base)), rank_(rank) {
  const char* op = "LoRALinear";
  FRUGAL_REQUIRE(base_ != nullptr, op, "base layer is null");
  const int64_t in = base_->in_features(), out = base_->out_features();
  FRUGAL_REQUIRE(rank >= 1 && rank <= std::min(in, out), op, "rank ", rank,
                 " outside [1, min(in, out) = ", std::min(in, out), "]");
  FRUGAL_REQUIRE(std::isfinite(alpha) && alpha > 0.0, op, "alpha ", alpha, " must be > 0");
  scaling_ = alpha / static_cast<double>(rank);
  base_->weight().trainable = false;
  if (base_->bias() != nullptr) base_->bias()->trainable = false;
  register_module("base", base_);
  const Tensor& w = base_->weight().value;
  // kaiming_uniform_(a = sqrt(5)) on A (r, in), as the LoRA reference code: bound 1 / sqrt(in).
  const auto bound = static_cast<float>(1.0 / std::sqrt(static_cast<double>(in)));
  ExecContext init;
  init.seed = seed;
  Tensor a = Tensor::empty({rank, in}, w.dtype(), w.device());
  fill_uniform(a, -bound, bound, init);
  a_ = &register_parameter("lora_a", std::move(a));
  b_ = &register_parameter("lora_b", Tensor::zeros({out, rank}, w.dtype(), w.device()));
}

Tensor LoRALinear::forward(const Tensor& input) {
  Tensor y = base_->forward(input);  // validates the input
  if (merged_) return y;
  const int64_t in = base_->in_features(), out = base_->out_features();
  x_ = input.contiguous(ctx_).reshape({-1, in});                 // (N, in)
  h_ = gemm(x_, a_->value, GemmOptions{.trans_b = true}, ctx_);  // (N, r)
  Tensor rows = y.reshape({-1, out});                            // (N, out), shares y's storage
  gemm_into(h_, b_->value, rows, GemmOptions{.trans_b = true, .alpha = scaling_, .beta = 1.0},
            ctx_);
  return y;
}

Tensor LoRALinear::backward(const Tensor& grad_output) {
  const char* op = "LoRALinear::backward";
  Tensor gx = base_->backward(grad_output);  // validates; frozen base: input gradient only
  if (merged_) return gx;
  FRUGAL_REQUIRE(x_.defined(), op, "called before forward");
  const int64_t in = base_->in_features(), out = base_->out_features();
  const Tensor g = grad_output.contiguous(ctx_).reshape({-1, out});  // (N, out)
  if (b_->trainable) {
    // dL/dB (out, r) += s g^T h.
    gemm_into(g, h_, b_->grad, GemmOptions{.trans_a = true, .alpha = scaling_, .beta = 1.0}, ctx_);
  }
  const Tensor gh = gemm(g, b_->value, GemmOptions{.alpha = scaling_}, ctx_);  // (N, r)
  if (a_->trainable) {
    // dL/dA (r, in) += (s g B)^T x.
    gemm_into(gh, x_, a_->grad, GemmOptions{.trans_a = true, .beta = 1.0}, ctx_);
  }
  Tensor rows = gx.reshape({-1, in});
  gemm_into(gh, a_->value, rows, GemmOptions{.beta = 1.0}, ctx_);  // dL/dx += s g B A
  return gx;
}

void LoRALinear::merge() {
  if (merged_) return;
  gemm_into(b_->value, a_->value, base_->weight().value,
            GemmOptions{.alpha = scaling_, .beta = 1.0}, ctx_);
  merged_ = true;
}

void LoRALinear::unmerge() {
  if (!merged_) return;
  gemm_into(b_->value, a_->value, base_->weight().value,
            GemmOptions{.alpha = -scaling_, .beta = 1.0}, ctx_);
  merged_ = false;
}

}  // namespace frugal::nn
