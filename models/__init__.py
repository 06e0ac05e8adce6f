"""Model registry: `get_model(arch, conv_type=..., num_classes=...)` and `list_models()`."""
from utils.pruning import CONV_TYPES

from .mobilenet_v1 import mobilenet_v1
from .mobilenet_v2 import mobilenet_v2
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .resnet import resnet18, resnet34, resnet50

_MODELS = {fn.__name__: fn for fn in (mobilenet_v1, mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large,
                                      resnet18, resnet34, resnet50)}


def list_models():
    return sorted(_MODELS)


def get_model(arch, conv_type="BlockL1Conv", num_classes=1000, width_mult=1.0, variant="authors"):
    """`variant` "torchvision" builds the block order torchvision's weights need where it differs
    from the authors' (MobileNetV3's squeeze-excite); the other archs have one block order."""
    if arch not in _MODELS:
        raise ValueError(f"unknown --arch {arch!r}; expected one of {', '.join(list_models())}")
    if conv_type not in CONV_TYPES:
        raise ValueError(f"unknown --conv_type {conv_type!r}; expected one of {', '.join(CONV_TYPES)}")
    extra = {"variant": variant} if arch.startswith("mobilenet_v3") else {}
    return _MODELS[arch](CONV_TYPES[conv_type], num_classes=num_classes, width_mult=width_mult, **extra)
