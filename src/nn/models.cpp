// Model builders shared by the examples and the cost report (frugal/nn/models.hpp).
#include "frugal/nn/models.hpp"

#include "frugal/core/error.hpp"
#include "frugal/nn/activation.hpp"
#include "frugal/nn/batch_norm.hpp"
#include "frugal/nn/conv.hpp"
#include "frugal/nn/linear.hpp"
#include "frugal/nn/pool.hpp"

namespace frugal::nn {

std::shared_ptr<Sequential> make_mlp(const std::vector<int64_t>& sizes, uint64_t seed,
                                     DType dtype) {
  FRUGAL_REQUIRE(sizes.size() >= 2, "make_mlp", "needs at least two sizes, got ", sizes.size());
  for (int64_t s : sizes) FRUGAL_REQUIRE(s > 0, "make_mlp", "size ", s, " is not positive");
  auto net = std::make_shared<Sequential>();
  for (std::size_t i = 0; i + 1 < sizes.size(); ++i) {
    if (i > 0) net->add(std::make_shared<ReLU>());
    net->add(std::make_shared<Linear>(sizes[i], sizes[i + 1], true, seed + i, dtype));
  }
  return net;
}

std::shared_ptr<Sequential> make_digits_cnn(const DigitsCnnConfig& c) {
  const char* op = "make_digits_cnn";
  FRUGAL_REQUIRE(c.in_channels > 0 && c.channels1 > 0 && c.channels2 > 0 && c.classes > 0, op,
                 "channel and class counts must be positive");
  FRUGAL_REQUIRE(c.image_size > 0 && c.image_size % 2 == 0, op, "image size ", c.image_size,
                 " is not a positive even number");
  Conv2dOptions conv;
  conv.padding = 1;
  conv.bias = false;
  const int64_t half = c.image_size / 2;
  auto net = std::make_shared<Sequential>();
  net->add(std::make_shared<Conv2d>(c.in_channels, c.channels1, 3, conv, c.seed));
  net->add(std::make_shared<BatchNorm2d>(c.channels1));
  net->add(std::make_shared<ReLU>());
  net->add(std::make_shared<Conv2d>(c.channels1, c.channels2, 3, conv, c.seed + 1));
  net->add(std::make_shared<BatchNorm2d>(c.channels2));
  net->add(std::make_shared<ReLU>());
  net->add(std::make_shared<MaxPool2d>(2));
  net->add(std::make_shared<Flatten>(1));
  net->add(std::make_shared<Linear>(c.channels2 * half * half, c.classes, true, c.seed + 2));
  return net;
}

GPTConfig char_gpt_config(int64_t vocab_size, CharGptSize size, uint64_t seed) {
  FRUGAL_REQUIRE(vocab_size > 0, "char_gpt_config", "vocab_size ", vocab_size, " is not positive");
  GPTConfig c;
  c.vocab_size = vocab_size;
  c.seed = seed;
  switch (size) {
    case CharGptSize::kTiny:
      c.block_size = 32;
      c.n_layer = 2;
      c.n_head = 2;
      c.n_embd = 32;
      break;
    case CharGptSize::kSmall:
      c.block_size = 64;
      c.n_layer = 2;
      c.n_head = 4;
      c.n_embd = 96;
      break;
  }
  return c;
}

Recipe mlp_digits_recipe() {
  Recipe r;
  r.train.epochs = 40;
  r.train.batch_size = 64;
  r.train.label = "mlp_digits";
  r.adamw.lr = 1e-2;
  r.adamw.weight_decay = 1e-2;
  return r;
}

Recipe cnn_digits_recipe() {
  Recipe r;
  r.train.epochs = 15;
  r.train.batch_size = 64;
  r.train.label = "cnn_digits";
  r.adamw.lr = 3e-3;
  r.adamw.weight_decay = 1e-2;
  return r;
}

Recipe char_gpt_recipe() {
  Recipe r;
  r.train.steps = 1500;
  r.train.batch_size = 16;
  r.train.warmup_steps = 30;
  r.train.min_lr_ratio = 0.1;
  r.train.clip_grad_norm = 1.0;
  r.train.label = "char_gpt";
  r.adamw.lr = 3e-3;
  r.adamw.beta1 = 0.9;
  r.adamw.beta2 = 0.95;
  r.adamw.weight_decay = 1e-2;
  return r;
}

int64_t parameter_bytes(Module& model) {
  int64_t n = 0;
  for (Parameter* p : model.parameters()) n += p->value.nbytes();
  return n;
}

}  // namespace frugal::nn
