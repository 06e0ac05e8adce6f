// Interface between the PyTorch binding (conv1xn_binding.cpp) and the per-ISA kernels.
// The ISA translation units include no PyTorch or standard-library headers, so that no inline
// function compiled for AVX-512 there can be picked by the linker for code run on older CPUs.
#pragma once
#include <stdint.h>

enum Conv1xNActivation : int32_t { kActNone = 0, kActRelu = 1, kActRelu6 = 2, kActHardswish = 3 };

// Y[b] (c_out x hw) = act(W (c_out x c_in) . X[b] (c_in x hw) + bias), W in BSR with (n, 1)
// blocks: group g holds output rows [g*n, g*n+n) and the blocks row_ptr[g] .. row_ptr[g+1]-1,
// block k sits in input column col_idx[k] with its n weights at values[k*n ...]. The last group
// may be partial (c_out % n rows); its values are zero-padded to n.
struct Conv1xNProblem {
  const float* x;         // (batch, c_in, hw)
  float* y;               // (batch, c_out, hw)
  const int32_t* row_ptr; // (groups + 1)
  const int32_t* col_idx; // (nnzb)
  const float* values;    // (nnzb, n)
  const float* bias;      // (c_out)
  int64_t batch, c_in, c_out, hw, n;
  int32_t activation;
  // Filled by plan(): the hw axis of each image is cut into tiles_per_image tiles of
  // vectors_per_tile SIMD vectors (the first `tiles_with_extra` tiles get one more vector).
  int64_t groups, tiles_per_image, vectors_per_tile, tiles_with_extra;
};

struct Conv1xNKernel {
  // Chooses the tiling for p and returns how many independent work items (tile, group) it has.
  int64_t (*plan)(Conv1xNProblem& p);
  // Computes work items [begin, end); items are tile-major, so a contiguous range reuses the
  // same input tile across row groups.
  void (*run)(const Conv1xNProblem& p, int64_t begin, int64_t end);
};

extern const Conv1xNKernel conv1xn_avx512;
extern const Conv1xNKernel conv1xn_avx2;
