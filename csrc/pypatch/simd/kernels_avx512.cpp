// AVX-512 F/BW/VL/DQ kernels (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq plus
// the AVX2 flags; only called after detection). 16 float lanes; tails go through 8-lane AVX2
// code or scalar so the per-lane order matches kernels_scalar.cpp where kernels.h promises it.
#include <immintrin.h>  // AVX-512 intrinsics

#include <cmath>  // INFINITY

#include "pypatch/simd/kernels.h"
#include "pypatch/simd/segmax.h"

namespace pypatch {
namespace {

void lut_ip_avx512(const float* q, const float* ct, int m, int ksub, int dsub, float* lut) {
  for (int j = 0; j < m; ++j) {
    float* out = lut + static_cast<int64_t>(j) * ksub;
    const float* cj = ct + static_cast<int64_t>(j) * dsub * ksub;
    int c = 0;
    for (; c + 64 <= ksub; c += 64) {  // 4 accumulators hide add latency
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int t = 0; t < dsub; ++t) {
        const __m512 qv = _mm512_set1_ps(q[j * dsub + t]);
        const float* row = cj + static_cast<int64_t>(t) * ksub + c;
        a0 = _mm512_add_ps(a0, _mm512_mul_ps(qv, _mm512_loadu_ps(row)));
        a1 = _mm512_add_ps(a1, _mm512_mul_ps(qv, _mm512_loadu_ps(row + 16)));
        a2 = _mm512_add_ps(a2, _mm512_mul_ps(qv, _mm512_loadu_ps(row + 32)));
        a3 = _mm512_add_ps(a3, _mm512_mul_ps(qv, _mm512_loadu_ps(row + 48)));
      }
      _mm512_storeu_ps(out + c, a0);
      _mm512_storeu_ps(out + c + 16, a1);
      _mm512_storeu_ps(out + c + 32, a2);
      _mm512_storeu_ps(out + c + 48, a3);
    }
    for (; c < ksub; c += 16) {
      const __mmask16 k = ksub - c >= 16 ? 0xffff : static_cast<__mmask16>((1u << (ksub - c)) - 1);
      __m512 acc = _mm512_setzero_ps();
      for (int t = 0; t < dsub; ++t)
        acc = _mm512_add_ps(acc, _mm512_mul_ps(_mm512_set1_ps(q[j * dsub + t]),
                                               _mm512_maskz_loadu_ps(k, cj + static_cast<int64_t>(t) * ksub + c)));
      _mm512_mask_storeu_ps(out + c, k, acc);
    }
  }
}

void assign_l2_avx512(int64_t n, const float* x, int64_t ldx, int dsub, const float* ct, int k,
                      int32_t* out, float* dist) {
  for (int64_t i = 0; i < n; ++i) {
    const float* xi = x + i * ldx;
    __m512 bestv = _mm512_set1_ps(INFINITY);
    __m512i besti = _mm512_setzero_si512();
    __m512i idx = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (int c = 0; c < k; c += 16) {
      const __mmask16 km = k - c >= 16 ? 0xffff : static_cast<__mmask16>((1u << (k - c)) - 1);
      __m512 acc = _mm512_setzero_ps();
      for (int t = 0; t < dsub; ++t) {
        const __m512 d = _mm512_sub_ps(_mm512_set1_ps(xi[t]),
                                       _mm512_maskz_loadu_ps(km, ct + static_cast<int64_t>(t) * k + c));
        acc = _mm512_add_ps(acc, _mm512_mul_ps(d, d));
      }
      const __mmask16 lt = _mm512_mask_cmp_ps_mask(km, acc, bestv, _CMP_LT_OQ);
      bestv = _mm512_mask_mov_ps(bestv, lt, acc);
      besti = _mm512_mask_mov_epi32(besti, lt, idx);
      idx = _mm512_add_epi32(idx, _mm512_set1_epi32(16));
    }
    alignas(64) float bv[16];
    alignas(64) int32_t bi[16];
    _mm512_store_ps(bv, bestv);
    _mm512_store_si512(bi, besti);
    float bd = INFINITY;
    int32_t b = 0;
    for (int l = 0; l < 16; ++l)
      if (bv[l] < bd || (bv[l] == bd && bi[l] < b)) { bd = bv[l]; b = bi[l]; }
    out[i] = b;
    if (dist) dist[i] = bd;
  }
}

// Flat dot products in the order of kernels_scalar.cpp (dot_lanes32): 32 lanes in two
// registers, multiply then add (no FMA), the tail in lanes 0..r-1 through masked loads (zeros
// past dim leave a lane unchanged: see kernels_avx2.cpp), then the same fold.
inline __mmask16 tail_mask16(int n) {  // lanes < min(n, 16)
  return n >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << n) - 1);
}
inline __m512 load_f32(const float* p, int n) { return _mm512_maskz_loadu_ps(tail_mask16(n), p); }
inline __m512 load_f16(const uint16_t* p, int n) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tail_mask16(n), p));
}
// l += l + 16, l += l + 8, l += l + 4, l += l + 2, 0 += 1 (the scalar fold, lane for lane).
inline float fold32(__m512 a0, __m512 a1) {
  const __m512 s16 = _mm512_add_ps(a0, a1);
  const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(s16), _mm512_extractf32x8_ps(s16, 1));
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

template <class Load>
inline float dot_lanes32_avx512(const float* q, const Load& ld, int dim) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0;
  int t = 0;
  for (; t + 32 <= dim; t += 32) {
    a0 = _mm512_add_ps(a0, _mm512_mul_ps(_mm512_loadu_ps(q + t), ld(t, 16)));
    a1 = _mm512_add_ps(a1, _mm512_mul_ps(_mm512_loadu_ps(q + t + 16), ld(t + 16, 16)));
  }
  const int r = dim - t;
  if (r > 0) a0 = _mm512_add_ps(a0, _mm512_mul_ps(load_f32(q + t, r), ld(t, r)));
  if (r > 16) a1 = _mm512_add_ps(a1, _mm512_mul_ps(load_f32(q + t + 16, r - 16), ld(t + 16, r - 16)));
  return fold32(a0, a1);
}

struct DotF32Avx512 {
  const float* x; int dim; const float* q;
  float operator()(int64_t p) const {
    const float* v = x + p * dim;
    return dot_lanes32_avx512(q, [v](int t, int n) {
      return n >= 16 ? _mm512_loadu_ps(v + t) : load_f32(v + t, n);
    }, dim);
  }
};

struct DotF16Avx512 {
  const uint16_t* x; int dim; const float* q;
  float operator()(int64_t p) const {
    const uint16_t* v = x + p * dim;
    return dot_lanes32_avx512(q, [v](int t, int n) {
      return n >= 16 ? _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v + t)))
                     : load_f16(v + t, n);
    }, dim);
  }
};

void adc_segmax_avx512(int64_t n, const int64_t* off, const uint8_t* codes, int m, int ksub,
                       const float* lut, float* best, int32_t* arg) {
  // Plain loads beat vpgatherdd on Zen 4 (segmax.h); 8-bit codes on VBMI CPUs take the
  // quantised scan instead (kernels_avx512vbmi.cpp).
  segmax_blocked(n, off, AdcBlockLoads{codes, m, ksub, lut}, best, arg);
}
void flat_f32_avx512(int64_t n, const int64_t* off, const float* x, int dim, const float* q,
                     float* best, int32_t* arg) {
  segmax(n, off, DotF32Avx512{x, dim, q}, best, arg);
}
void flat_f16_avx512(int64_t n, const int64_t* off, const uint16_t* x, int dim, const float* q,
                     float* best, int32_t* arg) {
  segmax(n, off, DotF16Avx512{x, dim, q}, best, arg);
}

// As the AVX2 kernel, 16 centroids a register.
void ip_screen_i8_avx512(const int32_t* q, const int8_t* c, int npair, int32_t* out) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0;
  for (int s = 0; s < npair; ++s) {
    const __m512i qv = _mm512_set1_epi32(q[s]);
    const __m256i* row = reinterpret_cast<const __m256i*>(c + static_cast<int64_t>(s) * 128);
    a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256(row)), qv));
    a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256(row + 1)), qv));
    a2 = _mm512_add_epi32(a2, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256(row + 2)), qv));
    a3 = _mm512_add_epi32(a3, _mm512_madd_epi16(_mm512_cvtepi8_epi16(_mm256_loadu_si256(row + 3)), qv));
  }
  _mm512_storeu_si512(out, a0);
  _mm512_storeu_si512(out + 16, a1);
  _mm512_storeu_si512(out + 32, a2);
  _mm512_storeu_si512(out + 48, a3);
}

// R rows x V vectors of 16 columns in registers (R * V accumulators): each (row, column) sum
// still runs over ascending t, multiply then add, like ip_rows_scalar.
template <int R, int V>
inline void ip_block_avx512(const float* x, int64_t ldx, int d, const float* ct, int64_t ldc,
                            __mmask16 last, float* out, int64_t ldo) {
  __m512 acc[R][V];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  for (int t = 0; t < d; ++t) {
    __m512 b[V];
    for (int v = 0; v < V; ++v)
      b[v] = _mm512_maskz_loadu_ps(v + 1 == V ? last : static_cast<__mmask16>(0xffff), ct + t * ldc + 16 * v);
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(x[r * ldx + t]);
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_add_ps(acc[r][v], _mm512_mul_ps(a, b[v]));
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < V; ++v)
      _mm512_mask_storeu_ps(out + r * ldo + 16 * v, v + 1 == V ? last : static_cast<__mmask16>(0xffff), acc[r][v]);
}

// One panel of V * 16 columns against every row: the panel (d x 64 floats, 128 KB at d = 512)
// stays in L2 while the rows stream past it.
template <int V>
inline void ip_panel_avx512(int64_t n, const float* x, int64_t ldx, int d, const float* ct,
                            int64_t ldc, __mmask16 last, float* out, int64_t ldo) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) ip_block_avx512<4, V>(x + i * ldx, ldx, d, ct, ldc, last, out + i * ldo, ldo);
  for (; i < n; ++i) ip_block_avx512<1, V>(x + i * ldx, ldx, d, ct, ldc, last, out + i * ldo, ldo);
}

void ip_rows_avx512(int64_t n, const float* x, int64_t ldx, int d, const float* ct, int64_t ldc,
                    int k, float* out, int64_t ldo) {
  int c = 0;
  for (; c + 64 <= k; c += 64) ip_panel_avx512<4>(n, x, ldx, d, ct + c, ldc, 0xffff, out + c, ldo);
  for (; c < k; c += 16) {
    const __mmask16 last = k - c >= 16 ? 0xffff : static_cast<__mmask16>((1u << (k - c)) - 1);
    ip_panel_avx512<1>(n, x, ldx, d, ct + c, ldc, last, out + c, ldo);
  }
}

const KernelTable kTable{SimdLevel::AVX512, lut_ip_avx512,   assign_l2_avx512,
                         adc_segmax_avx512, flat_f32_avx512, flat_f16_avx512,
                         ip_screen_i8_avx512, ip_rows_avx512};

}  // namespace

const KernelTable& kernel_table_avx512() { return kTable; }

}  // namespace pypatch
