// AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; only called after detection).
#include <immintrin.h>  // AVX2 intrinsics

#include <cmath>  // INFINITY
#include <cstdint>  // uint16_t

#include "pypatch/simd/kernels.h"
#include "pypatch/simd/segmax.h"

namespace pypatch {
namespace {

inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Vectorised across centroids: lane c accumulates over t in ascending order, like the scalar.
void lut_ip_avx2(const float* q, const float* ct, int m, int ksub, int dsub, float* lut) {
  for (int j = 0; j < m; ++j) {
    float* out = lut + static_cast<int64_t>(j) * ksub;
    int c = 0;
    for (; c + 8 <= ksub; c += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int t = 0; t < dsub; ++t) {
        const float* row = ct + (static_cast<int64_t>(j) * dsub + t) * ksub;
        acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[j * dsub + t]), _mm256_loadu_ps(row + c)));
      }
      _mm256_storeu_ps(out + c, acc);
    }
    for (; c < ksub; ++c) {
      float s = 0.f;
      for (int t = 0; t < dsub; ++t) s = s + q[j * dsub + t] * ct[(static_cast<int64_t>(j) * dsub + t) * ksub + c];
      out[c] = s;
    }
  }
}

void assign_l2_avx2(int64_t n, const float* x, int64_t ldx, int dsub, const float* ct, int k,
                    int32_t* out, float* dist) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * ldx;
    __m256 bestv = _mm256_set1_ps(INFINITY);
    __m256i besti = _mm256_set1_epi32(0);
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int c = 0;
    for (; c + 8 <= k; c += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int t = 0; t < dsub; ++t) {
        const __m256 d = _mm256_sub_ps(_mm256_set1_ps(xi[t]), _mm256_loadu_ps(ct + static_cast<int64_t>(t) * k + c));
        acc = _mm256_add_ps(acc, _mm256_mul_ps(d, d));
      }
      const __m256 lt = _mm256_cmp_ps(acc, bestv, _CMP_LT_OQ);  // strict: keeps the lower index
      bestv = _mm256_blendv_ps(bestv, acc, lt);
      besti = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(besti), _mm256_castsi256_ps(idx), lt));
      idx = _mm256_add_epi32(idx, _mm256_set1_epi32(8));
    }
    alignas(32) float bv[8];
    alignas(32) int32_t bi[8];
    _mm256_store_ps(bv, bestv);
    _mm256_store_si256(reinterpret_cast<__m256i*>(bi), besti);
    float bd = INFINITY;
    int32_t b = 0;
    for (int l = 0; l < 8; ++l)
      if (bv[l] < bd || (bv[l] == bd && bi[l] < b)) { bd = bv[l]; b = bi[l]; }
    for (; c < k; ++c) {
      float s = 0.f;
      for (int t = 0; t < dsub; ++t) {
        const float d = xi[t] - ct[static_cast<int64_t>(t) * k + c];
        s = s + d * d;
      }
      if (s < bd) { bd = s; b = c; }
    }
    out[i] = b;
    if (dist) dist[i] = bd;
  }
}

// Flat dot products in the order of kernels_scalar.cpp (dot_lanes32): 32 lanes in four
// registers (lanes 0-7, 8-15, 16-23, 24-31), multiply then add (no FMA: the scalar level has
// none), the tail in lanes 0..r-1, then the same fold. Tail loads read zeros past dim: a lane
// sum starts at +0 and is never -0 (x + -0 = +0 from +0), so adding 0 * 0 = +0 leaves it as it is.
inline __m256i tail_mask8(int n) {  // lanes < n (1 <= n <= 7)
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline __m256 load_f32(const float* p, int n) {  // n >= 8: 8 floats; else n, then zeros
  return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, tail_mask8(n));
}
inline __m256 load_f16(const uint16_t* p, int n) {
  if (n >= 8) return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  alignas(16) uint16_t b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int i = 0; i < n; ++i) b[i] = p[i];
  return _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(b)));
}
// Lanes l += l + 16, l += l + 8, then hsum8 (l += l + 4, l += l + 2, 0 += 1).
inline float fold32(__m256 a0, __m256 a1, __m256 a2, __m256 a3) {
  return hsum8(_mm256_add_ps(_mm256_add_ps(a0, a2), _mm256_add_ps(a1, a3)));
}

template <class Load>
inline float dot_lanes32_avx2(const float* q, const Load& ld, int dim) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int t = 0;
  for (; t + 32 <= dim; t += 32) {
    a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(q + t), ld(t, 8)));
    a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(q + t + 8), ld(t + 8, 8)));
    a2 = _mm256_add_ps(a2, _mm256_mul_ps(_mm256_loadu_ps(q + t + 16), ld(t + 16, 8)));
    a3 = _mm256_add_ps(a3, _mm256_mul_ps(_mm256_loadu_ps(q + t + 24), ld(t + 24, 8)));
  }
  const int r = dim - t;
  if (r > 0) a0 = _mm256_add_ps(a0, _mm256_mul_ps(load_f32(q + t, r), ld(t, r)));
  if (r > 8) a1 = _mm256_add_ps(a1, _mm256_mul_ps(load_f32(q + t + 8, r - 8), ld(t + 8, r - 8)));
  if (r > 16) a2 = _mm256_add_ps(a2, _mm256_mul_ps(load_f32(q + t + 16, r - 16), ld(t + 16, r - 16)));
  if (r > 24) a3 = _mm256_add_ps(a3, _mm256_mul_ps(load_f32(q + t + 24, r - 24), ld(t + 24, r - 24)));
  return fold32(a0, a1, a2, a3);
}

struct DotF32Avx2 {
  const float* x; int dim; const float* q;
  float operator()(int64_t p) const {
    const float* v = x + p * dim;
    return dot_lanes32_avx2(q, [v](int t, int n) { return load_f32(v + t, n); }, dim);
  }
};

struct DotF16Avx2 {
  const uint16_t* x; int dim; const float* q;
  float operator()(int64_t p) const {
    const uint16_t* v = x + p * dim;
    return dot_lanes32_avx2(q, [v](int t, int n) { return load_f16(v + t, n); }, dim);
  }
};

void adc_segmax_avx2(int64_t n, const int64_t* off, const uint8_t* codes, int m, int ksub,
                     const float* lut, float* best, int32_t* arg) {
  segmax_blocked(n, off, AdcBlockLoads{codes, m, ksub, lut}, best, arg);  // see segmax.h
}
void flat_f32_avx2(int64_t n, const int64_t* off, const float* x, int dim, const float* q,
                   float* best, int32_t* arg) {
  segmax(n, off, DotF32Avx2{x, dim, q}, best, arg);
}
void flat_f16_avx2(int64_t n, const int64_t* off, const uint16_t* x, int dim, const float* q,
                   float* best, int32_t* arg) {
  segmax(n, off, DotF16Avx2{x, dim, q}, best, arg);
}

// vpmaddwd on sign-extended int8: each int32 lane gets q[2s] c[2s] + q[2s+1] c[2s+1] of one
// centroid, exactly (no saturation: |c| <= 127).
void ip_screen_i8_avx2(const int32_t* q, const int8_t* c, int npair, int32_t* out) {
  __m256i acc[8];
  for (auto& a : acc) a = _mm256_setzero_si256();
  for (int s = 0; s < npair; ++s) {
    const __m256i qv = _mm256_set1_epi32(q[s]);
    const __m128i* row = reinterpret_cast<const __m128i*>(c + static_cast<int64_t>(s) * 128);
    for (int j = 0; j < 8; ++j)
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(row + j)), qv));
  }
  for (int j = 0; j < 8; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 8 * j), acc[j]);
}

// R rows x V vectors of 8 columns in registers (16 ymm: 4 x 2 accumulators leave room for
// the loads); each (row, column) sum runs over ascending t, multiply then add.
template <int R, int V>
inline void ip_block_avx2(const float* x, int64_t ldx, int d, const float* ct, int64_t ldc,
                          float* out, int64_t ldo) {
  __m256 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  for (int t = 0; t < d; ++t) {
    __m256 b[V];
    for (int v = 0; v < V; ++v) b[v] = _mm256_loadu_ps(ct + t * ldc + 8 * v);
    for (int r = 0; r < R; ++r) {
      const __m256 a = _mm256_set1_ps(x[r * ldx + t]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_add_ps(acc[r][v], _mm256_mul_ps(a, b[v]));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) _mm256_storeu_ps(out + r * ldo + 8 * v, acc[r][v]);
}

// One panel of V * 8 columns against every row (the panel stays in cache as the rows stream).
template <int V>
inline void ip_panel_avx2(int64_t n, const float* x, int64_t ldx, int d, const float* ct,
                          int64_t ldc, float* out, int64_t ldo) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) ip_block_avx2<4, V>(x + i * ldx, ldx, d, ct, ldc, out + i * ldo, ldo);
  for (; i < n; ++i) ip_block_avx2<1, V>(x + i * ldx, ldx, d, ct, ldc, out + i * ldo, ldo);
}

void ip_rows_avx2(int64_t n, const float* x, int64_t ldx, int d, const float* ct, int64_t ldc,
                  int k, float* out, int64_t ldo) {
  int c = 0;
  for (; c + 16 <= k; c += 16) ip_panel_avx2<2>(n, x, ldx, d, ct + c, ldc, out + c, ldo);
  for (; c + 8 <= k; c += 8) ip_panel_avx2<1>(n, x, ldx, d, ct + c, ldc, out + c, ldo);
  for (; c < k; ++c)  // column tail: the scalar order
    for (int64_t i = 0; i < n; ++i) {
      float s = 0.f;
      for (int t = 0; t < d; ++t) s = s + x[i * ldx + t] * ct[t * ldc + c];
      out[i * ldo + c] = s;
    }
}

const KernelTable kTable{SimdLevel::AVX2, lut_ip_avx2,   assign_l2_avx2,
                         adc_segmax_avx2, flat_f32_avx2, flat_f16_avx2,
                         ip_screen_i8_avx2, ip_rows_avx2};

}  // namespace

const KernelTable& kernel_table_avx2() { return kTable; }

}  // namespace pypatch
