"""The 1xN sparse 1x1 conv and the depthwise conv with fused bias and activation: the C++ kernels
(JIT-built on first use) or, without a compiler or an AVX2 CPU, the same result from PyTorch.

Also MobileNetV2's whole inverted residual block in one op (expand, depthwise, project computed
band by band, the expanded band kept in cache), the networks' dense first conv (3x3, stride 2, on
the image), V2's stem with its first block in one op, and the classifier's dense layer.

The C++ kernels are dispatcher ops, torch.ops.conv1xn.conv1x1_1xn, .depthwise_conv,
.inverted_residual, .stem_conv, .stem_block and .linear, so a
network calling them can be captured by torch.jit and run from a plain torch install that loads
`library_path()` (see sparse/deploy.py)."""
import functools
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from sparse.pack import BlockSparse1xN, unpack_1xn

ACTIVATIONS = ("none", "relu", "relu6", "hardswish")  # the order is the C++ enum's
BACKENDS = ("auto", "avx512", "avx2", "torch")

_CSRC = Path(__file__).with_name("csrc")
_REPO_ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)


@functools.cache
def extension():
    """The compiled extension, or None when it cannot be built here (then the torch fallback runs).

    Built once into TORCH_EXTENSIONS_DIR if set, else the repository's ignored build/ folder.
    """
    from torch.utils import cpp_extension

    build_dir = Path(os.environ.get("TORCH_EXTENSIONS_DIR", _REPO_ROOT / "build" / "torch_extensions"))
    build_dir = build_dir / "conv1xn"
    build_dir.mkdir(parents=True, exist_ok=True)
    try:
        return cpp_extension.load(
            name="conv1xn",
            sources=[str(_CSRC / f) for f in ("conv1xn_binding.cpp", "conv1xn_avx512.cpp", "conv1xn_avx2.cpp")],
            extra_include_paths=[str(_CSRC)],
            # -fopenmp makes at::parallel_for multi-threaded; no -march: the ISA is chosen at run time.
            extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            build_directory=str(build_dir),
        )
    except Exception as error:  # no compiler, no headers, not x86: fall back, but say so once
        log.warning("conv1xn: C++ kernel unavailable (%s); using the PyTorch fallback", error)
        return None


@functools.cache
def library_path() -> str:
    """The built shared library holding the ops (for torch.ops.load_library elsewhere)."""
    ext = extension()
    if ext is None:
        raise RuntimeError("the C++ kernel could not be built here")
    return ext.__file__


@functools.cache
def available_backends() -> tuple[str, ...]:
    """Backends that run on this machine, fastest first ('torch' always works)."""
    ext = extension()
    return (*(ext.available_isas() if ext is not None else ()), "torch")


def _uses_torch(backend: str) -> bool:
    """Whether `backend` means the PyTorch fallback here; raises for a C++ one this machine lacks."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch" or available_backends() == ("torch",):
        if backend not in ("auto", "torch"):
            raise RuntimeError(f"backend {backend!r} unavailable: the C++ kernel could not be built or run")
        return True
    return False


def conv1x1_1xn(x: Tensor, weight: BlockSparse1xN, bias: Tensor, activation: str = "none",
                backend: str = "auto") -> Tensor:
    """act(conv1x1(x, weight) + bias) for x (B, C_in, H, W) float32; returns NCHW."""
    # Checked while running, not while tracing (a trace keeps no Python; the C++ op checks again).
    if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != weight.in_channels):
        raise ValueError(f"conv1x1_1xn: input of shape {tuple(x.shape)} for a weight of {weight.in_channels} "
                         "input channels (expected B x C_in x H x W)")
    if _uses_torch(backend):
        return conv1x1_1xn_torch(x, weight, bias, activation)
    return torch.ops.conv1xn.conv1x1_1xn(x, weight.row_ptr, weight.col_idx, weight.values, bias,
                                         weight.out_channels, ACTIVATIONS.index(activation), backend)


def conv1x1_1xn_torch(x: Tensor, weight: BlockSparse1xN, bias: Tensor, activation: str = "none") -> Tensor:
    """Reference and fallback: the same layer as a dense conv."""
    dense = unpack_1xn(weight)[:, :, None, None]
    return apply_activation(F.conv2d(x, dense, bias), activation)


DEPTHWISE_KERNEL_SIZES = (3, 5)
DEPTHWISE_STRIDES = (1, 2)


def depthwise_conv(x: Tensor, weight: Tensor, bias: Tensor, stride: int, activation: str = "none",
                   backend: str = "auto") -> Tensor:
    """act(depthwise conv(x, weight) + bias) for x (B, C, H, W) float32 and weight (C, 1, k, k),
    k in DEPTHWISE_KERNEL_SIZES, stride in DEPTHWISE_STRIDES, zero padding k // 2; returns NCHW."""
    if _uses_torch(backend):
        return depthwise_conv_torch(x, weight, bias, stride, activation)
    return torch.ops.conv1xn.depthwise_conv(x, weight, bias, stride, ACTIVATIONS.index(activation), backend)


def depthwise_conv_torch(x: Tensor, weight: Tensor, bias: Tensor, stride: int, activation: str = "none") -> Tensor:
    """Reference and fallback."""
    y = F.conv2d(x, weight, bias, stride, padding=weight.shape[-1] // 2, groups=weight.shape[0])
    return apply_activation(y, activation)


STEM_MAX_CHANNELS = 4  # kStemMaxChannels in conv1xn.h


def stem_conv(x: Tensor, weight: Tensor, bias: Tensor, activation: str = "none", backend: str = "auto") -> Tensor:
    """act(conv3x3(x, weight, stride 2, padding 1) + bias) for x (B, C_in, H, W) float32 with C_in
    <= STEM_MAX_CHANNELS (a network's first conv, on the image) and weight (C_out, C_in, 3, 3)."""
    if _uses_torch(backend):
        return stem_conv_torch(x, weight, bias, activation)
    return torch.ops.conv1xn.stem_conv(x, weight, bias, ACTIVATIONS.index(activation), backend)


def stem_conv_torch(x: Tensor, weight: Tensor, bias: Tensor, activation: str = "none") -> Tensor:
    """Reference and fallback."""
    return apply_activation(F.conv2d(x, weight, bias, stride=2, padding=1), activation)


def stem_block(x: Tensor, stem_weight: Tensor, stem_bias: Tensor, dw_weight: Tensor, dw_bias: Tensor, stride: int,
               project: BlockSparse1xN, project_bias: Tensor, backend: str = "auto") -> Tensor:
    """MobileNetV2's stem and first block on the image x (B, C_in <= STEM_MAX_CHANNELS, H, W):
    project(relu6(depthwise(relu6(stem_conv(x))))), each with its bias, in one pass over bands of
    output rows (the stem's output is never written out whole); the same as the three ops in turn."""
    if _uses_torch(backend):
        return stem_block_torch(x, stem_weight, stem_bias, dw_weight, dw_bias, stride, project, project_bias)
    return torch.ops.conv1xn.stem_block(x, stem_weight, stem_bias, dw_weight, dw_bias, stride, project.row_ptr,
                                        project.col_idx, project.values, project_bias, project.out_channels, backend)


def stem_block_torch(x: Tensor, stem_weight: Tensor, stem_bias: Tensor, dw_weight: Tensor, dw_bias: Tensor,
                     stride: int, project: BlockSparse1xN, project_bias: Tensor) -> Tensor:
    """Reference and fallback: the three layers in turn."""
    hidden = depthwise_conv_torch(stem_conv_torch(x, stem_weight, stem_bias, "relu6"), dw_weight, dw_bias, stride,
                                  "relu6")
    return conv1x1_1xn_torch(hidden, project, project_bias)


def inverted_residual(x: Tensor, expand: BlockSparse1xN, expand_bias: Tensor, dw_weight: Tensor, dw_bias: Tensor,
                      stride: int, project: BlockSparse1xN, project_bias: Tensor, residual: bool,
                      backend: str = "auto") -> Tensor:
    """MobileNetV2's inverted residual block on x (B, C_in, H, W) float32:
    project(relu6(depthwise(relu6(expand(x))))) [+ x], each with its bias, in one pass over bands
    of output rows; the same as the three layers' ops in turn."""
    if not torch.jit.is_tracing() and (x.dim() != 4 or x.shape[1] != expand.in_channels):
        raise ValueError(f"inverted_residual: input of shape {tuple(x.shape)} for a block of {expand.in_channels} "
                         "input channels (expected B x C_in x H x W)")
    if _uses_torch(backend):
        return inverted_residual_torch(x, expand, expand_bias, dw_weight, dw_bias, stride, project, project_bias,
                                       residual)
    return torch.ops.conv1xn.inverted_residual(
        x, expand.row_ptr, expand.col_idx, expand.values, expand_bias, dw_weight, dw_bias, stride,
        project.row_ptr, project.col_idx, project.values, project_bias, project.out_channels, residual, backend)


def inverted_residual_torch(x: Tensor, expand: BlockSparse1xN, expand_bias: Tensor, dw_weight: Tensor,
                            dw_bias: Tensor, stride: int, project: BlockSparse1xN, project_bias: Tensor,
                            residual: bool) -> Tensor:
    """Reference and fallback: the block layer by layer."""
    hidden = conv1x1_1xn_torch(x, expand, expand_bias, "relu6")
    y = conv1x1_1xn_torch(depthwise_conv_torch(hidden, dw_weight, dw_bias, stride, "relu6"), project, project_bias)
    return x + y if residual else y


def linear(x: Tensor, weight: Tensor, bias: Tensor, backend: str = "auto") -> Tensor:
    """x @ weight.T + bias for x (B, C_in) and weight (C_out, C_in) float32: a dense layer on
    pooled features. PyTorch's matrix-vector product reads a weight that is not in cache at about
    10 GB/s here; the kernel streams it twice as fast, on every thread."""
    if _uses_torch(backend):
        return F.linear(x, weight, bias)
    return torch.ops.conv1xn.linear(x, weight, bias, backend)


def apply_activation(y: Tensor, activation: str) -> Tensor:
    match activation:
        case "none":
            return y
        case "relu":
            return F.relu(y)
        case "relu6":
            return F.relu6(y)
        case "hardswish":
            return F.hardswish(y)
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
