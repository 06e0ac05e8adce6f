// AVX-512 instantiation of the kernels. The target pragma (not -march) keeps the rest of the
// extension runnable on CPUs without AVX-512; the binding only calls here after checking cpuid.
#pragma GCC target("avx512f,avx512vl,avx2,fma")
#include <immintrin.h>

#include "conv1xn.h"

namespace conv1xn_avx512_impl {

struct Vec {
  using Reg = __m512;
  using Mask = __mmask16;
  static constexpr int kLanes = 16;
  static inline Mask first_lanes(int n) { return (Mask)((1u << n) - 1u); }
  static inline Mask lanes_between(int lo, int hi) { return (Mask)(((1u << hi) - 1u) & ~((1u << lo) - 1u)); }
  static inline Reg load(const float* p) { return _mm512_loadu_ps(p); }
  static inline Reg load_first(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static inline void store(float* p, Reg a) { _mm512_storeu_ps(p, a); }
  static inline void store_first(float* p, Reg a, Mask m) { _mm512_mask_storeu_ps(p, m, a); }
  static inline Reg set1(float a) { return _mm512_set1_ps(a); }
  static inline float sum(Reg a) { return _mm512_reduce_add_ps(a); }
  static inline Reg fma(Reg a, Reg b, Reg c) { return _mm512_fmadd_ps(a, b, c); }
  static inline Reg add(Reg a, Reg b) { return _mm512_add_ps(a, b); }
  static inline Reg mul(Reg a, Reg b) { return _mm512_mul_ps(a, b); }
  static inline Reg max(Reg a, Reg b) { return _mm512_max_ps(a, b); }
  static inline Reg min(Reg a, Reg b) { return _mm512_min_ps(a, b); }
  // The even and the odd lanes of the 2 * kLanes floats lo:hi.
  static inline void deinterleave(Reg lo, Reg hi, Reg& even, Reg& odd) {
    const __m512i evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    even = _mm512_permutex2var_ps(lo, evens, hi);
    odd = _mm512_permutex2var_ps(lo, _mm512_add_epi32(evens, _mm512_set1_epi32(1)), hi);
  }
  // The same within 128-bit lanes (vshufps): pairs 0, 4, 1, 5, 2, 6, 3, 7 of the in-order
  // result, which in_order restores (see conv1xn_avx2.cpp).
  static inline void deinterleave_in_lanes(Reg lo, Reg hi, Reg& even, Reg& odd) {
    even = _mm512_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    odd = _mm512_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
  }
  static inline Reg evens_in_lanes(Reg lo, Reg hi) { return _mm512_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)); }
  static inline Reg in_order(Reg a) {
    return _mm512_castpd_ps(_mm512_permutexvar_pd(_mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7), _mm512_castps_pd(a)));
  }
};

// 32 zmm registers; the weight broadcasts fold into the FMA's memory operand ({1to16}).
constexpr int kMaxRows = 8;
constexpr int kRegisters = 30;
constexpr int kBroadcastRegisters = 0;
constexpr int kMaxVectors = 12;

// Depthwise tiles of 8 output rows x 1 vector: 16 accumulators (two partial sums per row), the
// input taps and a 3x3 filter's 9 weights in registers (a 5x5 filter's 25 become the FMAs' memory
// broadcasts). 16 rows with one sum each spill: 4x slower.
constexpr int kDepthwiseRows = 8;
constexpr int kDepthwisePartialSums = 2;

// Stem tiles of 16 output channels x 1 vector: 16 accumulators and 3 taps (the weights are the
// FMAs' memory broadcasts).
constexpr int kStemChannels = 16;
constexpr int kStemVectors = 1;

// The fused block's projection reads every hidden channel in one pass: the AVX-512 tiles keep
// their pace with the channels' rows in L2 (passes of 192 channels took 1.03-1.06x the time).
constexpr int64_t kProjectPassChannels = int64_t(1) << 40;

// No software prefetch of the next group's weights: without passes a layer's weights are one
// stream the hardware prefetcher follows (prefetching made V2's blocks 1-3 % slower).
constexpr bool kPrefetchNextGroup = false;

// AVX-512's tiles, with 4 loads per 16 FMAs, run as fast on unaligned rows (conv1xn_avx2.cpp).
constexpr int64_t kInputAlign = 1;

#include "simd_ops.inc"
#include "conv1xn_kernel.inc"
#include "depthwise_kernel.inc"
#include "stem_kernel.inc"
#include "inverted_residual_kernel.inc"
#include "linear_kernel.inc"

}  // namespace conv1xn_avx512_impl

const IsaKernels kernels_avx512 = {{conv1xn_avx512_impl::plan, conv1xn_avx512_impl::run, conv1xn_avx512_impl::kInputAlign},
                                  {conv1xn_avx512_impl::depthwise_plan, conv1xn_avx512_impl::depthwise_run},
                                  {conv1xn_avx512_impl::inverted_residual_plan, conv1xn_avx512_impl::inverted_residual_run,
                                   conv1xn_avx512_impl::inverted_residual_team_run},
                                  {conv1xn_avx512_impl::stem_plan, conv1xn_avx512_impl::stem_run},
                                  {conv1xn_avx512_impl::linear_plan, conv1xn_avx512_impl::linear_run}};
