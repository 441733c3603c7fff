// SGD and AdamW against scalar references written in double from the pseudo-code of the PyTorch
// documentation (torch.optim.SGD, torch.optim.AdamW), state save / restore, gradient clipping
// against a closed form, determinism across thread counts, and bad input.
#include "frugal/nn/optim.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "frugal/nn/module.hpp"
#include "support/tolerance.hpp"

namespace frugal::nn {
namespace {

using frugal::testing::all_close;
using frugal::testing::random_uniform;

/// A module that only holds parameters (the optimizers never call forward / backward).
class Holder : public Module {
 public:
  Parameter& add(const std::string& name, Tensor value, bool trainable = true) {
    return register_parameter(name, std::move(value), trainable);
  }
  Tensor forward(const Tensor& x) override { return x; }
  Tensor backward(const Tensor& g) override { return g; }
  std::string type_name() const override { return "Holder"; }
};

/// The gradient of step t: deterministic values in [-1, 1) (as the dtype).
Tensor grad_at(Shape shape, int t, DType dtype, uint32_t salt = 0) {
  return random_uniform(shape, 1000u + 17u * static_cast<uint32_t>(t) + salt).to(dtype);
}

// ---- references from the PyTorch docs' pseudo-code, in double ---------------------------------

/// torch.optim.SGD, "Algorithm" box: g <- g + wd p; b <- g (t = 1) or mu b + (1 - tau) g;
/// g <- g + mu b (nesterov) or b; p <- p - lr g.
struct RefSgd {
  SgdOptions o;
  std::vector<double> b{};
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& grad) {
    ++t;
    if (b.empty()) b.assign(p.size(), 0.0);
    for (std::size_t i = 0; i < p.size(); ++i) {
      double g = grad[i];
      if (o.weight_decay != 0) g += o.weight_decay * p[i];
      if (o.momentum != 0) {
        b[i] = t > 1 ? o.momentum * b[i] + (1 - o.dampening) * g : g;
        g = o.nesterov ? g + o.momentum * b[i] : b[i];
      }
      p[i] -= o.lr * g;
    }
  }
};

/// torch.optim.AdamW, "Algorithm" box: p <- p - lr wd p; m <- b1 m + (1 - b1) g;
/// v <- b2 v + (1 - b2) g^2; mh = m / (1 - b1^t); vh = v / (1 - b2^t); p <- p - lr mh / (sqrt(vh) +
/// eps).
struct RefAdamW {
  AdamWOptions o;
  std::vector<double> m{}, v{};
  int t = 0;
  void step(std::vector<double>& p, const std::vector<double>& g) {
    ++t;
    if (m.empty()) m.assign(p.size(), 0.0), v.assign(p.size(), 0.0);
    for (std::size_t i = 0; i < p.size(); ++i) {
      p[i] -= o.lr * o.weight_decay * p[i];
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      const double mh = m[i] / (1 - std::pow(o.beta1, t));
      const double vh = v[i] / (1 - std::pow(o.beta2, t));
      p[i] -= o.lr * mh / (std::sqrt(vh) + o.eps);
    }
  }
};

constexpr int kSteps = 6;

/// Runs `opt_factory`'s optimizer and the reference for kSteps on two parameters.
template <class Ref, class MakeOpt>
void check_against_ref(Ref ref_proto, MakeOpt make_opt, DType dtype, double rtol, double atol) {
  Holder h;
  Parameter& w = h.add("w", random_uniform({7, 5}, 1).to(dtype));
  Parameter& b = h.add("b", random_uniform({5}, 2).to(dtype));
  auto opt = make_opt(h.named_parameters());
  std::vector<double> rw = w.value.to_vector<double>(), rb = b.value.to_vector<double>();
  Ref ref_w = ref_proto, ref_b = ref_proto;
  for (int t = 0; t < kSteps; ++t) {
    w.grad.copy_from(grad_at({7, 5}, t, dtype));
    b.grad.copy_from(grad_at({5}, t, dtype, 7));
    opt->step();
    ref_w.step(rw, w.grad.to_vector<double>());
    ref_b.step(rb, b.grad.to_vector<double>());
    ASSERT_TRUE(all_close(w.value.to_vector<double>(), rw, rtol, atol)) << "step " << t;
    ASSERT_TRUE(all_close(b.value.to_vector<double>(), rb, rtol, atol)) << "step " << t;
  }
  EXPECT_EQ(opt->step_count(), kSteps);
}

struct SgdCase {
  const char* name;
  SgdOptions o;
};

void PrintTo(const SgdCase& c, std::ostream* os) { *os << c.name; }

class SgdVsRef : public ::testing::TestWithParam<SgdCase> {};

TEST_P(SgdVsRef, F64MatchesDocsPseudoCode) {
  const SgdOptions o = GetParam().o;
  // f64 arithmetic in a different association order than the reference: a few ulps.
  check_against_ref(
      RefSgd{o}, [&](auto params) { return std::make_unique<SGD>(params, o); }, DType::kF64, 1e-13,
      1e-14);
}

TEST_P(SgdVsRef, F32MatchesDocsPseudoCode) {
  const SgdOptions o = GetParam().o;
  // f32 arithmetic (eps 6e-8) over 6 steps of values O(1): relative error well under 1e-5.
  check_against_ref(
      RefSgd{o}, [&](auto params) { return std::make_unique<SGD>(params, o); }, DType::kF32, 1e-5,
      1e-6);
}

INSTANTIATE_TEST_SUITE_P(Variants, SgdVsRef,
                         ::testing::Values(SgdCase{"plain", {0.1, 0, 0, false, 0}},
                                           SgdCase{"momentum", {0.05, 0.9, 0, false, 0}},
                                           SgdCase{"dampening", {0.05, 0.9, 0.3, false, 0}},
                                           SgdCase{"nesterov", {0.05, 0.9, 0, true, 0}},
                                           SgdCase{"weight_decay", {0.1, 0, 0, false, 0.01}},
                                           SgdCase{"all", {0.05, 0.8, 0, true, 0.05}},
                                           SgdCase{"damp_decay", {0.02, 0.5, 0.5, false, 0.1}}),
                         [](const auto& info) { return std::string(info.param.name); });

struct AdamCase {
  const char* name;
  AdamWOptions o;
};

void PrintTo(const AdamCase& c, std::ostream* os) { *os << c.name; }

class AdamWVsRef : public ::testing::TestWithParam<AdamCase> {};

TEST_P(AdamWVsRef, F64MatchesDocsPseudoCode) {
  const AdamWOptions o = GetParam().o;
  // torch's algebra (lerp, sqrt(v)/sqrt(bc2)) differs from the docs' by rounding only; the
  // first steps divide by sqrt(v) ~ |g|, so allow a few hundred ulps.
  check_against_ref(
      RefAdamW{o}, [&](auto params) { return std::make_unique<AdamW>(params, o); }, DType::kF64,
      1e-12, 1e-13);
}

TEST_P(AdamWVsRef, F32MatchesDocsPseudoCode) {
  const AdamWOptions o = GetParam().o;
  // f32 with a division by sqrt(v) + eps: relative error of a few 1e-7 per step.
  check_against_ref(
      RefAdamW{o}, [&](auto params) { return std::make_unique<AdamW>(params, o); }, DType::kF32,
      2e-5, 2e-6);
}

INSTANTIATE_TEST_SUITE_P(
    Variants, AdamWVsRef,
    ::testing::Values(AdamCase{"defaults", {}}, AdamCase{"no_decay", {1e-2, 0.9, 0.999, 1e-8, 0}},
                      AdamCase{"strong_decay", {1e-2, 0.9, 0.99, 1e-6, 0.5}},
                      AdamCase{"low_beta1", {3e-3, 0.3, 0.9, 1e-8, 0.1}},  // lerp's other branch
                      AdamCase{"beta_zero", {1e-3, 0.0, 0.0, 1e-3, 0.01}}),
    [](const auto& info) { return std::string(info.param.name); });

// ---- behaviour -------------------------------------------------------------------------------

TEST(Optimizer, SkipsFrozenParametersAndZeroesGrads) {
  Holder h;
  Parameter& a = h.add("a", Tensor::full({3}, 1.0));
  Parameter& f = h.add("f", Tensor::full({3}, 1.0), /*trainable=*/false);
  a.grad.fill(1.0);
  f.grad.fill(1.0);
  SGD opt(h.named_parameters(), {.lr = 0.5});
  ASSERT_EQ(opt.params().size(), 1u);
  EXPECT_EQ(opt.params()[0].name, "a");
  opt.step();
  EXPECT_EQ(a.value.to_vector<float>(), (std::vector<float>{0.5f, 0.5f, 0.5f}));
  EXPECT_EQ(f.value.to_vector<float>(), (std::vector<float>{1, 1, 1}));
  opt.zero_grad();
  EXPECT_EQ(a.grad.to_vector<float>(), (std::vector<float>{0, 0, 0}));
  EXPECT_EQ(f.grad.to_vector<float>(), (std::vector<float>{1, 1, 1}));  // not the optimizer's
}

TEST(Optimizer, SetLrChangesTheNextStep) {
  Holder h;
  Parameter& a = h.add("a", Tensor::full({2}, 0.0, DType::kF64));
  SGD opt(h.named_parameters(), {.lr = 1.0});
  a.grad.fill(1.0);
  opt.set_lr(0.25);
  EXPECT_EQ(opt.lr(), 0.25);
  opt.step();
  EXPECT_EQ(a.value.to_vector<double>(), (std::vector<double>{-0.25, -0.25}));
}

TEST(Optimizer, StateRoundTripContinuesBitForBit) {
  for (int kind = 0; kind < 2; ++kind) {
    Holder h1, h2;
    Parameter& p1 = h1.add("layer.w", random_uniform({64}, 3));
    Parameter& p2 = h2.add("layer.w", Tensor::zeros({64}));
    auto make = [&](Holder& h) -> std::unique_ptr<Optimizer> {
      if (kind == 0) return std::make_unique<SGD>(h.named_parameters(), SgdOptions{0.1, 0.9});
      return std::make_unique<AdamW>(h.named_parameters(), AdamWOptions{});
    };
    auto o1 = make(h1);
    auto o2 = make(h2);
    for (int t = 0; t < 3; ++t) {
      p1.grad.copy_from(grad_at({64}, t, DType::kF32));
      o1->step();
    }
    o1->set_lr(0.05);
    OptimizerState s = o1->state();
    // Deep copy, as a checkpoint would hold it.
    for (auto& [k, v] : s.tensors) v = v.clone();
    EXPECT_EQ(s.tensors.count(kind == 0 ? "layer.w.momentum_buffer" : "layer.w.exp_avg_sq"), 1u);
    EXPECT_EQ(s.scalars.at("step"), 3.0);
    o2->load_state(s);
    p2.value.copy_from(p1.value);
    EXPECT_EQ(o2->step_count(), 3);
    EXPECT_EQ(o2->lr(), 0.05);
    for (int t = 3; t < 6; ++t) {
      p1.grad.copy_from(grad_at({64}, t, DType::kF32));
      p2.grad.copy_from(grad_at({64}, t, DType::kF32));
      o1->step();
      o2->step();
    }
    EXPECT_EQ(p1.value.to_vector<float>(), p2.value.to_vector<float>()) << "kind " << kind;
  }
}

TEST(Optimizer, ResultsDoNotDependOnThreadCount) {
  // Larger than several grains, so oneTBB really splits the loops.
  const Shape shape{300000};
  std::vector<float> results[2];
  for (int threads : {1, 2}) {
    ExecContext ctx;
    ctx.num_threads = threads;
    Holder h;
    Parameter& p = h.add("p", random_uniform(shape, 5));
    AdamW opt(h.named_parameters(), {});
    for (int t = 0; t < 3; ++t) {
      p.grad.copy_from(grad_at(shape, t, DType::kF32));
      opt.step(ctx);
    }
    results[threads - 1] = p.value.to_vector<float>();
  }
  EXPECT_EQ(results[0], results[1]);
}

// ---- clip_grad_norm ----------------------------------------------------------------------------

TEST(ClipGradNorm, ScalesToMaxNormAndReturnsTheTotal) {
  Holder h;
  Parameter& a = h.add("a", Tensor::zeros({4, 3}, DType::kF64));
  Parameter& b = h.add("b", Tensor::zeros({5}, DType::kF64));
  a.grad.copy_from(grad_at({4, 3}, 0, DType::kF64));
  b.grad.copy_from(grad_at({5}, 1, DType::kF64));
  const std::vector<double> ga = a.grad.to_vector<double>(), gb = b.grad.to_vector<double>();
  double sq = 0;
  for (double x : ga) sq += x * x;
  for (double x : gb) sq += x * x;
  const double total = std::sqrt(sq);
  const double max_norm = 0.5 * total;
  const double norm = clip_grad_norm(h.named_parameters(), max_norm);
  // Both sum squares in double; only the summation order may differ.
  EXPECT_NEAR(norm, total, 1e-14 * total);
  const double coef = max_norm / (total + 1e-6);
  std::vector<double> wa, wb;
  for (double x : ga) wa.push_back(x * coef);
  for (double x : gb) wb.push_back(x * coef);
  // One multiplication by coef (rounded once) in f64.
  EXPECT_TRUE(all_close(a.grad.to_vector<double>(), wa, 1e-15, 0));
  EXPECT_TRUE(all_close(b.grad.to_vector<double>(), wb, 1e-15, 0));
  // The clipped norm is max_norm (up to the 1e-6 guard).
  EXPECT_NEAR(clip_grad_norm(h.parameters(), 1e9), max_norm, 1e-5);
}

TEST(ClipGradNorm, LeavesSmallGradientsAloneAndSkipsFrozen) {
  Holder h;
  Parameter& a = h.add("a", Tensor::zeros({2}));
  Parameter& f = h.add("f", Tensor::zeros({2}), false);
  a.grad.copy_from(Tensor::from_vector(std::vector<float>{3, 4}, {2}));
  f.grad.fill(100.0);
  EXPECT_DOUBLE_EQ(clip_grad_norm(h.parameters(), 10.0), 5.0);
  EXPECT_EQ(a.grad.to_vector<float>(), (std::vector<float>{3, 4}));
  EXPECT_DOUBLE_EQ(clip_grad_norm(h.parameters(), 0.0), 5.0);
  EXPECT_EQ(a.grad.to_vector<float>(), (std::vector<float>{0, 0}));  // max_norm 0 zeroes them
}

TEST(ClipGradNorm, NonFiniteNormIsReturnedAndScalesLikeTorch) {
  const double inf = std::numeric_limits<double>::infinity();
  Holder h;
  Parameter& a = h.add("a", Tensor::zeros({3}, DType::kF64));
  a.grad.copy_from(Tensor::from_vector(std::vector<double>{1, inf, 2}, {3}));
  EXPECT_EQ(clip_grad_norm(h.parameters(), 1.0), inf);
  // torch multiplies by max_norm / (inf + 1e-6) = 0: finite entries become 0, inf becomes NaN.
  std::vector<double> g = a.grad.to_vector<double>();
  EXPECT_EQ(g[0], 0.0);
  EXPECT_TRUE(std::isnan(g[1]));
  EXPECT_EQ(g[2], 0.0);
  a.grad.copy_from(Tensor::from_vector(std::vector<double>{1, std::nan(""), 2}, {3}));
  EXPECT_TRUE(std::isnan(clip_grad_norm(h.parameters(), 1.0)));
  for (double x : a.grad.to_vector<double>()) EXPECT_TRUE(std::isnan(x));
}

TEST(ClipGradNorm, SameResultForAnyThreadCount) {
  Holder h;
  Parameter& a = h.add("a", Tensor::zeros({200000}));
  a.grad.copy_from(grad_at({200000}, 3, DType::kF32));
  ExecContext c1, c2;
  c1.num_threads = 1;
  c2.num_threads = 2;
  EXPECT_EQ(clip_grad_norm(h.parameters(), 1e9, c1), clip_grad_norm(h.parameters(), 1e9, c2));
}

// ---- bad input ---------------------------------------------------------------------------------

template <class Fn>
void expect_invalid(Fn&& fn, const std::string& prefix) {
  try {
    fn();
    ADD_FAILURE() << "no error, expected " << prefix;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument) << e.what();
    EXPECT_EQ(std::string(e.what()).rfind(prefix, 0), 0u) << e.what();
  }
}

TEST(Optimizer, RejectsBadHyperparameters) {
  Holder h;
  h.add("a", Tensor::zeros({2}));
  auto ps = h.named_parameters();
  const double nan = std::nan("");
  expect_invalid([&] { SGD(ps, {.lr = -1}); }, "[SGD]");
  expect_invalid([&] { SGD(ps, {.lr = nan}); }, "[SGD]");
  expect_invalid([&] { SGD(ps, {.lr = 0.1, .momentum = -0.5}); }, "[SGD]");
  expect_invalid([&] { SGD(ps, {.lr = 0.1, .weight_decay = -1}); }, "[SGD]");
  expect_invalid([&] { SGD(ps, {.lr = 0.1, .nesterov = true}); }, "[SGD]");
  expect_invalid([&] { SGD(ps, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}); },
                 "[SGD]");
  expect_invalid([&] { AdamW(ps, {.lr = -1e-3}); }, "[AdamW]");
  expect_invalid([&] { AdamW(ps, {.beta1 = 1.0}); }, "[AdamW]");
  expect_invalid([&] { AdamW(ps, {.beta1 = -0.1}); }, "[AdamW]");
  expect_invalid([&] { AdamW(ps, {.beta2 = 1.5}); }, "[AdamW]");
  expect_invalid([&] { AdamW(ps, {.beta2 = nan}); }, "[AdamW]");
  expect_invalid([&] { AdamW(ps, {.eps = -1}); }, "[AdamW]");
  expect_invalid([&] { AdamW(ps, {.weight_decay = -0.1}); }, "[AdamW]");
  AdamW ok(ps, {});
  expect_invalid([&] { ok.set_lr(-1); }, "[AdamW::set_lr]");
}

TEST(Optimizer, RejectsBadParameters) {
  Holder h;
  h.add("ints", Tensor::zeros({2}, DType::kI32));
  expect_invalid([&] { SGD(h.named_parameters(), {}); }, "[SGD]");
  Holder h2;
  Parameter& p = h2.add("a", Tensor::zeros({2}));
  p.grad = Tensor::zeros({3});
  expect_invalid([&] { AdamW(h2.named_parameters(), {}); }, "[AdamW]");
  Holder h3;
  Parameter& q = h3.add("a", Tensor::zeros({2}));
  SGD opt(h3.named_parameters(), {});
  q.grad = Tensor::zeros({2}, DType::kF64);  // replaced after construction
  expect_invalid([&] { opt.step(); }, "[SGD::step]");
  expect_invalid([&] { SGD({NamedParameter{"x", nullptr}}, {}); }, "[SGD]");
}

TEST(Optimizer, LoadStateValidatesAndChangesNothingOnError) {
  Holder h;
  Parameter& p = h.add("w", Tensor::zeros({4}));
  AdamW opt(h.named_parameters(), {});
  p.grad.fill(1.0);
  opt.step();
  const std::vector<float> m_before = opt.state().tensors.at("w.exp_avg").to_vector<float>();
  OptimizerState good = opt.state();
  for (auto& [k, v] : good.tensors) v = v.clone();

  OptimizerState s = good;
  s.tensors.erase("w.exp_avg");
  expect_invalid([&] { opt.load_state(s); }, "[AdamW::load_state]");
  s = good;
  s.tensors["w.exp_avg"] = Tensor::zeros({5});
  expect_invalid([&] { opt.load_state(s); }, "[AdamW::load_state]");
  s = good;
  s.tensors["w.exp_avg"] = Tensor::zeros({4}, DType::kF64);
  expect_invalid([&] { opt.load_state(s); }, "[AdamW::load_state]");
  s = good;
  s.tensors["v.exp_avg"] = Tensor::zeros({4});
  expect_invalid([&] { opt.load_state(s); }, "[AdamW::load_state]");
  s = good;
  s.tensors["w.exp_avg_sq"] = Tensor::full({4}, 9.0);
  s.scalars["beta1"] = 1.5;
  expect_invalid([&] { opt.load_state(s); }, "[AdamW::load_state]");
  s = good;
  s.scalars.erase("step");
  expect_invalid([&] { opt.load_state(s); }, "[AdamW::load_state]");
  s = good;
  s.scalars["step"] = 1.5;
  expect_invalid([&] { opt.load_state(s); }, "[AdamW::load_state]");
  EXPECT_EQ(opt.state().tensors.at("w.exp_avg").to_vector<float>(), m_before);
  EXPECT_EQ(opt.step_count(), 1);

  Holder h2;
  h2.add("w", Tensor::zeros({4}));
  SGD plain(h2.named_parameters(), {.lr = 0.1});
  OptimizerState sm = SGD(h2.named_parameters(), {.lr = 0.1, .momentum = 0.9}).state();
  expect_invalid([&] { plain.load_state(sm); }, "[SGD::load_state]");
}

TEST(ClipGradNorm, RejectsBadInput) {
  Holder h;
  Parameter& a = h.add("a", Tensor::zeros({2}));
  expect_invalid([&] { clip_grad_norm(h.parameters(), -1.0); }, "[clip_grad_norm]");
  expect_invalid([&] { clip_grad_norm(h.parameters(), std::nan("")); }, "[clip_grad_norm]");
  expect_invalid([&] { clip_grad_norm(std::vector<Parameter*>{nullptr}, 1.0); },
                 "[clip_grad_norm]");
  a.grad = Tensor();
  expect_invalid([&] { clip_grad_norm(h.parameters(), 1.0); }, "[clip_grad_norm]");
  a.grad = Tensor::zeros({2}, DType::kI32);
  expect_invalid([&] { clip_grad_norm(h.parameters(), 1.0); }, "[clip_grad_norm]");
}

}  // namespace
}  // namespace frugal::nn
