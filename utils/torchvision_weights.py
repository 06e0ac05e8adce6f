"""torchvision's ImageNet weights for our models: key renaming, the V3 block variant, fetching.

The same tensors, other names: torchvision's MobileNetV2 and V3 nest Conv-BN-act triples where
the authors' layouts number one flat Sequential (activations included), and torchvision's V3
puts squeeze-excite after the depthwise activation (the authors' before it), so its files need
our V3 `variant="torchvision"` (see models/mobilenet_v3.py). torchvision's ResNets have our
names already. Their 2-D Linear weights become our 1×1 convs in `checkpoint.to_model_layout`.
"""
import re

ARCHS = ("mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34", "resnet50")
PREFIX = "torchvision:"

# MobileNetV2: prefixes inside `features.i.`, block 1 (no expansion) and the expanding blocks.
_V2 = {
    "expanding": [("conv.0.0.", "conv.0."), ("conv.0.1.", "conv.1."), ("conv.1.0.", "conv.3."),
                  ("conv.1.1.", "conv.4."), ("conv.2.", "conv.6."), ("conv.3.", "conv.7.")],
    "first": [("conv.0.0.", "conv.0."), ("conv.0.1.", "conv.1."), ("conv.1.", "conv.3."), ("conv.2.", "conv.4.")],
}
_V3_BLOCK = re.compile(r"features\.(\d+)\.block\.(\d+)\.(.*)")
_V3_LAST = re.compile(r"features\.(\d+)\.([01])\.(.*)")


def is_torchvision_v3(state):
    return any(_V3_BLOCK.fullmatch(key) for key in state)


def variant_of(state):
    """The model variant a dense state_dict needs: 'torchvision' for torchvision's V3 keys."""
    return "torchvision" if is_torchvision_v3(state) else "authors"


def _rename_v2(state):
    renamed = {}
    for key, value in state.items():
        parts = key.split(".", 2)  # features, i, rest
        if parts[0] == "features" and len(parts) == 3:
            for old, new in _V2["first" if parts[1] == "1" else "expanding"]:
                if parts[2].startswith(old):
                    key = f"features.{parts[1]}.{new}{parts[2][len(old):]}"
                    break
        renamed[key] = value
    return renamed


def _v3_block_names(state, index):
    """{torchvision sub-module: ours} of block `features.index` (see inverted_residual)."""
    expanding = state[f"features.{index}.block.0.0.weight"].shape[1] != 1  # block.0 is dw otherwise
    se = f"features.{index}.block.{2 if expanding else 1}.fc1.weight" in state
    if expanding:   # ours: pw 0, bn 1, act 2, dw 3, bn 4, act 5, SE 6, pw 7, bn 8
        names = {"0.0": "0", "0.1": "1", "1.0": "3", "1.1": "4"}
        se_slot, project, ours_se, ours_project = "2", "3" if se else "2", "6", ("7", "8")
    else:           # ours: dw 0, bn 1, act 2, SE 3, pw 4, bn 5
        names = {"0.0": "0", "0.1": "1"}
        se_slot, project, ours_se, ours_project = "1", "2" if se else "1", "3", ("4", "5")
    if se:
        names.update({f"{se_slot}.fc1": f"{ours_se}.fc.0", f"{se_slot}.fc2": f"{ours_se}.fc.2"})
    names.update({f"{project}.0": ours_project[0], f"{project}.1": ours_project[1]})
    return names


def _rename_v3(state):
    last = max(int(_V3_LAST.fullmatch(k).group(1)) for k in state if _V3_LAST.fullmatch(k))
    blocks, renamed = {}, {}
    for key, value in state.items():
        block, tail = _V3_BLOCK.fullmatch(key), _V3_LAST.fullmatch(key)
        if block:
            index, rest = int(block.group(1)), f"{block.group(2)}.{block.group(3)}"
            names = blocks.setdefault(index, _v3_block_names(state, index))
            theirs = next(t for t in names if rest.startswith(t + "."))
            key = f"features.{index}.conv.{names[theirs]}{rest[len(theirs):]}"
        elif tail and int(tail.group(1)) == last:  # the last 1×1 conv + BN: our `conv` head
            key = f"conv.{tail.group(2)}.{tail.group(3)}"
        renamed[key] = value
    return renamed


def to_our_names(state):
    """torchvision's MobileNetV2/V3 keys renamed to ours; any other state_dict unchanged."""
    if "features.1.conv.0.0.weight" in state:
        return _rename_v2(state)
    if is_torchvision_v3(state):
        return _rename_v3(state)
    return state


def parse_spec(spec, arch):
    """'torchvision:IMAGENET1K_V1' → torchvision's weights enum member for `arch`.

    Offline: checks the arch and the weight name without downloading anything. Raises ValueError
    with one line naming the flag and what was expected.
    """
    import torchvision

    name = spec[len(PREFIX):]
    if arch not in ARCHS:
        raise ValueError(f"--pretrained_model {spec}: torchvision has no weights for --arch {arch} "
                         f"(it has {', '.join(ARCHS)})")
    weights = torchvision.models.get_model_weights(arch)
    if name not in weights.__members__:
        raise ValueError(f"--pretrained_model {spec}: expected one of "
                         f"{', '.join(PREFIX + n for n in weights.__members__)} for --arch {arch}")
    return weights[name]


def fetch(spec, arch):
    """The state_dict of torchvision's weights `spec` for `arch` (downloads into torch's hub cache;
    needs internet the first time). weights_only: torch.hub would otherwise unpickle anything;
    check_hash: the file's name carries the prefix of its SHA-256."""
    return parse_spec(spec, arch).get_state_dict(progress=True, check_hash=True, weights_only=True)
