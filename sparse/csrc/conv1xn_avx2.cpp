// AVX2+FMA instantiation of the kernels (see conv1xn_avx512.cpp for why a pragma, not -march).
#pragma GCC target("avx2,fma")
#include <immintrin.h>

#include "conv1xn.h"

namespace conv1xn_avx2_impl {

struct Vec {
  using Reg = __m256;
  // Lane i active when its sign bit is set (vmaskmovps), and how many lanes that is.
  struct Mask {
    __m256i bits;
    int n;
  };
  static constexpr int kLanes = 8;
  static inline Mask first_lanes(int n) {
    return {_mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), n};
  }
  // Lanes [lo, hi), for loads (a store takes first_lanes only).
  static inline Mask lanes_between(int lo, int hi) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return {_mm256_and_si256(_mm256_cmpgt_epi32(lane, _mm256_set1_epi32(lo - 1)),
                             _mm256_cmpgt_epi32(_mm256_set1_epi32(hi), lane)),
            hi};
  }
  static inline Reg load(const float* p) { return _mm256_loadu_ps(p); }
  static inline Reg load_first(const float* p, Mask m) { return _mm256_maskload_ps(p, m.bits); }
  static inline void store(float* p, Reg a) { _mm256_storeu_ps(p, a); }
  // Plain 16-, 8- and 4-byte stores: AMD's Zen cores run the masked store vmaskmovps as a long
  // microcode sequence, and the depthwise kernel stores a row's tail in every tile.
  static inline void store_first(float* p, Reg a, Mask m) {
    __m128 part = _mm256_castps256_ps128(a);
    int n = m.n;
    if (n >= 4) {
      _mm_storeu_ps(p, part);
      part = _mm256_extractf128_ps(a, 1);
      p += 4;
      n -= 4;
    }
    if (n >= 2) {
      _mm_storel_pi((__m64*)p, part);
      part = _mm_movehl_ps(part, part);
      p += 2;
      n -= 2;
    }
    if (n == 1) _mm_store_ss(p, part);
  }
  static inline Reg set1(float a) { return _mm256_set1_ps(a); }
  static inline float sum(Reg a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  static inline Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
  static inline Reg add(Reg a, Reg b) { return _mm256_add_ps(a, b); }
  static inline Reg mul(Reg a, Reg b) { return _mm256_mul_ps(a, b); }
  static inline Reg max(Reg a, Reg b) { return _mm256_max_ps(a, b); }
  static inline Reg min(Reg a, Reg b) { return _mm256_min_ps(a, b); }
  // The even and the odd lanes of the 2 * kLanes floats lo:hi: shuffle within 128-bit halves,
  // then put the 64-bit pairs in order.
  static inline void deinterleave(Reg lo, Reg hi, Reg& even, Reg& odd) {
    const __m256 e = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    const __m256 o = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
    even = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    odd = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
  }
  // The same within 128-bit lanes (vshufps): even and odd hold pairs 0, 2, 1, 3 of the in-order
  // result, which in_order restores. The depthwise kernel's stride-2 taps are split this way, every
  // lane of its accumulators in the same place, and put in order once per output vector.
  static inline void deinterleave_in_lanes(Reg lo, Reg hi, Reg& even, Reg& odd) {
    even = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
    odd = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
  }
  static inline Reg evens_in_lanes(Reg lo, Reg hi) { return _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0)); }
  static inline Reg in_order(Reg a) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(a), _MM_SHUFFLE(3, 1, 2, 0)));
  }
};

// 16 ymm registers, one of them holding the broadcast weight.
constexpr int kMaxRows = 4;
constexpr int kRegisters = 16;
constexpr int kBroadcastRegisters = 1;
constexpr int kMaxVectors = 12;

// Depthwise tiles of 8 output rows: 8 accumulators, the input taps and the broadcast weight, each
// broadcast feeding 8 FMAs and each input row 8 / 10 of an output row (with 4 rows, the loads left
// the FMA units idle on 14x14 and 28x28 planes).
constexpr int kDepthwiseRows = 8;
constexpr int kDepthwisePartialSums = 1;

// Stem tiles of 4 output channels x 2 vectors: 8 accumulators, a tap's 2 vectors and the
// broadcast weight, each broadcast feeding 2 FMAs (with 12 channels x 1 vector, one per FMA,
// loads were the limit; 4 x 3 and 6 x 2 tiles took 1.5-1.7x as long).
constexpr int kStemChannels = 4;
constexpr int kStemVectors = 2;

// The fused block's projection in passes of 192 hidden channels (inverted_residual_kernel.inc):
// a tile's 3 vectors of each channel then take 18 KiB and stay in L1 across the groups. Reading
// 960 channels from L2 instead, the tiles ran at 85 GF/s against 107 for L1-resident ones; V2's
// 14x14 and 7x7 projections take 0.88-0.92x the time in passes.
constexpr int64_t kProjectPassChannels = 192;

// The 1xN tiles prefetch the next group's weights (up to 4 KiB, into L2) while the first tile of
// each image or band walks the current group: in the network the weights come from memory, and a
// projection in passes reads each group's slice of a pass as a separate short stream, which the
// hardware prefetcher misses. V2 at p=0.5, kernel time inside the network, alternating with and
// without in one process: the 7x7 blocks 0.89-0.91x, the 14x14 ones 0.97-0.99x, the whole 16 blocks
// 0.965-0.98x (1 thread) and 0.98x (2 threads). Prefetching in every tile cost the early blocks 2-5 %.
constexpr bool kPrefetchNextGroup = true;

// The 1xN tiles load each input row's vectors where the row starts: rows that do not start on
// 32 bytes split loads across cache lines, which AVX2's tiles, with 7 loads per 12 FMAs, do not
// absorb (Zen 4, 960 -> 160 at p=0.5, 1 thread: 49 floats per channel 121 us, 56 floats 100 us,
// 57 floats 135 us, 64 floats 106 us). So the 1xN op pads, with one thread, inputs whose channel
// planes are off 16 bytes (conv1x1_1xn in conv1xn_binding.cpp), and the fused blocks pad their
// own buffers.
constexpr int64_t kInputAlign = 8;

#include "simd_ops.inc"
#include "conv1xn_kernel.inc"
#include "depthwise_kernel.inc"
#include "stem_kernel.inc"
#include "inverted_residual_kernel.inc"
#include "linear_kernel.inc"

}  // namespace conv1xn_avx2_impl

const IsaKernels kernels_avx2 = {{conv1xn_avx2_impl::plan, conv1xn_avx2_impl::run, conv1xn_avx2_impl::kInputAlign},
                                  {conv1xn_avx2_impl::depthwise_plan, conv1xn_avx2_impl::depthwise_run},
                                  {conv1xn_avx2_impl::inverted_residual_plan, conv1xn_avx2_impl::inverted_residual_run,
                                   conv1xn_avx2_impl::inverted_residual_team_run},
                                  {conv1xn_avx2_impl::stem_plan, conv1xn_avx2_impl::stem_run},
                                  {conv1xn_avx2_impl::linear_plan, conv1xn_avx2_impl::linear_run}};
