"""ResNet-18/34/50 with torchvision's module names (so torchvision's and the authors' files load).

Every conv but the 7×7 stem is prunable (a masked conv without bias, as torchvision's and the
authors'); `fc` is a prunable 1×1 conv with bias (4-D weight, as in the authors' checkpoints) after
adaptive average pooling (the authors' AvgPool2d(7) gives the same result at 224 px, and only there).
One residual block class serves both block kinds: a block is a list of (kernel size, width factor)
rows, conv_i-bn_i-relu each, the last without its ReLU before the residual add.
"""
from torch import nn

# (kernel size, stride applies, output width as a multiple of the stage width) per conv of a block.
BASIC = ((3, True, 1), (3, False, 1))
BOTTLENECK = ((1, False, 1), (3, True, 1), (1, False, 4))  # stride on the 3×3, as torchvision (v1.5)
# blocks per stage
DEPTHS = {"resnet18": (BASIC, (2, 2, 2, 2)), "resnet34": (BASIC, (3, 4, 6, 3)),
          "resnet50": (BOTTLENECK, (3, 4, 6, 3))}
STAGE_WIDTHS = (64, 128, 256, 512)


class ResidualBlock(nn.Module):
    """relu(branch(x) + shortcut(x)); the branch is conv1-bn1-relu … convK-bnK, the shortcut x or
    `downsample` (1×1 conv with the stride, BN) when the shape changes."""

    def __init__(self, rows, in_channels, width, stride, conv_type):
        super().__init__()
        self.depth = len(rows)
        channels = in_channels
        for i, (kernel, strided, factor) in enumerate(rows, start=1):
            out = width * factor
            self.add_module(f"conv{i}", conv_type(channels, out, kernel, stride if strided else 1,
                                                  kernel // 2, bias=False))
            self.add_module(f"bn{i}", nn.BatchNorm2d(out))
            channels = out
        self.relu = nn.ReLU(inplace=True)
        self.out_channels = channels
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(conv_type(in_channels, channels, 1, stride, 0, bias=False),
                                            nn.BatchNorm2d(channels))

    def forward(self, x):
        out = x
        for i in range(1, self.depth + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.depth:
                out = self.relu(out)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class ResNet(nn.Module):
    def __init__(self, rows, depths, conv_type, num_classes=1000, width_mult=1.0):
        super().__init__()
        # The stem keeps 64 channels at every width (as the authors' narrow golden model).
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = 64
        for stage, (blocks, width) in enumerate(zip(depths, STAGE_WIDTHS), start=1):
            width = max(1, int(width * width_mult))
            layer = []
            for i in range(blocks):
                layer.append(ResidualBlock(rows, channels, width, 2 if i == 0 and stage > 1 else 1, conv_type))
                channels = layer[-1].out_channels
            self.add_module(f"layer{stage}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = conv_type(channels, num_classes, bias=True)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x)).flatten(1)


def _builder(arch):
    rows, depths = DEPTHS[arch]

    def build(conv_type, num_classes=1000, width_mult=1.0):
        return ResNet(rows, depths, conv_type, num_classes, width_mult)
    build.__name__ = arch
    return build


resnet18, resnet34, resnet50 = (_builder(arch) for arch in ("resnet18", "resnet34", "resnet50"))
