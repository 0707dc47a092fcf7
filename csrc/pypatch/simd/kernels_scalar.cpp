// Scalar reference kernels (baseline flags). Every other level must match these exactly on
// integer-valued inputs; see kernels.h for the shared semantics.
#include <cmath>    // INFINITY
#include <cstring>  // memcpy

#include "pypatch/simd/kernels.h"
#include "pypatch/simd/segmax.h"  // segmax loop shared by all levels

namespace pypatch {

float half_to_float(uint16_t h) {
  const uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal half: normalise
      int e = -1;
      uint32_t mm = mant;
      do { ++e; mm <<= 1; } while ((mm & 0x400u) == 0);
      bits = sign | ((127 - 15 - e) << 23) | ((mm & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const int32_t exp = static_cast<int32_t>((x >> 23) & 0xff);
  uint32_t mant = x & 0x7fffffu;
  if (exp == 0xff) return static_cast<uint16_t>(sign | 0x7c00u | (mant ? 0x200u : 0));
  int32_t e = exp - 127 + 15;
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (e <= 0) {                                                 // subnormal or zero
    if (e < -10) return static_cast<uint16_t>(sign);
    mant |= 0x800000u;
    const uint32_t shift = static_cast<uint32_t>(14 - e);
    uint32_t half = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
    if (rem > mid || (rem == mid && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1))) ++half;  // may carry into inf: correct
  return static_cast<uint16_t>(sign | half);
}

namespace {

void lut_ip_scalar(const float* q, const float* ct, int m, int ksub, int dsub, float* lut) {
  for (int j = 0; j < m; ++j) {
    float* out = lut + static_cast<int64_t>(j) * ksub;
    for (int c = 0; c < ksub; ++c) out[c] = 0.f;
    for (int t = 0; t < dsub; ++t) {
      const float qv = q[j * dsub + t];
      const float* row = ct + (static_cast<int64_t>(j) * dsub + t) * ksub;
      for (int c = 0; c < ksub; ++c) out[c] = out[c] + qv * row[c];
    }
  }
}

void assign_l2_scalar(int64_t n, const float* x, int64_t ldx, int dsub, const float* ct, int k,
                      int32_t* out, float* dist) {
  float acc[256];
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * ldx;
    int32_t best = 0;
    float bestd = INFINITY;
    for (int c0 = 0; c0 < k; c0 += 256) {
      const int nc = k - c0 < 256 ? k - c0 : 256;
      for (int c = 0; c < nc; ++c) acc[c] = 0.f;
      for (int t = 0; t < dsub; ++t) {
        const float* row = ct + static_cast<int64_t>(t) * k + c0;
        for (int c = 0; c < nc; ++c) {
          const float d = xi[t] - row[c];
          acc[c] = acc[c] + d * d;
        }
      }
      for (int c = 0; c < nc; ++c)
        if (acc[c] < bestd) { bestd = acc[c]; best = c0 + c; }
    }
    out[i] = best;
    if (dist) dist[i] = bestd;
  }
}

struct DotF32Scalar {
  const float* x; int dim; const float* q;
  float operator()(int64_t p) const {
    const float* v = x + p * dim;
    float s = 0.f;
    for (int t = 0; t < dim; ++t) s += q[t] * v[t];
    return s;
  }
};

struct DotF16Scalar {
  const uint16_t* x; int dim; const float* q;
  float operator()(int64_t p) const {
    const uint16_t* v = x + p * dim;
    float s = 0.f;
    for (int t = 0; t < dim; ++t) s += q[t] * half_to_float(v[t]);
    return s;
  }
};

void adc_segmax_scalar(int64_t n, const int64_t* off, const uint8_t* codes, int m, int ksub,
                       const float* lut, float* best, int32_t* arg) {
  segmax_blocked(n, off, AdcBlockLoads{codes, m, ksub, lut}, best, arg);
}
void flat_f32_scalar(int64_t n, const int64_t* off, const float* x, int dim, const float* q,
                     float* best, int32_t* arg) {
  segmax(n, off, DotF32Scalar{x, dim, q}, best, arg);
}
void flat_f16_scalar(int64_t n, const int64_t* off, const uint16_t* x, int dim, const float* q,
                     float* best, int32_t* arg) {
  segmax(n, off, DotF16Scalar{x, dim, q}, best, arg);
}

const KernelTable kTable{SimdLevel::Scalar, lut_ip_scalar,   assign_l2_scalar,
                         adc_segmax_scalar, flat_f32_scalar, flat_f16_scalar};

}  // namespace

const KernelTable& kernel_table_scalar() { return kTable; }

}  // namespace pypatch
