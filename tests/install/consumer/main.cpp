// Uses the installed frugal the way a caller's project would.
#include <cstdio>

#include "frugal/frugal.hpp"

int main() {
  frugal::Tensor x = frugal::Tensor::full({4, 3}, 2.0);
  frugal::Tensor y = x.to(frugal::DType::kBF16).to(frugal::DType::kF32);
  const auto v = y.to_vector<float>();
  for (float e : v) {
    if (e != 2.0f) {
      std::printf("unexpected value %g\n", e);
      return 1;
    }
  }
  std::printf("consumer ok (%zu elements)\n", v.size());
  return 0;
}
