"""MobileNetV2 in the tonylins/pytorch-mobilenet-v2 layout: `features.0..18`, ReLU6."""
from torch import nn

from .blocks import InvertedResidual, MobileNet, activation, depthwise, make_divisible, pointwise, stem

# (expansion t, output channels c, repeats n, first stride s), as in the paper's Table 2.
STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
          (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def inverted_residual(in_channels, out_channels, stride, expansion, conv_type):
    hidden = in_channels * expansion
    expand = [*pointwise(in_channels, hidden, conv_type), activation("relu6")] if expansion != 1 else []
    layers = [*expand, *depthwise(hidden, 3, stride), activation("relu6"),
              *pointwise(hidden, out_channels, conv_type)]
    return InvertedResidual(layers, use_residual=stride == 1 and in_channels == out_channels)


def mobilenet_v2(conv_type, num_classes=1000, width_mult=1.0):
    width = lambda channels: make_divisible(channels * width_mult)
    in_channels = width(32)
    features = [nn.Sequential(*stem(3, in_channels, "relu6"))]
    for expansion, channels, repeats, first_stride in STAGES:
        for i in range(repeats):
            stride = first_stride if i == 0 else 1
            features.append(inverted_residual(in_channels, width(channels), stride, expansion, conv_type))
            in_channels = width(channels)
    last_channels = width(1280)
    features.append(nn.Sequential(*pointwise(in_channels, last_channels, conv_type), activation("relu6")))
    # Dropout(0) is kept only so that the classifier conv is `classifier.1`, as in their checkpoints.
    classifier = nn.Sequential(nn.Dropout(0.0), conv_type(last_channels, num_classes))
    return MobileNet(features, classifier)
