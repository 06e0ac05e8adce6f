"""MobileNetV1 in the MIT-Han-Lab AMC layout: `conv1`, `features.i` = dw-BN-ReLU-pw-BN-ReLU."""
from torch import nn

from .blocks import MobileNet, activation, depthwise, make_divisible, pointwise, stem

# (output channels, stride) of each depthwise-separable block.
BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


def mobilenet_v1(conv_type, num_classes=1000, width_mult=1.0):
    width = lambda channels: make_divisible(channels * width_mult)
    in_channels = width(32)
    features = [nn.Sequential(*stem(3, in_channels, "relu"))]
    for out_channels, stride in BLOCKS:
        out_channels = width(out_channels)
        features.append(nn.Sequential(*depthwise(in_channels, 3, stride), activation("relu"),
                                      *pointwise(in_channels, out_channels, conv_type),
                                      activation("relu")))
        in_channels = out_channels
    classifier = nn.Sequential(conv_type(in_channels, num_classes))
    return MobileNet(features, classifier, stem_name="conv1")
