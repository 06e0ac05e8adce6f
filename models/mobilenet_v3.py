"""MobileNetV3 small and large in the d-li14/mobilenetv3.pytorch layout (SE and classifier as 1×1 convs)."""
from torch import nn

from .blocks import (InvertedResidual, MobileNet, SqueezeExcite, activation, depthwise,
                     make_divisible, pointwise, stem)

# (kernel, expansion, output channels, squeeze-excite, activation, stride) per block.
LARGE = [(3, 1, 16, False, "relu", 1), (3, 4, 24, False, "relu", 2), (3, 3, 24, False, "relu", 1),
         (5, 3, 40, True, "relu", 2), (5, 3, 40, True, "relu", 1), (5, 3, 40, True, "relu", 1),
         (3, 6, 80, False, "hswish", 2), (3, 2.5, 80, False, "hswish", 1),
         (3, 2.3, 80, False, "hswish", 1), (3, 2.3, 80, False, "hswish", 1),
         (3, 6, 112, True, "hswish", 1), (3, 6, 112, True, "hswish", 1),
         (5, 6, 160, True, "hswish", 2), (5, 6, 160, True, "hswish", 1), (5, 6, 160, True, "hswish", 1)]
SMALL = [(3, 1, 16, True, "relu", 2), (3, 4.5, 24, False, "relu", 2), (3, 3.67, 24, False, "relu", 1),
         (5, 4, 40, True, "hswish", 2), (5, 6, 40, True, "hswish", 1), (5, 6, 40, True, "hswish", 1),
         (5, 3, 48, True, "hswish", 1), (5, 3, 48, True, "hswish", 1),
         (5, 6, 96, True, "hswish", 2), (5, 6, 96, True, "hswish", 1), (5, 6, 96, True, "hswish", 1)]


def inverted_residual(in_channels, hidden, out_channels, kernel, use_se, act, stride, conv_type, variant):
    excite = SqueezeExcite(hidden, conv_type) if use_se else nn.Identity()
    if hidden == in_channels:  # no expansion: dw-BN-act-SE-pw-BN (both variants)
        layers = [*depthwise(hidden, kernel, stride), activation(act), excite]
    elif variant == "torchvision":  # pw-BN-act-dw-BN-act-SE-pw-BN: squeeze-excite after the activation
        layers = [*pointwise(in_channels, hidden, conv_type), activation(act),
                  *depthwise(hidden, kernel, stride), activation(act), excite]
    else:  # the authors' (d-li14's) pw-BN-act-dw-BN-SE-act-pw-BN: squeeze-excite before it
        layers = [*pointwise(in_channels, hidden, conv_type), activation(act),
                  *depthwise(hidden, kernel, stride), excite, activation(act)]
    layers += pointwise(hidden, out_channels, conv_type)
    return InvertedResidual(layers, use_residual=stride == 1 and in_channels == out_channels)


# The two block variants one --arch serves: the pretrained weights decide (their keys differ where
# squeeze-excite sits, utils/torchvision_weights.py), and our checkpoints record it ('variant').
VARIANTS = ("authors", "torchvision")


def _mobilenet_v3(blocks, last_channels, conv_type, num_classes, width_mult, variant):
    if variant not in VARIANTS:
        raise ValueError(f"unknown MobileNetV3 variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    width = lambda channels: make_divisible(channels * width_mult)
    in_channels = width(16)
    features = [nn.Sequential(*stem(3, in_channels, "hswish"))]
    for kernel, expansion, channels, use_se, act, stride in blocks:
        hidden = make_divisible(in_channels * expansion)
        features.append(inverted_residual(in_channels, hidden, width(channels), kernel, use_se, act,
                                          stride, conv_type, variant))
        in_channels = width(channels)
    head = nn.Sequential(*pointwise(in_channels, hidden, conv_type), activation("hswish"))
    last_channels = make_divisible(last_channels * width_mult) if width_mult > 1.0 else last_channels
    classifier = nn.Sequential(conv_type(hidden, last_channels), activation("hswish"), nn.Dropout(0.2),
                               conv_type(last_channels, num_classes))
    model = MobileNet(features, classifier, head=head)
    model.variant = variant
    if variant == "torchvision":  # torchvision's V3 BatchNorm: eps enters the function, momentum the fine-tune
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.eps, bn.momentum = 1e-3, 0.01
    return model


def mobilenet_v3_large(conv_type, num_classes=1000, width_mult=1.0, variant="authors"):
    return _mobilenet_v3(LARGE, 1280, conv_type, num_classes, width_mult, variant)


def mobilenet_v3_small(conv_type, num_classes=1000, width_mult=1.0, variant="authors"):
    return _mobilenet_v3(SMALL, 1024, conv_type, num_classes, width_mult, variant)
