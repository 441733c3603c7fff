#pragma once
/// The models of the examples and of the cost report, built in one place so every program trains
/// the same network: a multilayer perceptron, a small CNN for 8x8 digit images, and GPT
/// configurations for character-level language modelling.
#include <cstdint>
#include <memory>
#include <vector>

#include "frugal/core/dtype.hpp"
#include "frugal/nn/gpt.hpp"
#include "frugal/nn/module.hpp"
#include "frugal/nn/optim.hpp"
#include "frugal/nn/train.hpp"

namespace frugal::nn {

/// Linear(sizes[0], sizes[1]) - ReLU - Linear(sizes[1], sizes[2]) - ... - Linear(.., sizes.back()):
/// ReLU between layers, none after the last (it outputs logits). Layer i is seeded with seed + i.
/// Input (N, sizes[0]), output (N, sizes.back()). Throws InvalidArgument ("[make_mlp] ...") for
/// fewer than two sizes or a size <= 0.
std::shared_ptr<Sequential> make_mlp(const std::vector<int64_t>& sizes, uint64_t seed = 0,
                                     DType dtype = DType::kF32);

/// Shape of the digits CNN.
struct DigitsCnnConfig {
  int64_t in_channels = 1;  ///< channels of the input images
  int64_t image_size = 8;   ///< height = width of the input images (even)
  int64_t channels1 = 16;   ///< output channels of the first convolution
  int64_t channels2 = 32;   ///< output channels of the second convolution
  int64_t classes = 10;     ///< outputs (logits)
  uint64_t seed = 0;        ///< initialisation seed (layer i gets seed + i)
};

/// Conv2d(in, c1, 3, pad 1) - BatchNorm2d - ReLU - Conv2d(c1, c2, 3, pad 1) - BatchNorm2d - ReLU
/// - MaxPool2d(2) - Flatten - Linear(c2 (s/2)^2, classes): input (N, in, s, s), output
/// (N, classes). The convolutions have no bias (BatchNorm's shift replaces it). Throws
/// InvalidArgument ("[make_digits_cnn] ...") for a non-positive extent or an odd image size.
std::shared_ptr<Sequential> make_digits_cnn(const DigitsCnnConfig& config = {});

/// Size presets of the character-level GPT.
enum class CharGptSize {
  kTiny,   ///< block 32, 2 layers, 2 heads, n_embd 32: tests and smoke runs
  kSmall,  ///< block 64, 2 layers, 4 heads, n_embd 96: the example and the cost report
};

/// A GPTConfig for a character vocabulary of `vocab_size` symbols in one of the presets.
GPTConfig char_gpt_config(int64_t vocab_size, CharGptSize size = CharGptSize::kSmall,
                          uint64_t seed = 0);

/// A baseline training recipe: the loop's settings and AdamW's hyperparameters. The examples
/// start from these (and let the command line override them); the cost report trains with them
/// as they are, so a later variant (mixed precision, quantization-aware, pruned) is compared on
/// the same recipe.
struct Recipe {
  TrainOptions train;
  AdamWOptions adamw;
};

/// MLP 64-256-128-10 on the digits: 30 epochs of batches of 64, AdamW lr 1e-2, weight decay
/// 1e-2, cosine to 0 without warm-up.
Recipe mlp_digits_recipe();
/// The digits CNN: 15 epochs of batches of 64, AdamW lr 3e-3, weight decay 1e-2, cosine to 0.
Recipe cnn_digits_recipe();
/// The kSmall character GPT: 1500 steps of 16 sequences of 64 characters, AdamW lr 3e-3,
/// betas (0.9, 0.95), weight decay 1e-2, 30 warm-up steps then cosine to lr / 10, gradient
/// clipping at norm 1.
Recipe char_gpt_recipe();

/// Bytes of the parameter values of `model` (gradients and optimizer state excluded).
int64_t parameter_bytes(Module& model);

}  // namespace frugal::nn
