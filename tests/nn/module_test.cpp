// The module registry, Sequential, Residual and the check-finite mode, on a hand-written layer
// whose gradients are known in closed form.
#include <gtest/gtest.h>

#include <cmath>

#include "frugal/core/ops.hpp"
#include "frugal/nn/module.hpp"

namespace frugal::nn {
namespace {

/// y = w * x elementwise with one scalar weight w (shape {1}); dy/dx = w, dL/dw = sum(g * x).
class ScaleLayer : public Module {
 public:
  explicit ScaleLayer(double w) : w_(register_parameter("w", Tensor::full({1}, w, DType::kF64))) {
    register_buffer("calls", Tensor::zeros({1}, DType::kF64));
  }
  Tensor forward(const Tensor& x) override {
    x_ = x;
    return scale(x, w());
  }
  Tensor backward(const Tensor& g) override {
    const double dw = sum(mul(g, x_)).to_vector<double>()[0];
    w_.grad.fill(w_.grad.to_vector<double>()[0] + dw);
    return scale(g, w());
  }
  std::string type_name() const override { return "Scale"; }
  double w() const { return w_.value.to_vector<double>()[0]; }
  Parameter& w_;

 private:
  Tensor x_;
};

TEST(Module, RegistryNamesFollowTheTree) {
  auto inner = std::make_shared<Sequential>();
  inner->add(std::make_shared<ScaleLayer>(2.0));
  Sequential net({std::make_shared<ScaleLayer>(3.0), inner});
  std::vector<std::string> names;
  for (auto& np : net.named_parameters()) names.push_back(np.name);
  EXPECT_EQ(names, (std::vector<std::string>{"0.w", "1.0.w"}));
  std::vector<std::string> buffers;
  for (auto& nb : net.named_buffers("model.")) buffers.push_back(nb.name);
  EXPECT_EQ(buffers, (std::vector<std::string>{"model.0.calls", "model.1.0.calls"}));
  EXPECT_EQ(net.num_parameters(), 2);
}

TEST(Module, SequentialChainsForwardAndBackward) {
  auto a = std::make_shared<ScaleLayer>(3.0);
  auto b = std::make_shared<ScaleLayer>(2.0);
  Sequential net({a, b});
  Tensor x = Tensor::from_vector(std::vector<double>{1, 2}, {2});
  Tensor y = net.forward(x);  // 6x
  EXPECT_EQ(y.to_vector<double>(), (std::vector<double>{6, 12}));
  // L = sum(y): dL/dx = 6, dL/da = sum(2 * x) = 6, dL/db = sum(3x) = 9.
  std::vector<std::string> ready;
  net.set_grad_ready_hook([&](const std::string& name, Parameter&) { ready.push_back(name); });
  Tensor gx = net.backward(Tensor::full({2}, 1.0, DType::kF64));
  EXPECT_EQ(gx.to_vector<double>(), (std::vector<double>{6, 6}));
  EXPECT_EQ(a->w_.grad.to_vector<double>()[0], 6.0);
  EXPECT_EQ(b->w_.grad.to_vector<double>()[0], 9.0);
  // Gradients are reported ready in reverse layer order, as backward finishes each layer.
  EXPECT_EQ(ready, (std::vector<std::string>{"1.w", "0.w"}));
  // Backward accumulates until zero_grad.
  net.forward(x);
  net.backward(Tensor::full({2}, 1.0, DType::kF64));
  EXPECT_EQ(a->w_.grad.to_vector<double>()[0], 12.0);
  net.zero_grad();
  EXPECT_EQ(a->w_.grad.to_vector<double>()[0], 0.0);
}

TEST(Module, ResidualAddsTheSkipPath) {
  auto body = std::make_shared<ScaleLayer>(3.0);
  Residual res(body);
  Tensor x = Tensor::from_vector(std::vector<double>{1, -2}, {2});
  EXPECT_EQ(res.forward(x).to_vector<double>(), (std::vector<double>{4, -8}));
  // d(x + 3x)/dx = 4; dL/dw = sum(x) = -1 for L = sum(y).
  EXPECT_EQ(res.backward(Tensor::full({2}, 1.0, DType::kF64)).to_vector<double>(),
            (std::vector<double>{4, 4}));
  EXPECT_EQ(body->w_.grad.to_vector<double>()[0], -1.0);
}

TEST(Module, TrainAndEvalRecurse) {
  auto inner = std::make_shared<Sequential>();
  inner->add(std::make_shared<ScaleLayer>(1.0));
  Sequential net({inner});
  net.eval();
  EXPECT_FALSE(net.is_training());
  EXPECT_FALSE((*inner)[0].is_training());
  net.train();
  EXPECT_TRUE((*inner)[0].is_training());
}

TEST(Module, CheckFiniteNamesTheLayer) {
  Sequential net({std::make_shared<ScaleLayer>(1.0), std::make_shared<ScaleLayer>(1e308)});
  Tensor x = Tensor::from_vector(std::vector<double>{1e10, 1}, {2});
  set_check_finite(true);
  try {
    net.forward(x);  // the second layer overflows to Inf
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("[Sequential] NaN or Inf in the output"), std::string::npos)
        << e.what();
  }
  Tensor nan_input = Tensor::from_vector(std::vector<double>{std::nan(""), 1}, {2});
  EXPECT_THROW(net.forward(nan_input), Error);
  set_check_finite(false);
  EXPECT_NO_THROW(net.forward(nan_input));
}

TEST(Module, BadInput) {
  EXPECT_THROW(Sequential().add(nullptr), Error);
  EXPECT_THROW(Residual(nullptr), Error);
}

}  // namespace
}  // namespace frugal::nn
