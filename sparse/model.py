"""The sparse inference network: every pruned 1x1 conv runs the 1xN kernel, every depthwise conv
our depthwise kernel and the first conv (3x3, stride 2, on the image) our stem kernel, each with
its BatchNorm folded in and its activation fused; unpruned 1x1 convs stay dense (the classifier's
on our matrix-vector kernel, PooledLinear; others as PyTorch convs). A MobileNetV2 block whose expand
and project convs are both pruned runs as one fused op (FusedInvertedResidual), and V2's stem
with its first block as another (FusedStemBlock).

The rewrite works on the flat `nn.Sequential`s the models are made of (conv, BN, act are
siblings, see models/blocks.py), so it needs no per-architecture list of layer names.
"""
from collections import OrderedDict
import copy

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from sparse.kernel import (BACKENDS, DEPTHWISE_KERNEL_SIZES, DEPTHWISE_STRIDES, STEM_MAX_CHANNELS, apply_activation,
                           conv1x1_1xn, depthwise_conv, inverted_residual, linear, stem_block, stem_conv)
from sparse.pack import BlockSparse1xN, pack_1xn

FUSABLE_ACTIVATIONS = ("relu", "relu6", "hardswish")
# Modules that compute nothing in an inference (eval-mode) network.
NO_OPS = (nn.Identity, nn.Dropout)
# One ATen op each; the models' own HardSwish takes four.
FASTEST_ACTIVATION = {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}


class SparseConv1x1(nn.Module):
    """act(conv1x1(x) + bias) with the weight packed in 1xN blocks (BSR, see sparse/pack.py)."""

    def __init__(self, weight: BlockSparse1xN, bias: Tensor, activation: str = "none"):
        super().__init__()
        self.out_channels, self.in_channels = weight.out_channels, weight.in_channels
        self.activation = activation
        for name, tensor in weight.tensors().items():
            self.register_buffer(name, tensor)
        self.register_buffer("bias", bias.detach().float().clone())
        self.backend = "auto"  # see set_backend

    @property
    def weight(self) -> BlockSparse1xN:
        return BlockSparse1xN(self.row_ptr, self.col_idx, self.values, self.out_channels, self.in_channels)

    def forward(self, x: Tensor) -> Tensor:
        return conv1x1_1xn(x, self.weight, self.bias, self.activation, self.backend)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The number of kept blocks is data, not architecture: take the stored tensors' shapes.
        for name in ("row_ptr", "col_idx", "values"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, N={self.values.shape[1]}, "
                f"blocks kept={self.weight.density:.3f}, activation={self.activation}")


class DepthwiseConv(nn.Module):
    """act(depthwise conv(x) + bias), k x k filters, padding k // 2, on the depthwise kernel."""

    def __init__(self, weight: Tensor, bias: Tensor, stride: int, activation: str = "none"):
        super().__init__()
        self.stride, self.activation = stride, activation
        # Named like nn.Conv2d's parameters: the state_dict keys stay those of the dense conv.
        self.register_buffer("weight", weight.detach().float().contiguous())
        self.register_buffer("bias", bias.detach().float().clone())
        self.backend = "auto"  # see set_backend

    def forward(self, x: Tensor) -> Tensor:
        return depthwise_conv(x, self.weight, self.bias, self.stride, self.activation, self.backend)

    def extra_repr(self) -> str:
        return (f"{self.weight.shape[0]}, kernel_size={self.weight.shape[-1]}, stride={self.stride}, "
                f"activation={self.activation}")


class StemConv(nn.Module):
    """act(conv3x3 stride 2(x) + bias) on the stem kernel: the dense first conv of a MobileNet,
    on the image's few channels (sparse.kernel.stem_conv)."""

    def __init__(self, weight: Tensor, bias: Tensor, activation: str = "none"):
        super().__init__()
        self.activation = activation
        self.register_buffer("weight", weight.detach().float().contiguous())
        self.register_buffer("bias", bias.detach().float().clone())
        self.backend = "auto"  # see set_backend
        self.passthrough = False  # set while the next block computes this conv too (FusedStemBlock)

    def forward(self, x: Tensor) -> Tensor:
        if self.passthrough:
            return x
        return stem_conv(x, self.weight, self.bias, self.activation, self.backend)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, kernel_size=3, stride=2, activation={self.activation}"


class FusedInvertedResidual(nn.Module):
    """A V2 inverted residual block (expand 1xN + relu6, depthwise + relu6, project 1xN) as one op,
    band by band (sparse.kernel.inverted_residual). It keeps the block's `conv` Sequential, so the
    state_dict keys do not change, and runs it layer by layer when fusion is off (set_fusion) or
    on the PyTorch backend."""

    def __init__(self, conv: nn.Sequential, use_residual: bool):
        super().__init__()
        self.conv, self.use_residual = conv, use_residual
        # Positions, not module attributes: those would be registered twice (new state_dict keys).
        self.layer_indices = [i for i, m in enumerate(conv) if not isinstance(m, NO_OPS)]
        self.fused = True
        self.backend = "auto"  # see set_backend

    def forward(self, x: Tensor) -> Tensor:
        if not self.fused:
            out = self.conv(x)
            return x + out if self.use_residual else out
        expand, depthwise, project = (self.conv[i] for i in self.layer_indices)
        return inverted_residual(x, expand.weight, expand.bias, depthwise.weight, depthwise.bias, depthwise.stride,
                                 project.weight, project.bias, self.use_residual, self.backend)

    def extra_repr(self) -> str:
        return f"fused={self.fused}, residual={self.use_residual}"


class FusedStemBlock(nn.Module):
    """MobileNetV2's stem conv and first block (depthwise + relu6, project 1xN; no expand conv)
    as one op, band by band (sparse.kernel.stem_block), the stem's output never written out
    whole. It keeps the block's `conv` Sequential and refers to the stem module of the Sequential
    before it without registering it, so the state_dict keys do not change; while fused, that
    stem passes the image through."""

    def __init__(self, conv: nn.Sequential, stem: StemConv):
        super().__init__()
        self.conv = conv
        self.layer_indices = [i for i, m in enumerate(conv) if not isinstance(m, NO_OPS)]
        self.__dict__["stem"] = stem  # not a child: its tensors stay under the stem's own keys
        self.backend = "auto"  # see set_backend
        self.fused = True

    @property
    def fused(self) -> bool:
        return self.stem.passthrough

    @fused.setter
    def fused(self, enabled: bool) -> None:
        self.stem.passthrough = enabled

    def forward(self, x: Tensor) -> Tensor:
        if not self.fused:
            return self.conv(x)
        depthwise, project = (self.conv[i] for i in self.layer_indices)
        return stem_block(x, self.stem.weight, self.stem.bias, depthwise.weight, depthwise.bias, depthwise.stride,
                          project.weight, project.bias, self.backend)

    def extra_repr(self) -> str:
        return f"fused={self.fused}"


def _fuse_stem_block(model: nn.Module) -> None:
    """Fuses MobileNetV2's stem into its first block where both are on our kernels: features.0 a
    stem (relu6) and features.1 a block of depthwise (relu6) and pruned project (no activation)."""
    from models.blocks import InvertedResidual
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential) or len(features) < 2:
        return
    stem_layers = [m for m in features[0] if not isinstance(m, NO_OPS)] if isinstance(features[0], nn.Sequential) else []
    block = features[1]
    if not (len(stem_layers) == 1 and isinstance(stem_layers[0], StemConv) and stem_layers[0].activation == "relu6"
            and isinstance(block, InvertedResidual) and not block.use_residual):
        return
    layers = [m for m in block.conv if not isinstance(m, NO_OPS)]
    if (len(layers) == 2 and isinstance(layers[0], DepthwiseConv) and layers[0].activation == "relu6"
            and isinstance(layers[1], SparseConv1x1) and layers[1].activation == "none"):
        features[1] = FusedStemBlock(block.conv, stem_layers[0])


def is_fusable_block(module: nn.Module) -> bool:
    """A rewritten V2 block the fused op computes: exactly sparse expand (relu6), depthwise
    (relu6), sparse project (no activation) besides placeholders."""
    from models.blocks import InvertedResidual
    if not isinstance(module, InvertedResidual):
        return False
    layers = [m for m in module.conv if not isinstance(m, NO_OPS)]
    if len(layers) != 3:
        return False
    expand, depthwise, project = layers
    return (isinstance(expand, SparseConv1x1) and expand.activation == "relu6"
            and isinstance(depthwise, DepthwiseConv) and depthwise.activation == "relu6"
            and isinstance(project, SparseConv1x1) and project.activation == "none")


class InferenceSequential(nn.Sequential):
    """nn.Sequential whose forward skips NO_OPS, such as the Identity placeholders that keep the
    state_dict numbering: each module call costs a few microseconds. For inference only: Dropout
    is skipped in training mode too."""

    def forward(self, x: Tensor) -> Tensor:
        for module in self:
            if not isinstance(module, NO_OPS):
                x = module(x)
        return x


def activation_kind(module: nn.Module) -> str | None:
    """Which fusable activation a parameter-free module computes, judged by what it outputs
    (so the models' own HardSwish counts as much as nn.Hardswish), or None."""
    if next(module.parameters(), None) is not None or next(module.buffers(), None) is not None:
        return None
    probe = torch.linspace(-8, 8, 161).view(1, -1, 1, 1)
    try:
        with torch.no_grad():
            out = module(probe.clone())  # a clone: in-place activations must not touch the probe
    except Exception:  # not an elementwise module
        return None
    for kind in FUSABLE_ACTIVATIONS:
        if out.shape == probe.shape and torch.allclose(out, apply_activation(probe, kind), atol=1e-6):
            return kind
    return None


def is_sparse_candidate(module: nn.Module) -> bool:
    """A masked (prunable) plain 1x1 conv: the shape the kernel computes."""
    return (isinstance(module, nn.Conv2d) and isinstance(getattr(module, "mask", None), Tensor)
            and module.kernel_size == (1, 1) and module.stride == (1, 1) and module.padding == (0, 0)
            and module.dilation == (1, 1) and module.groups == 1)


def is_depthwise(module: nn.Module) -> bool:
    """A depthwise conv the depthwise kernel computes."""
    if not isinstance(module, nn.Conv2d):
        return False
    k, stride = module.kernel_size[0], module.stride[0]
    return (module.groups == module.in_channels == module.out_channels and module.kernel_size == (k, k)
            and k in DEPTHWISE_KERNEL_SIZES and module.stride == (stride, stride) and stride in DEPTHWISE_STRIDES
            and module.padding == (k // 2, k // 2) and module.dilation == (1, 1) and module.padding_mode == "zeros")


def is_stem(module: nn.Module) -> bool:
    """A dense 3x3 stride-2 conv (padding 1) of at most STEM_MAX_CHANNELS input channels: the
    MobileNets' first conv, which the stem kernel computes."""
    return (isinstance(module, nn.Conv2d) and module.groups == 1 and module.kernel_size == (3, 3)
            and module.stride == (2, 2) and module.padding == (1, 1) and module.dilation == (1, 1)
            and module.padding_mode == "zeros" and module.in_channels <= STEM_MAX_CHANNELS
            and not isinstance(getattr(module, "mask", None), Tensor))


def folded_weight_and_bias(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> tuple[Tensor, Tensor]:
    """The conv's (masked) weight and bias with a following eval-mode BatchNorm folded in."""
    weight = conv.weight.detach().float()
    if isinstance(getattr(conv, "mask", None), Tensor):
        weight = weight * conv.mask
    bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(conv.out_channels)
    if bn is not None:
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        weight = weight * scale[:, None, None, None]
        bias = (bias - bn.running_mean) * scale + bn.bias.detach()
    return weight, bias


class PooledLinear(nn.Module):
    """A dense 1x1 conv of the classifier, which sees the globally pooled 1x1 image, as a
    matrix-vector product on the linear kernel (sparse.kernel.linear): PyTorch runs a conv of that
    shape on its slow single-threaded path, and its own matrix-vector product reads the weight,
    which the rest of the network has pushed out of the caches, at half the kernel's speed."""

    def __init__(self, weight: Tensor, bias: Tensor):
        super().__init__()
        # Shaped as the conv's weight: the state_dict does not change.
        self.register_buffer("weight", weight.detach().float().contiguous())
        self.register_buffer("bias", bias.detach().float().clone())
        self.backend = "auto"  # see set_backend

    def forward(self, x: Tensor) -> Tensor:
        return linear(x.flatten(1), self.weight.flatten(1), self.bias, self.backend)[:, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}"


def _dense_conv(conv: nn.Conv2d, weight: Tensor, bias: Tensor) -> nn.Conv2d:
    dense = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True)
    with torch.no_grad():
        dense.weight.copy_(weight)
        dense.bias.copy_(bias)
    return dense


def pruned_layers(model: nn.Module) -> list[str]:
    """Names of the convs the kernel takes: pruned (mask not all ones) plain 1x1 convs.
    Unpruned ones (e.g. the classifier without --full) stay dense, where PyTorch is faster."""
    if _is_resnet(model):  # every pruned conv, k x k and strided ones included (sparse/resnet.py)
        from sparse import resnet
        return resnet.pruned_layers(model)
    return [name for name, m in model.named_modules() if is_sparse_candidate(m) and not bool(m.mask.all())]


def _rewrite_sequential(seq: nn.Sequential, prefix: str, n: int | None, packed: set[str], kernels: bool,
                        pooled: bool = False) -> None:
    """Folds each conv's BatchNorm into it; packs the convs named in `packed` in 1xN blocks and,
    if `kernels`, moves the depthwise convs and the stem onto their kernels, fusing the activation
    that follows (after the BN and no-op placeholders) into any of them, and runs the dense 1x1
    convs of a `pooled` Sequential (the classifier) as PooledLinear. Identity placeholders keep
    the state_dict numbering."""
    layers = list(seq)
    for i, conv in enumerate(layers):
        if not isinstance(conv, nn.Conv2d):
            continue
        following = i + 1
        bn = None
        if following < len(layers) and isinstance(layers[following], _BatchNorm):
            bn = layers[following]
            seq[following] = nn.Identity()
            following += 1
        while following < len(layers) and isinstance(layers[following], NO_OPS):
            following += 1  # e.g. V3's squeeze-excite placeholder in blocks without one
        weight, bias = folded_weight_and_bias(conv, bn)
        sparse = f"{prefix}{i}" in packed
        if not (sparse or (kernels and (is_depthwise(conv) or is_stem(conv)))):
            pointwise = conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
            seq[i] = PooledLinear(weight, bias) if kernels and pooled and pointwise else _dense_conv(conv, weight, bias)
            continue
        # Not past a module that is no activation: V3's squeeze-excite sits between BN and act.
        activation = activation_kind(layers[following]) if following < len(layers) else None
        if activation is not None:
            seq[following] = nn.Identity()
        activation = activation or "none"
        if sparse:
            seq[i] = SparseConv1x1(pack_1xn(weight, n, keep=conv.mask), bias, activation)
        elif is_depthwise(conv):
            seq[i] = DepthwiseConv(weight, bias, conv.stride[0], activation)
        else:
            seq[i] = StemConv(weight, bias, activation)


def _fastest_equivalent(module: nn.Module) -> nn.Module:
    """PyTorch's own module for an activation of the models' own left unfused (e.g. V3's HardSwish
    after squeeze-excite); PyTorch's (perhaps in-place) ones stay."""
    kind = None if isinstance(module, NO_OPS) else activation_kind(module)
    if kind is None or isinstance(module, FASTEST_ACTIVATION[kind]):
        return module
    return FASTEST_ACTIVATION[kind]()


def _rewrite(model: nn.Module, n: int | None, packed: set[str], kernels: bool) -> nn.Module:
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Sequential):
            _rewrite_sequential(module, f"{name}." if name else "", n, packed, kernels,
                                pooled=module is getattr(model, "classifier", None))
            if name:  # same children under the same names: the state_dict keys do not change
                children = OrderedDict((child_name, _fastest_equivalent(child))
                                       for child_name, child in module.named_children())
                _replace_module(model, name, InferenceSequential(children))
    if kernels:
        for name, module in list(model.named_modules()):
            if is_fusable_block(module):
                _replace_module(model, name, FusedInvertedResidual(module.conv, module.use_residual))
        _fuse_stem_block(model)
    leftover = [name for name, m in model.named_modules() if isinstance(getattr(m, "mask", None), Tensor)]
    if leftover:
        raise ValueError(f"masked convs outside an nn.Sequential, not converted: {leftover}")
    return model


@torch.no_grad()
def to_sparse_model(model: nn.Module, n: int, layers: list[str] | None = None) -> nn.Module:
    """An inference copy of `model` (eval mode) computing the same function, with BatchNorm
    folded, the convs named in `layers` (default: pruned_layers(model)) on the 1xN kernel and the
    depthwise convs on the depthwise kernel."""
    if _is_resnet(model):
        from sparse import resnet
        return resnet.to_sparse_resnet(model, n, layers)
    layers = pruned_layers(model) if layers is None else layers
    not_candidates = set(layers) - {name for name, m in model.named_modules() if is_sparse_candidate(m)}
    if not_candidates:
        raise ValueError(f"not masked plain 1x1 convs, cannot be packed: {sorted(not_candidates)}")
    return _rewrite(model, n, set(layers), kernels=True)


@torch.no_grad()
def fold_batchnorm(model: nn.Module) -> nn.Module:
    """The dense twin of to_sparse_model: masks baked, BatchNorm folded, placeholders skipped, all
    convs PyTorch's (a baseline)."""
    if _is_resnet(model):
        from sparse import resnet
        return resnet.to_sparse_resnet(model, 1, [])
    return _rewrite(model, None, set(), kernels=False)


def _is_resnet(model: nn.Module) -> bool:
    from models.resnet import ResNet
    return isinstance(model, ResNet)
def set_backend(model: nn.Module, backend: str) -> nn.Module:
    """Runs every kernel layer of a sparse network on `backend` (sparse.kernel.BACKENDS), e.g.
    'avx2' to measure the AVX2 path on an AVX-512 machine; returns the model."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for module in model.modules():
        if isinstance(module, (SparseConv1x1, DepthwiseConv, StemConv, PooledLinear, FusedInvertedResidual,
                               FusedStemBlock)):
            module.backend = backend
    return model


def set_fusion(model: nn.Module, enabled: bool) -> nn.Module:
    """Runs the V2 blocks of a sparse network as one fused op each (the default) or layer by layer
    (e.g. to measure what fusion gains); returns the model."""
    for module in model.modules():
        if isinstance(module, (FusedInvertedResidual, FusedStemBlock)):
            module.fused = enabled
    return model


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


@torch.no_grad()
def bake_masks(model: nn.Module) -> nn.Module:
    """An eval copy where every masked conv is a plain nn.Conv2d holding weight ⊙ mask: the
    masked-dense model without the per-call mask multiply (for export and dense baselines)."""
    baked = copy.deepcopy(model).eval()
    for name, module in list(baked.named_modules()):
        if isinstance(getattr(module, "mask", None), Tensor):
            _replace_module(baked, name, _dense_conv(module, *folded_weight_and_bias(module, None)))
    return baked
