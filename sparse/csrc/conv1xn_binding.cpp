// PyTorch entry points of the 1xN sparse 1x1 conv and of the depthwise conv: they check the
// tensors, pick the widest ISA this CPU has (at run time, so the built library also runs on CPUs
// without AVX-512), and spread the work items over at::parallel_for, i.e. over
// torch.get_num_threads() threads.
#include <torch/extension.h>

#include "conv1xn.h"

namespace {

const IsaKernels& kernels_for(const std::string& isa) {
  const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
  const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
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

torch::Tensor conv1x1_1xn(const torch::Tensor& input, const torch::Tensor& row_ptr,
                          const torch::Tensor& col_idx, const torch::Tensor& values,
                          const torch::Tensor& bias, int64_t out_channels, int64_t activation,
                          const std::string& isa) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == torch::kFloat, "input: float32 NCHW");
  TORCH_CHECK(values.dim() == 2 && values.scalar_type() == torch::kFloat, "values: float32 (nnzb, N)");
  TORCH_CHECK(row_ptr.scalar_type() == torch::kInt && col_idx.scalar_type() == torch::kInt,
              "row_ptr and col_idx: int32");
  TORCH_CHECK(activation >= kActNone && activation <= kActHardswish, "unknown activation");
  const int64_t n = values.size(1), groups = (out_channels + n - 1) / n;
  TORCH_CHECK(row_ptr.numel() == groups + 1 && col_idx.numel() == values.size(0),
              "row_ptr/col_idx/values disagree with out_channels and N");
  TORCH_CHECK(bias.numel() == out_channels && bias.scalar_type() == torch::kFloat, "bias: float32 (C_out)");

  // The kernel reads NCHW rows; a channels_last input costs one copy here.
  const torch::Tensor x = input.contiguous();
  const torch::Tensor rp = row_ptr.contiguous(), ci = col_idx.contiguous();
  const torch::Tensor w = values.contiguous(), b = bias.contiguous();
  auto y = torch::empty({x.size(0), out_channels, x.size(2), x.size(3)}, x.options());

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
  p.hw = x.size(2) * x.size(3);
  p.n = n;
  p.activation = (int32_t)activation;
  if (y.numel() == 0) return y;

  const Conv1xNKernel& kernel = kernels_for(isa).conv1x1;
  const int64_t items = kernel.plan(p);
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) { kernel.run(p, begin, end); });
  return y;
}

torch::Tensor depthwise_conv(const torch::Tensor& input, const torch::Tensor& weight,
                            const torch::Tensor& bias, int64_t stride, int64_t activation,
                            const std::string& isa) {
  TORCH_CHECK(input.dim() == 4 && input.scalar_type() == torch::kFloat, "input: float32 NCHW");
  TORCH_CHECK(input.size(2) > 0 && input.size(3) > 0, "input: empty image");
  const int64_t channels = input.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.scalar_type() == torch::kFloat && weight.size(0) == channels &&
                  weight.size(1) == 1 && weight.size(2) == weight.size(3),
              "weight: float32 (C, 1, k, k) for an input of C channels");
  const int64_t kernel_size = weight.size(3);
  TORCH_CHECK(kernel_size == 3 || kernel_size == 5, "depthwise kernel size must be 3 or 5");
  TORCH_CHECK(stride == 1 || stride == 2, "depthwise stride must be 1 or 2");
  TORCH_CHECK(activation >= kActNone && activation <= kActHardswish, "unknown activation");
  TORCH_CHECK(bias.numel() == channels && bias.scalar_type() == torch::kFloat, "bias: float32 (C)");

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
  const DepthwiseKernel& kernel = kernels_for(isa).depthwise;
  const int64_t items = kernel.plan(p);
  auto y = torch::empty({p.batch, channels, p.out_height, p.out_width}, x.options());
  p.y = y.data_ptr<float>();
  if (y.numel() == 0) return y;
  at::parallel_for(0, items, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(p.scratch_floats);  // one per thread's range of items
    kernel.run(p, begin, end, scratch.data());
  });
  return y;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("conv1x1_1xn", &conv1x1_1xn,
        "act(W x + bias) for a 1x1 conv whose weight W is BSR with (N, 1) blocks");
  m.def("depthwise_conv", &depthwise_conv,
        "act(depthwise conv(x, weight) + bias), k x k filters (k = 3, 5), stride 1 or 2, padding k / 2");
  m.def("available_isas", &available_isas, "instruction sets this CPU can run, widest first");
}
