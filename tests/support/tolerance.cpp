#include "support/tolerance.hpp"

#include <random>

namespace frugal::testing {

Tensor random_uniform(Shape shape, uint32_t seed, float lo, float hi) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(static_cast<std::size_t>(shape.numel()));
  for (auto& x : v) x = dist(gen);
  return Tensor::from_vector(v, shape);
}

}  // namespace frugal::testing
