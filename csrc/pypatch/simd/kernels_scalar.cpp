// Scalar reference kernels (baseline flags). Every other level matches these bit for bit, for
// any input; see kernels.h for the shared semantics.
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

// The flat dot product order of every level (kernels.h, "flat kernels"): 32 lanes, lane l sums
// q[t] * x[t] for t = l, l + 32, ... ascending, each product rounded and then added (no FMA:
// this TU must run on baseline x86-64); the tail t >= 32 * (dim / 32) lands in lanes 0..r-1.
// The lanes then fold in halves: l += l + 16, l += l + 8, l += l + 4, l += l + 2, 0 += 1.
// The AVX2 (4 x 8 lanes) and AVX-512 (2 x 16) kernels do the same operations on the same
// operands, so the score is bit-identical at every level, for any input. Written as 32
// independent lanes, this loop also vectorises with SSE2 (per-lane order is unchanged).
template <class Load>
inline float dot_lanes32(const float* q, const Load& x, int dim) {
  float acc[32];
  for (int l = 0; l < 32; ++l) acc[l] = 0.f;
  int t = 0;
  for (; t + 32 <= dim; t += 32)
    for (int l = 0; l < 32; ++l) acc[l] = acc[l] + q[t + l] * x(t + l);
  for (int l = 0; t + l < dim; ++l) acc[l] = acc[l] + q[t + l] * x(t + l);
  for (int w = 16; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) acc[l] = acc[l] + acc[l + w];
  return acc[0];
}

struct DotF32Scalar {
  const float* x; int dim; const float* q;
  float operator()(int64_t p) const {
    const float* v = x + p * dim;
    return dot_lanes32(q, [v](int t) { return v[t]; }, dim);
  }
};

struct DotF16Scalar {
  const uint16_t* x; int dim; const float* q;
  float operator()(int64_t p) const {
    const uint16_t* v = x + p * dim;
    return dot_lanes32(q, [v](int t) { return half_to_float(v[t]); }, dim);
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

void ip_screen_i8_scalar(const int32_t* q, const int8_t* c, int npair, int32_t* out) {
  for (int i = 0; i < 64; ++i) out[i] = 0;
  for (int s = 0; s < npair; ++s) {
    const int32_t q0 = static_cast<int16_t>(q[s] & 0xffff), q1 = static_cast<int16_t>(q[s] >> 16);
    const int8_t* row = c + static_cast<int64_t>(s) * 128;
    for (int i = 0; i < 64; ++i) out[i] += q0 * row[2 * i] + q1 * row[2 * i + 1];
  }
}

void ip_rows_scalar(int64_t n, const float* x, int64_t ldx, int d, const float* ct, int64_t ldc,
                    int k, float* out, int64_t ldo) {
  for (int64_t i = 0; i < n; ++i) {
    float* o = out + i * ldo;
    for (int c = 0; c < k; ++c) o[c] = 0.f;
    for (int t = 0; t < d; ++t) {
      const float xv = x[i * ldx + t];
      const float* row = ct + t * ldc;
      for (int c = 0; c < k; ++c) o[c] = o[c] + xv * row[c];
    }
  }
}

const KernelTable kTable{SimdLevel::Scalar, lut_ip_scalar,   assign_l2_scalar,
                         adc_segmax_scalar, flat_f32_scalar, flat_f16_scalar,
                         ip_screen_i8_scalar, ip_rows_scalar};

}  // namespace

const KernelTable& kernel_table_scalar() { return kTable; }

}  // namespace pypatch
