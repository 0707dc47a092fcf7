// Seeded test data shared by the C++ tests.
#pragma once

#include <cstddef>  // size_t
#include <random>   // mt19937, normal_distribution
#include <vector>   // buffers

namespace test_data {
/// n standard-normal floats, reproducible from seed.
inline std::vector<float> randn(size_t n, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}
}  // namespace test_data
