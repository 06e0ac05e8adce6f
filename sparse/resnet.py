"""The sparse inference ResNet: every pruned conv on the 1xN kernel, BatchNorm folded.

The kernel computes 1x1 convs. A pruned k x k conv becomes one through im2col: F.unfold turns the
input into C_in·k·k "virtual input channels" (channel c, tap t at c·k·k + t, the order of
weight.reshape(C_out, C_in·k·k)), so a 1xN block (N output channels x one input channel x the
whole kernel) is k·k kept-or-pruned-together (N, 1) blocks of that matrix. A strided 1x1 conv
(downsample.0) is a 1x1 conv of the subsampled input. ReLUs inside a residual branch are fused
into the kernel; the one after the residual add is not. The 7x7 stem and unpruned convs (fc
without --full) stay dense PyTorch convs.
"""
import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.resnet import ResNet
from sparse.model import SparseConv1x1, _dense_conv, folded_weight_and_bias
from sparse.pack import pack_1xn


class SparseConvKxK(nn.Module):
    """act(conv(x) + bias) for a k x k (or strided 1x1) conv, padding k // 2, on the 1xN kernel."""

    def __init__(self, conv: nn.Conv2d, weight: Tensor, bias: Tensor, n: int, activation: str):
        super().__init__()
        self.kernel_size, self.stride, self.padding = conv.kernel_size[0], conv.stride[0], conv.padding[0]
        c_out = weight.shape[0]
        keep = conv.mask.reshape(c_out, -1)
        self.conv = SparseConv1x1(pack_1xn(weight.reshape(c_out, -1), n, keep=keep), bias, activation)

    def forward(self, x: Tensor) -> Tensor:
        if self.kernel_size == 1:
            if self.stride > 1:
                x = x[:, :, ::self.stride, ::self.stride].contiguous()
            return self.conv(x)
        h, w = ((size + 2 * self.padding - self.kernel_size) // self.stride + 1 for size in x.shape[-2:])
        columns = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # (B, C·k·k, h·w)
        return self.conv(columns.view(x.shape[0], -1, h, w))


def _convert(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, packed: bool, n: int, relu: bool) -> nn.Module:
    """relu?(bn(conv(x))) as one module: on the kernel if `packed`, else a dense conv."""
    weight, bias = folded_weight_and_bias(conv, bn)
    if packed:
        return SparseConvKxK(conv, weight, bias, n, "relu" if relu else "none")
    dense = _dense_conv(conv, weight, bias)
    return nn.Sequential(dense, nn.ReLU(inplace=True)) if relu else dense


class SparseResidualBlock(nn.Module):
    def __init__(self, block, prefix: str, packed: set[str], n: int):
        super().__init__()
        convs = [(f"conv{i}", getattr(block, f"conv{i}"), getattr(block, f"bn{i}")) for i in range(1, block.depth + 1)]
        self.branch = nn.Sequential(*(_convert(conv, bn, f"{prefix}{name}" in packed, n, relu=i < len(convs) - 1)
                                      for i, (name, conv, bn) in enumerate(convs)))
        self.downsample = None
        if block.downsample is not None:
            self.downsample = _convert(block.downsample[0], block.downsample[1],
                                       f"{prefix}downsample.0" in packed, n, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu_(self.branch(x) + shortcut)


class SparseResNet(nn.Module):
    def __init__(self, model: ResNet, packed: set[str], n: int):
        super().__init__()
        self.stem = _convert(model.conv1, model.bn1, False, n, relu=True)
        self.maxpool = copy.deepcopy(model.maxpool)
        self.layers = nn.Sequential(*(SparseResidualBlock(block, f"layer{stage}.{i}.", packed, n)
                                      for stage in range(1, 5)
                                      for i, block in enumerate(getattr(model, f"layer{stage}"))))
        self.fc = _convert(model.fc, None, "fc" in packed, n, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.maxpool(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1)).flatten(1)


def pruned_layers(model: ResNet) -> list[str]:
    """Masked convs whose mask prunes something (fc without --full stays dense)."""
    return [name for name, m in model.named_modules()
            if isinstance(getattr(m, "mask", None), Tensor) and not bool(m.mask.all())]


@torch.no_grad()
def to_sparse_resnet(model: ResNet, n: int, layers: list[str] | None = None) -> SparseResNet:
    """An eval-mode inference network computing the masked `model`'s function."""
    layers = pruned_layers(model) if layers is None else layers
    masked = {name for name, m in model.named_modules() if isinstance(getattr(m, "mask", None), Tensor)}
    if set(layers) - masked:
        raise ValueError(f"not masked convs, cannot be packed: {sorted(set(layers) - masked)}")
    return SparseResNet(model.eval(), set(layers), n).eval()
