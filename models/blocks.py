"""Building blocks shared by every MobileNet family.

The state_dict keys of the authors' models are fixed (see `reference/*.layout.json`), and they
come from flat `nn.Sequential`s: a block's layers are numbered in order, activations and
`nn.Identity` placeholders included. So the helpers here return *lists* of layers that the
family files concatenate, and the numbering falls out of the concatenation.
"""
from torch import nn
import torch.nn.functional as F


def make_divisible(value, divisor=8):
    """Round `value` to a multiple of `divisor`, never going more than 10 % below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


class HardSigmoid(nn.Module):
    """relu6(x + 3) / 6, as in d-li14's MobileNetV3 (and its checkpoints)."""

    def forward(self, x):
        return F.relu6(x + 3.0) / 6.0


class HardSwish(nn.Module):
    def forward(self, x):
        return x * F.relu6(x + 3.0) / 6.0


def activation(name):
    return {"relu": lambda: nn.ReLU(inplace=True),
            "relu6": lambda: nn.ReLU6(inplace=True),
            "hswish": HardSwish}[name]()


def stem(in_channels, out_channels, act, stride=2):
    """The dense 3×3 first conv: Conv-BN-act, never pruned."""
    return [nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels), activation(act)]


def depthwise(channels, kernel_size, stride):
    """Depthwise conv + BN: per-channel, never pruned."""
    return [nn.Conv2d(channels, channels, kernel_size, stride, (kernel_size - 1) // 2,
                      groups=channels, bias=False),
            nn.BatchNorm2d(channels)]


def pointwise(in_channels, out_channels, conv_type):
    """Prunable 1×1 conv (with bias, as the authors' masked convs) + BN."""
    return [conv_type(in_channels, out_channels), nn.BatchNorm2d(out_channels)]


class SqueezeExcite(nn.Module):
    """SE with 1×1 convs (`fc.0`, `fc.2`) so that both are prunable like any pointwise conv."""

    def __init__(self, channels, conv_type, reduction=4):
        super().__init__()
        squeezed = make_divisible(channels // reduction)
        self.fc = nn.Sequential(conv_type(channels, squeezed), nn.ReLU(inplace=True),
                                conv_type(squeezed, channels), HardSigmoid())

    def forward(self, x):
        return x * self.fc(F.adaptive_avg_pool2d(x, 1))


class InvertedResidual(nn.Module):
    """A flat `conv` Sequential with an identity shortcut when shapes allow it (V2 and V3)."""

    def __init__(self, layers, use_residual):
        super().__init__()
        self.conv = nn.Sequential(*layers)
        self.use_residual = use_residual

    def forward(self, x):
        out = self.conv(x)
        return x + out if self.use_residual else out


class MobileNet(nn.Module):
    """features → [conv] → global average pool → classifier, all 4-D (the classifier is 1×1 convs)."""

    def __init__(self, features, classifier, head=None, stem_name=None):
        super().__init__()
        if stem_name:  # V1 keeps its stem outside `features` (`conv1.*`)
            self.add_module(stem_name, features.pop(0))
        self.features = nn.Sequential(*features)
        if head is not None:
            self.conv = head
        self.classifier = classifier

    def forward(self, x):
        for module in self.children():
            if module is self.classifier:
                x = F.adaptive_avg_pool2d(x, 1)
            x = module(x)
        return x.flatten(1)
