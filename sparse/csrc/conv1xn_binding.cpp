// PyTorch entry points of the 1xN sparse 1x1 conv, the depthwise conv, the fused V2 blocks, the
// stem conv and the classifier's dense layer: they check the tensors (a malformed packed weight
// from a file must raise, never read out of bounds), pick the widest ISA this CPU has (at run
// time, so the built library also runs on CPUs without AVX-512), and spread the work items over
// at::parallel_for, i.e. over torch.get_num_threads() threads.
//
// The ops are registered with the dispatcher as conv1xn::conv1x1_1xn, conv1xn::depthwise_conv,
// conv1xn::inverted_residual, conv1xn::stem_conv, conv1xn::stem_block and conv1xn::linear
// (TORCH_LIBRARY), so that torch.jit can capture a network calling them and a plain torch
// install runs it after torch.ops.load_library(<this library>); the pybind module adds
// available_isas.
#include <torch/extension.h>
#include <torch/library.h>

#include <omp.h>

#include <atomic>
#include <cstring>

#include "conv1xn.h"

namespace {

// An orphaned barrier: binds to the team of whichever parallel region calls it.
void wait_for_team() {
#pragma omp barrier
}

const IsaKernels& kernels_for(const std::string& isa) {
  const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  TORCH_CHECK(isa == "auto" || isa == "avx512" || isa == "avx2", "conv1xn: unknown instruction set '", isa, "'");
  if ((isa == "auto" || isa == "avx512") && has_avx512) return kernels_avx512;
  if ((isa == "auto" || isa == "avx2") && has_avx2) return kernels_avx2;
  TORCH_CHECK(false, "conv1xn: this CPU lacks the instruction set '", isa, "' (AVX2+FMA at least)");
}

std::vector<std::string> available_isas() {
  std::vector<std::string> isas;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")) isas.push_back("avx512");
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) isas.push_back("avx2");
  return isas;
}

void check_cpu(const torch::Tensor& t, const char* name, c10::ScalarType type) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == type, "conv1xn: ", name, " must be a CPU ",
              c10::toString(type), " tensor, got ", t.scalar_type(), " on ", t.device());
}

// The BSR structure must address only the input's channels and the values' rows: row_ptr starts
// at 0, never decreases and ends at nnzb; every col_idx lies in [0, c_in) and increases within
// its group (as pack_1xn writes them: the fused blocks' threads find their channels' blocks by
// bisection). One pass over col_idx without an early exit, so that it vectorises: this runs on
// every call, for every layer (about 5 us for the largest MobileNet layer).
void check_bsr(const char* layer, const torch::Tensor& row_ptr, const torch::Tensor& col_idx, int64_t nnzb, int64_t c_in) {
  const int32_t* rp = row_ptr.data_ptr<int32_t>();
  const int64_t groups = row_ptr.numel() - 1;
  int32_t decreases = 0;
  for (int64_t g = 0; g < groups; ++g) decreases |= rp[g + 1] < rp[g];
  TORCH_CHECK(rp[0] == 0 && rp[groups] == nnzb && !decreases,
              "conv1xn: ", layer, "row_ptr must rise monotonically from 0 to the number of blocks (", nnzb, ")");
  const int32_t* ci = col_idx.data_ptr<int32_t>();
  int32_t lowest = nnzb > 0 ? ci[0] : 0, highest = lowest;
  int32_t drops = 0;  // columns not above the one before them: allowed only where a group starts
  for (int64_t k = 1; k < nnzb; ++k) {
    lowest = ci[k] < lowest ? ci[k] : lowest;
    highest = ci[k] > highest ? ci[k] : highest;
    drops += ci[k] <= ci[k - 1];
  }
  TORCH_CHECK(lowest >= 0 && highest < c_in, "conv1xn: ", layer, "col_idx must lie in [0, ", c_in,
              ") for an input of ", c_in, " channels, found ", lowest < 0 ? lowest : highest);
  int32_t drops_at_group_starts = 0;
  for (int64_t g = 1; g < groups; ++g)  // each start counted once (empty groups share one)
    drops_at_group_starts += rp[g] > rp[g - 1] && rp[g] < nnzb && ci[rp[g]] <= ci[rp[g] - 1];
  TORCH_CHECK(drops == drops_at_group_starts, "conv1xn: ", layer, "col_idx must increase within each row group");
}

// The BSR weight and bias of a 1xN layer of c_in -> out_channels channels.
// `layer` prefixes the messages ("" or e.g. "expand ").
void check_packed(const char* layer, const torch::Tensor& row_ptr, const torch::Tensor& col_idx,
                  const torch::Tensor& values, const torch::Tensor& bias, int64_t c_in, int64_t out_channels) {
  check_cpu(values, "values", torch::kFloat);
  check_cpu(bias, "bias", torch::kFloat);
  check_cpu(row_ptr, "row_ptr", torch::kInt);
  check_cpu(col_idx, "col_idx", torch::kInt);
  TORCH_CHECK(values.dim() == 2 && values.size(1) > 0, "conv1xn: ", layer, "values must be (nnzb, N) with N > 0");
  TORCH_CHECK(out_channels > 0, "conv1xn: ", layer, "out_channels must be positive, got ", out_channels);
  const int64_t n = values.size(1), groups = (out_channels + n - 1) / n;
  TORCH_CHECK(row_ptr.dim() == 1 && row_ptr.numel() == groups + 1 && col_idx.dim() == 1 &&
                  col_idx.numel() == values.size(0),
              "conv1xn: ", layer, "row_ptr (", row_ptr.numel(), ") / col_idx (", col_idx.numel(), ") / values (",
              values.size(0), ") disagree with out_channels ", out_channels, " and N ", n);
  TORCH_CHECK(bias.numel() == out_channels, "conv1xn: ", layer, "bias must hold out_channels (", out_channels,
              ") floats, got ", bias.numel());
  check_bsr(layer, row_ptr, col_idx, col_idx.numel(), c_in);
}

torch::Tensor conv1x1_1xn(const torch::Tensor& input, const torch::Tensor& row_ptr,
                          const torch::Tensor& col_idx, const torch::Tensor& values,
                          const torch::Tensor& bias, int64_t out_channels, int64_t activation,
                          const std::string& isa) {
  check_cpu(input, "input", torch::kFloat);
  TORCH_CHECK(input.dim() == 4, "conv1xn: input must be NCHW (4 dimensions), got ", input.dim());
  TORCH_CHECK(activation >= kActNone && activation <= kActHardswish, "conv1xn: unknown activation ", activation);

  const Conv1xNKernel& kernel = kernels_for(isa).conv1x1;
  // The kernel reads NCHW rows; a channels_last input costs one copy here, and so does, with one
  // thread, an input whose planes start off 16 bytes where the kernel wants them aligned
  // (input_align): it is padded. Zen 4, AVX2, p=0.5, 1 thread: on 7x7 planes 160 -> 960 0.98x,
  // 960 -> 160 0.92x, 320 -> 1280 0.88x, 1024 -> 1024 0.87x the time, copy included; on 14x14
  // ones (16-byte aligned) the copy cost what the alignment saved. With 2 threads the second
  // thread read the padded copy from the first one's cache: 576 -> 160 on 7x7 at p=0.9 took 2.5x
  // the time of an unpadded 7x8 input.
  const torch::Tensor input_nchw = input.contiguous();
  const int64_t hw = input.size(2) * input.size(3);
  const bool one_thread = at::in_parallel_region() || at::get_num_threads() == 1;
  const bool pad = one_thread && kernel.input_align > 1 && hw > 1 && hw % 4 != 0;
  const int64_t x_stride = pad ? (hw + kernel.input_align - 1) / kernel.input_align * kernel.input_align : hw;
  torch::Tensor x = input_nchw;
  if (x_stride != hw) {
    x = torch::empty({input.size(0), input.size(1), x_stride}, input.options());
    const float* from = input_nchw.data_ptr<float>();
    float* to = x.data_ptr<float>();
    for (int64_t plane = 0; plane < input.size(0) * input.size(1); ++plane)
      std::memcpy(to + plane * x_stride, from + plane * hw, hw * sizeof(float));
  }
  const torch::Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  const torch::Tensor w = values.contiguous(), b = bias.contiguous();
  check_packed("", rp, ci, w, b, x.size(1), out_channels);
  const int64_t n = w.size(1);
  auto y = torch::empty({input.size(0), out_channels, input.size(2), input.size(3)}, input.options());

  Conv1xNProblem p{};
  p.x = x.data_ptr<float>();
  p.y = y.data_ptr<float>();
  p.row_ptr = rp.data_ptr<int32_t>();
  p.col_idx = ci.data_ptr<int32_t>();
  p.values = w.data_ptr<float>();
  p.bias = b.data_ptr<float>();
  p.batch = x.size(0);
  p.c_in = x.size(1);
  p.c_out = out_channels;
  p.hw = hw;
  p.x_stride = x_stride;
  p.y_stride = hw;
  p.n = n;
  p.activation = (int32_t)activation;
  if (y.numel() == 0) return y;

  const int64_t items = kernel.plan(p);
  std::atomic<bool> complete{true};
  // The items are tile-major, so threads splitting them split the tiles, each thread reading every
  // weight. Where the weights outweigh the input several times (MobileNets' 7x7 layers), the
  // threads split the groups instead, each walking every tile over its own and reading only its
  // share of the weights. Zen 4, AVX2, p=0.5, 2 threads, alternating in one process: 320 -> 1280
  // on 7x7 212 -> 196 us, 160 -> 960 141 -> 132 us (after 48 MB of other traffic); 64 -> 384 on
  // 14x14, whose weights are 1.2x its input, 90 -> 94 us, so it keeps the split by tiles.
  const bool split_groups = p.hw > 1 && (w.numel() + ci.numel()) > 4 * x.numel();
  if (split_groups) {
    const int64_t tiles = items / p.groups;
    at::parallel_for(0, p.groups, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t tile = 0; tile < tiles; ++tile)
        if (!kernel.run(p, tile * p.groups + g0, tile * p.groups + g1)) complete = false;
    });
  } else {
    at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
      if (!kernel.run(p, begin, end)) complete = false;
    });
  }
  TORCH_CHECK(complete, "conv1xn: internal error: a tile does not fit the kernel's register plan (N=", n,
              ", hw=", p.hw, ")");
  return y;
}

// Plans p (a DepthwiseProblem or StemProblem, all but y filled in), makes its output of
// `channels` channels and runs the work items over at::parallel_for, each thread's range of
// items with scratch_floats floats of scratch.
template <typename Problem, typename Kernel>
torch::Tensor run_planned(Problem& p, const Kernel& kernel, int64_t channels, const torch::TensorOptions& options) {
  const int64_t items = kernel.plan(p);
  torch::Tensor y = torch::empty({p.batch, channels, p.out_height, p.out_width}, options);
  p.y = y.data_ptr<float>();
  if (y.numel() == 0) return y;
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(p.scratch_floats);
    kernel.run(p, begin, end, scratch.data());
  });
  return y;
}

torch::Tensor depthwise_conv(const torch::Tensor& input, const torch::Tensor& weight,
                            const torch::Tensor& bias, int64_t stride, int64_t activation,
                            const std::string& isa) {
  check_cpu(input, "input", torch::kFloat);
  check_cpu(weight, "weight", torch::kFloat);
  check_cpu(bias, "bias", torch::kFloat);
  TORCH_CHECK(input.dim() == 4, "input: float32 NCHW");
  TORCH_CHECK(input.size(2) > 0 && input.size(3) > 0, "input: empty image");
  const int64_t channels = input.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == channels && weight.size(1) == 1 &&
                  weight.size(2) == weight.size(3),
              "weight: float32 (C, 1, k, k) for an input of C channels");
  const int64_t kernel_size = weight.size(3);
  TORCH_CHECK(kernel_size == 3 || kernel_size == 5, "depthwise kernel size must be 3 or 5");
  TORCH_CHECK(stride == 1 || stride == 2, "depthwise stride must be 1 or 2");
  TORCH_CHECK(activation >= kActNone && activation <= kActHardswish, "unknown activation");
  TORCH_CHECK(bias.numel() == channels, "bias: float32 (C)");

  const torch::Tensor x = input.contiguous(), w = weight.contiguous(), b = bias.contiguous();
  DepthwiseProblem p{};
  p.x = x.data_ptr<float>();
  p.weight = w.data_ptr<float>();
  p.bias = b.data_ptr<float>();
  p.batch = x.size(0);
  p.channels = channels;
  p.height = x.size(2);
  p.width = x.size(3);
  p.kernel = kernel_size;
  p.stride = stride;
  p.activation = (int32_t)activation;
  return run_planned(p, kernels_for(isa).depthwise, channels, x.options());
}

// The image and the weights of a stem conv (3x3, C_out x C_in).
void check_stem(const torch::Tensor& image, const torch::Tensor& weight, const torch::Tensor& bias) {
  check_cpu(image, "input", torch::kFloat);
  check_cpu(weight, "stem weight", torch::kFloat);
  check_cpu(bias, "stem bias", torch::kFloat);
  TORCH_CHECK(image.dim() == 4 && image.size(2) > 0 && image.size(3) > 0,
              "conv1xn: input must be a non-empty NCHW image (4 dimensions)");
  const int64_t c_in = image.size(1);
  TORCH_CHECK(c_in >= 1 && c_in <= kStemMaxChannels, "conv1xn: the stem takes 1 to ", kStemMaxChannels,
              " input channels, got ", c_in);
  TORCH_CHECK(weight.dim() == 4 && weight.size(1) == c_in && weight.size(2) == 3 && weight.size(3) == 3,
              "conv1xn: stem weight must be (C_out, ", c_in, ", 3, 3)");
  TORCH_CHECK(bias.numel() == weight.size(0), "conv1xn: stem bias must hold C_out (", weight.size(0), ") floats");
}

// A network's first conv: 3x3, stride 2, padding 1, on an image of at most kStemMaxChannels channels.
torch::Tensor stem_conv(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias,
                        int64_t activation, const std::string& isa) {
  check_stem(input, weight, bias);
  const int64_t c_in = input.size(1);
  TORCH_CHECK(activation >= kActNone && activation <= kActHardswish, "conv1xn: unknown activation ", activation);
  const torch::Tensor x = input.contiguous(), w = weight.contiguous(), b = bias.contiguous();
  StemProblem p{};
  p.x = x.data_ptr<float>();
  p.weight = w.data_ptr<float>();
  p.bias = b.data_ptr<float>();
  p.batch = x.size(0);
  p.c_in = c_in;
  p.c_out = w.size(0);
  p.height = x.size(2);
  p.width = x.size(3);
  p.activation = (int32_t)activation;
  return run_planned(p, kernels_for(isa).stem, p.c_out, x.options());
}

// Plans and runs a filled-in block (all but y and the plan), returning its output.
torch::Tensor run_block(InvertedResidualProblem& p, const InvertedResidualKernel& kernel,
                        const torch::TensorOptions& options) {
  // Inside another parallel region (a nested one would get one thread), the op runs alone.
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t items = kernel.plan(p, threads);
  auto y = torch::empty({p.batch, p.c_out, p.out_height, p.out_width}, options);
  p.y = y.data_ptr<float>();
  if (y.numel() == 0) return y;
  std::atomic<bool> complete{true};
  if (p.team == 1) {
    at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
      // Kept per thread between calls: a fresh buffer this size would be mapped and page-faulted
      // on every call.
      thread_local std::vector<float> scratch;
      thread_local std::vector<int32_t> block_bounds;
      if ((int64_t)scratch.size() < p.scratch_floats) scratch.resize(p.scratch_floats);
      if ((int64_t)block_bounds.size() < p.block_bounds) block_bounds.resize(p.block_bounds);
      if (!kernel.run(p, begin, end, scratch.data(), block_bounds.data())) complete = false;
    });
  } else {
    thread_local std::vector<float> shared;
    if ((int64_t)shared.size() < p.shared_floats) shared.resize(p.shared_floats);
    std::fill(shared.begin(), shared.begin() + p.c_out, 0.0f);  // the partial sums' zero bias
    float* shared_scratch = shared.data();
    // The team waits for each other inside the kernel: an OpenMP team (the runtime at::parallel_for
    // uses too), whose barrier counts the threads it really got.
#pragma omp parallel num_threads(items)
    {
      thread_local std::vector<float> scratch;
      thread_local std::vector<int32_t> block_bounds;
      if ((int64_t)scratch.size() < p.scratch_floats) scratch.resize(p.scratch_floats);
      if ((int64_t)block_bounds.size() < p.block_bounds) block_bounds.resize(p.block_bounds);
      InvertedResidualProblem team_problem = p;
      team_problem.team = omp_get_num_threads();
      if (!kernel.run_team(team_problem, omp_get_thread_num(), team_problem.team, shared_scratch, scratch.data(),
                           block_bounds.data(), wait_for_team))
        complete = false;
    }
  }
  TORCH_CHECK(complete, "conv1xn: internal error: a tile does not fit the kernel's register plan");
  return y;
}

// Checks the depthwise and project layers of a block of `hidden` channels (tensors contiguous)
// and puts them into p.
void set_depthwise_and_project(InvertedResidualProblem& p, const torch::Tensor& dw, const torch::Tensor& db,
                               int64_t stride, const torch::Tensor& prp, const torch::Tensor& pci,
                               const torch::Tensor& pv, const torch::Tensor& pb, int64_t hidden, int64_t out_channels) {
  check_cpu(dw, "depthwise weight", torch::kFloat);
  check_cpu(db, "depthwise bias", torch::kFloat);
  check_packed("project ", prp, pci, pv, pb, hidden, out_channels);
  TORCH_CHECK(dw.dim() == 4 && dw.size(0) == hidden && dw.size(1) == 1 && dw.size(2) == dw.size(3) &&
                  (dw.size(3) == 3 || dw.size(3) == 5),
              "conv1xn: depthwise weight must be (hidden, 1, k, k), k 3 or 5, for ", hidden, " hidden channels");
  TORCH_CHECK(db.numel() == hidden, "conv1xn: depthwise bias must hold ", hidden, " floats");
  TORCH_CHECK(stride == 1 || stride == 2, "conv1xn: depthwise stride must be 1 or 2");
  p.dw_weight = dw.data_ptr<float>();
  p.dw_bias = db.data_ptr<float>();
  p.project_row_ptr = prp.data_ptr<int32_t>();
  p.project_col_idx = pci.data_ptr<int32_t>();
  p.project_values = pv.data_ptr<float>();
  p.project_bias = pb.data_ptr<float>();
  p.hidden = hidden;
  p.c_out = out_channels;
  p.n_project = pv.size(1);
  p.kernel = dw.size(3);
  p.stride = stride;
}

// MobileNetV2's inverted residual block in one op: relu6 after expand and depthwise, none after
// project (InvertedResidualProblem in conv1xn.h).
torch::Tensor inverted_residual(const torch::Tensor& input, const torch::Tensor& expand_row_ptr,
                                const torch::Tensor& expand_col_idx, const torch::Tensor& expand_values,
                                const torch::Tensor& expand_bias, const torch::Tensor& dw_weight,
                                const torch::Tensor& dw_bias, int64_t stride, const torch::Tensor& project_row_ptr,
                                const torch::Tensor& project_col_idx, const torch::Tensor& project_values,
                                const torch::Tensor& project_bias, int64_t out_channels, bool residual,
                                const std::string& isa) {
  check_cpu(input, "input", torch::kFloat);
  TORCH_CHECK(input.dim() == 4 && input.size(2) > 0 && input.size(3) > 0,
              "conv1xn: input must be a non-empty NCHW image (4 dimensions)");
  const int64_t hidden = expand_bias.numel();
  const torch::Tensor x = input.contiguous();
  const torch::Tensor erp = expand_row_ptr.contiguous(), eci = expand_col_idx.contiguous();
  const torch::Tensor ev = expand_values.contiguous(), eb = expand_bias.contiguous();
  const torch::Tensor prp = project_row_ptr.contiguous(), pci = project_col_idx.contiguous();
  const torch::Tensor pv = project_values.contiguous(), pb = project_bias.contiguous();
  const torch::Tensor dw = dw_weight.contiguous(), db = dw_bias.contiguous();
  check_packed("expand ", erp, eci, ev, eb, x.size(1), hidden);
  TORCH_CHECK(!residual || (stride == 1 && out_channels == x.size(1)),
              "conv1xn: a residual block needs stride 1 and as many output channels as input channels");

  InvertedResidualProblem p{};
  set_depthwise_and_project(p, dw, db, stride, prp, pci, pv, pb, hidden, out_channels);
  p.x = x.data_ptr<float>();
  p.expand_row_ptr = erp.data_ptr<int32_t>();
  p.expand_col_idx = eci.data_ptr<int32_t>();
  p.expand_values = ev.data_ptr<float>();
  p.expand_bias = eb.data_ptr<float>();
  p.batch = x.size(0);
  p.c_in = x.size(1);
  p.height = x.size(2);
  p.width = x.size(3);
  p.n_expand = ev.size(1);
  p.residual = residual;
  return run_block(p, kernels_for(isa).inverted_residual, x.options());
}

// MobileNetV2's stem and first block in one op: the stem conv + ReLU6 (as stem_conv) takes the
// place of the block's expand conv, so its 32-channel output is never written out whole.
torch::Tensor stem_block(const torch::Tensor& image, const torch::Tensor& stem_weight, const torch::Tensor& stem_bias,
                         const torch::Tensor& dw_weight, const torch::Tensor& dw_bias, int64_t stride,
                         const torch::Tensor& project_row_ptr, const torch::Tensor& project_col_idx,
                         const torch::Tensor& project_values, const torch::Tensor& project_bias, int64_t out_channels,
                         const std::string& isa) {
  check_stem(image, stem_weight, stem_bias);
  const int64_t c_in = image.size(1), hidden = stem_weight.size(0);
  const torch::Tensor x = image.contiguous(), sw = stem_weight.contiguous(), sb = stem_bias.contiguous();
  const torch::Tensor prp = project_row_ptr.contiguous(), pci = project_col_idx.contiguous();
  const torch::Tensor pv = project_values.contiguous(), pb = project_bias.contiguous();
  const torch::Tensor dw = dw_weight.contiguous(), db = dw_bias.contiguous();

  InvertedResidualProblem p{};
  set_depthwise_and_project(p, dw, db, stride, prp, pci, pv, pb, hidden, out_channels);
  p.x = x.data_ptr<float>();
  p.stem_weight = sw.data_ptr<float>();
  p.stem_bias = sb.data_ptr<float>();
  p.batch = x.size(0);
  p.c_in = c_in;
  p.image_height = x.size(2);
  p.image_width = x.size(3);
  p.height = (p.image_height - 1) / 2 + 1;  // the stem's output: 3x3, stride 2, padding 1
  p.width = (p.image_width - 1) / 2 + 1;
  p.n_expand = 1;
  return run_block(p, kernels_for(isa).inverted_residual, x.options());
}

// A dense layer on pooled features, y = x W^T + bias for x (B, C_in) and W (C_out, C_in): the
// classifier, whose weight streams from memory (LinearProblem in conv1xn.h).
torch::Tensor linear(const torch::Tensor& input, const torch::Tensor& weight, const torch::Tensor& bias,
                     const std::string& isa) {
  check_cpu(input, "input", torch::kFloat);
  check_cpu(weight, "weight", torch::kFloat);
  check_cpu(bias, "bias", torch::kFloat);
  TORCH_CHECK(input.dim() == 2, "conv1xn: linear input must be (batch, C_in), got ", input.dim(), " dimensions");
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == input.size(1), "conv1xn: linear weight must be (C_out, ",
              input.size(1), ") for an input of ", input.size(1), " features");
  TORCH_CHECK(bias.numel() == weight.size(0), "conv1xn: linear bias must hold C_out (", weight.size(0), ") floats");
  const torch::Tensor x = input.contiguous(), w = weight.contiguous(), b = bias.contiguous();
  LinearProblem p{};
  p.x = x.data_ptr<float>();
  p.weight = w.data_ptr<float>();
  p.bias = b.data_ptr<float>();
  p.batch = x.size(0);
  p.c_in = x.size(1);
  p.c_out = w.size(0);
  torch::Tensor y = torch::empty({p.batch, p.c_out}, x.options());
  p.y = y.data_ptr<float>();
  if (y.numel() == 0) return y;
  const LinearKernel& kernel = kernels_for(isa).linear;
  at::parallel_for(0, kernel.plan(p), 1, [&](int64_t begin, int64_t end) { kernel.run(p, begin, end); });
  return y;
}

}  // namespace

TORCH_LIBRARY(conv1xn, m) {
  m.def("conv1x1_1xn(Tensor input, Tensor row_ptr, Tensor col_idx, Tensor values, Tensor bias, "
        "int out_channels, int activation, str isa) -> Tensor");
  m.def("depthwise_conv(Tensor input, Tensor weight, Tensor bias, int stride, int activation, str isa) -> Tensor");
  m.def("inverted_residual(Tensor input, Tensor expand_row_ptr, Tensor expand_col_idx, Tensor expand_values, "
        "Tensor expand_bias, Tensor dw_weight, Tensor dw_bias, int stride, Tensor project_row_ptr, "
        "Tensor project_col_idx, Tensor project_values, Tensor project_bias, int out_channels, bool residual, "
        "str isa) -> Tensor");
  m.def("stem_conv(Tensor input, Tensor weight, Tensor bias, int activation, str isa) -> Tensor");
  m.def("stem_block(Tensor image, Tensor stem_weight, Tensor stem_bias, Tensor dw_weight, Tensor dw_bias, int stride, "
        "Tensor project_row_ptr, Tensor project_col_idx, Tensor project_values, Tensor project_bias, "
        "int out_channels, str isa) -> Tensor");
  m.def("linear(Tensor input, Tensor weight, Tensor bias, str isa) -> Tensor");
}

TORCH_LIBRARY_IMPL(conv1xn, CPU, m) {
  m.impl("conv1x1_1xn", &conv1x1_1xn);
  m.impl("depthwise_conv", &depthwise_conv);
  m.impl("inverted_residual", &inverted_residual);
  m.impl("stem_conv", &stem_conv);
  m.impl("stem_block", &stem_block);
  m.impl("linear", &linear);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("available_isas", &available_isas, "instruction sets this CPU can run, widest first");
}
