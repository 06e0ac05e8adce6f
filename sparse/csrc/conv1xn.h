// Interface between the PyTorch binding (conv1xn_binding.cpp) and the per-ISA kernels: the 1xN
// sparse 1x1 conv and the depthwise conv.
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
  const float* x;         // (batch, c_in, hw), channel c at x + c * x_stride
  float* y;               // (batch, c_out, hw), channel c at y + c * y_stride
  const int32_t* row_ptr; // (groups + 1)
  // Null, or where each group's blocks end instead of row_ptr[g + 1] (a group's blocks
  // row_ptr[g] .. row_end[g] - 1: the fused block's threads each take a range of input channels).
  const int32_t* row_end; // (groups)
  const int32_t* col_idx; // (nnzb)
  const float* values;    // (nnzb, n)
  const float* bias;      // (c_out)
  int64_t batch, c_in, c_out, hw, n;
  // Floats between channels: hw for whole NCHW tensors; more when hw is a band of rows of a
  // larger image (the fused inverted residual block).
  int64_t x_stride, y_stride;
  int32_t activation;
  // Adds W . X[b] to y instead of writing act(W . X[b] + bias): a later pass over a range of the
  // input channels (see row_end). Only with kActNone.
  bool accumulate;
  // Filled by plan(): the hw axis of each image is cut into tiles_per_image tiles of
  // vectors_per_tile SIMD vectors (the first `tiles_with_extra` tiles get one more vector).
  int64_t groups, tiles_per_image, vectors_per_tile, tiles_with_extra;
};

struct Conv1xNKernel {
  // Chooses the tiling for p and returns how many independent work items (tile, group) it has.
  int64_t (*plan)(Conv1xNProblem& p);
  // Computes work items [begin, end); items are tile-major, so a contiguous range reuses the
  // same input tile across row groups. False if a tile did not fit the register plan (a bug: the
  // output is then incomplete and must not be used).
  bool (*run)(const Conv1xNProblem& p, int64_t begin, int64_t end);
  // Input channels whose rows start every input_align floats (kInputAlign in the ISA's file) run
  // faster; 1 where alignment does not matter.
  int64_t input_align;
};

// Y[b, c] = act(conv(X[b, c], W[c]) + bias[c]) for every channel c: a depthwise conv with a
// kernel x kernel filter (3 or 5), stride 1 or 2, zero padding kernel / 2 on every side.
struct DepthwiseProblem {
  const float* x;       // (batch, channels, height, width)
  float* y;             // (batch, channels, out_height, out_width)
  const float* weight;  // (channels, kernel, kernel)
  const float* bias;    // (channels)
  int64_t batch, channels, height, width, kernel, stride;
  int32_t activation;
  // Filled by plan(): each output plane is cut into `bands` bands of rows_per_band rows (the last
  // may be shorter); the kernel's row of zeros takes scratch_floats floats of the caller's scratch.
  int64_t out_height, out_width, rows_per_band, bands, scratch_floats;
};

struct DepthwiseKernel {
  // Chooses the bands and returns how many independent work items (image, channel, band) it has.
  int64_t (*plan)(DepthwiseProblem& p);
  // Computes work items [begin, end) with scratch_floats floats of scratch of the caller's.
  void (*run)(const DepthwiseProblem& p, int64_t begin, int64_t end, float* scratch);
};

// A whole MobileNetV2 inverted residual block in one pass:
//   y = project(relu6(depthwise(relu6(expand(x) + b_e)) + b_d)) + b_p [+ x]
// with expand and project 1xN sparse 1x1 convs (BSR as in Conv1xNProblem) and a k x k depthwise
// conv of stride 1 or 2. The output is computed in bands of output rows: a band's expanded rows
// (plus the halo the depthwise filter needs) and its depthwise output live in the caller's
// scratch, sized to stay in cache, instead of two full hidden-channel tensors in memory. The
// expanded rows sit in a ring of ring_rows rows per channel, so rows shared by consecutive bands
// are expanded once.
struct InvertedResidualProblem {
  const float* x;  // (batch, c_in, height, width)
  float* y;        // (batch, c_out, out_height, out_width)
  const int32_t *expand_row_ptr, *expand_col_idx;
  const float *expand_values, *expand_bias;  // (nnzb, n_expand), (hidden)
  const float *dw_weight, *dw_bias;          // (hidden, kernel, kernel), (hidden)
  const int32_t *project_row_ptr, *project_col_idx;
  const float *project_values, *project_bias;  // (nnzb, n_project), (c_out)
  int64_t batch, c_in, hidden, c_out, height, width, n_expand, n_project, kernel, stride;
  bool residual;  // adds x (needs stride 1 and c_in == c_out)
  // Set when the expand conv is the network's stem (a dense 3x3 stride-2 conv + ReLU6, as in
  // StemProblem) instead of a 1xN conv: x is then the image, (batch, c_in, image_height,
  // image_width), and height x width the stem's output (MobileNetV2's first block has no expand
  // conv of its own: stem, depthwise, project).
  const float *stem_weight, *stem_bias;  // (hidden, c_in, 3, 3), (hidden)
  int64_t image_height, image_width;
  // Filled by plan(): each image's output rows are walked in bands of rows_per_band rows. With
  // team == 1 the work items are the row_parts parts of each image's output rows (image-major),
  // each thread with scratch_floats floats and block_bounds int32s of scratch; else `team` threads
  // compute each image together (run_team), sharing shared_floats floats and each with
  // scratch_floats floats and block_bounds int32s of its own.
  int64_t out_height, out_width, rows_per_band, ring_rows, row_parts, team;
  int64_t scratch_floats, shared_floats, block_bounds;
};

struct InvertedResidualKernel {
  // Plans for `threads` threads; returns the number of work items (parts of images) for run, or
  // the team size for run_team (p.team > 1).
  int64_t (*plan)(InvertedResidualProblem& p, int64_t threads);
  // Work items [begin, end) with the thread's scratch; false on a register-plan bug (as
  // Conv1xNKernel::run).
  bool (*run)(const InvertedResidualProblem& p, int64_t begin, int64_t end, float* scratch, int32_t* block_bounds);
  // Thread tid of p.team, all of them running at once: every image, with the team's shared
  // scratch and the thread's own; wait_for_team() returns once every thread of the team called it.
  bool (*run_team)(const InvertedResidualProblem& p, int64_t tid, int64_t team, float* shared, float* scratch,
                   int32_t* block_bounds, void (*wait_for_team)());
};

// Y[b] = act(conv3x3(X[b], W) + bias), stride 2, zero padding 1: a network's first conv on an image of
// c_in <= kStemMaxChannels channels.
constexpr int64_t kStemMaxChannels = 4;
struct StemProblem {
  const float* x;       // (batch, c_in, height, width)
  float* y;             // (batch, c_out, out_height, out_width)
  const float* weight;  // (c_out, c_in, 3, 3)
  const float* bias;    // (c_out)
  int64_t batch, c_in, c_out, height, width;
  int32_t activation;
  // Filled by plan(): work items are (image, output row); the kernel's row of zeros and its
  // split input rows take scratch_floats floats of the caller's scratch; output channels lie
  // y_channel_stride floats apart (out_height * out_width).
  int64_t out_height, out_width, scratch_floats, y_channel_stride;
};

struct StemKernel {
  int64_t (*plan)(StemProblem& p);  // returns the number of work items
  void (*run)(const StemProblem& p, int64_t begin, int64_t end, float* scratch);
};

// Y[b] = W X[b] + bias for X (batch, c_in) and W (c_out, c_in), both row-major: a dense layer on
// pooled features (the classifier).
struct LinearProblem {
  const float* x;       // (batch, c_in)
  float* y;             // (batch, c_out)
  const float* weight;  // (c_out, c_in)
  const float* bias;    // (c_out)
  int64_t batch, c_in, c_out;
};

struct LinearKernel {
  int64_t (*plan)(const LinearProblem& p);  // returns the number of work items (blocks of rows)
  void (*run)(const LinearProblem& p, int64_t begin, int64_t end);
};

// Everything one instruction set provides.
struct IsaKernels {
  Conv1xNKernel conv1x1;
  DepthwiseKernel depthwise;
  InvertedResidualKernel inverted_residual;
  StemKernel stem;
  LinearKernel linear;
};

extern const IsaKernels kernels_avx512;
extern const IsaKernels kernels_avx2;
