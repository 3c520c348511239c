// A counter-based random number: uniform(seed, counter) is a pure function, so a request's n-th
// draw depends only on its seed and n, never on which other requests share the batch or on the
// order rows are processed (and a GPU thread can compute it without shared state).
#pragma once

#include <cstdint>

// Compiled for the GPU too (the device sampler draws the same numbers).
#ifdef __CUDACC__
#define NI_HOST_DEVICE __host__ __device__
#else
#define NI_HOST_DEVICE
#endif

namespace nanoinfer::sampling {

// SplitMix64's finaliser: a bijection on 64 bits with full avalanche.
NI_HOST_DEVICE constexpr uint64_t mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ULL;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBULL;
  x ^= x >> 31;
  return x;
}

// Uniform double in [0, 1) with 53 random bits.
NI_HOST_DEVICE constexpr double uniform(uint64_t seed, uint64_t counter) {
  const uint64_t bits = mix64(mix64(seed ^ 0x9E3779B97F4A7C15ULL) + counter);
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

}  // namespace nanoinfer::sampling
