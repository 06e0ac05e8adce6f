"""Checkpoints: atomic saves, and loading the authors' and torchvision's formats into our layout."""
import os
import pickle
import re
import tempfile
from pathlib import Path

import torch

from utils import torchvision_weights


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: the message names the file and what is wrong."""


def save_atomic(obj, path):
    """Write to a temporary file in the same folder, fsync, then rename over `path`.

    A crash (or kill -9) mid-save leaves the previous file intact; a failed write (disk full)
    removes the temporary file and re-raises.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plain_args(args):
    """vars(args) with every value a weights-only load accepts: a Path (or any other object) becomes
    its string, so that saving never writes a checkpoint that loading would refuse."""
    def plain(value):
        if isinstance(value, (list, tuple)):
            return type(value)(plain(v) for v in value)
        return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)
    return {key: plain(value) for key, value in vars(args).items()}


def read_checkpoint(path, flag):
    """Load `path` weights-only, with a one-line error naming `flag` and the file when it is missing,
    unreadable, or asks for anything beyond tensors, numbers, strings and containers.

    The weights-only unpickler never calls what a pickle names, so a hostile file (an `os.system`
    in `__reduce__`) is refused before anything in it runs. No option turns this off: our own
    checkpoints and the authors' hold only what it accepts.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "no such file"
        raise CheckpointError(f"{flag} {path}: {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _REFUSED_GLOBAL.search(str(error))
        if refused:
            raise CheckpointError(f"{flag} {path}: refused, it asks to load {refused.group(1)} (only tensors, "
                                  "numbers, strings, lists and dicts are loaded; nothing in it was run)") from None
        raise CheckpointError(f"{flag} {path}: not a readable PyTorch checkpoint ({_first_line(error)})") from None
    except Exception as error:  # truncated zip, garbage, ...
        raise CheckpointError(f"{flag} {path}: not a readable PyTorch checkpoint ({_first_line(error)})") from None


# How torch's weights-only unpickler names what it refused ("GLOBAL posix.system", "Unsupported global:
# GLOBAL numpy._core.multiarray._reconstruct"); the class or function is the file's own choice.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


# What an --evaluate checkpoint fixes: the model it holds. What a --resume checkpoint fixes: the model
# and its masks, and what sets the data order and the steps per epoch (a mid-epoch checkpoint counts
# steps into its epoch; the schedule and the optimizer state are per step). Every other flag may
# change on --resume (README, "Resuming").
EVALUATE_FIXED = ("arch", "conv_type")
RESUME_FIXED = ("arch", "conv_type", "N", "pr_target", "full", "rearrange", "optimizer", "train_batch_size",
                "train_images", "seed")


def recorded_flags(checkpoint):
    """The command-line values one of our checkpoints records ({} for the authors' formats)."""
    if not isinstance(checkpoint, dict):
        return {}
    recorded = dict(checkpoint["args"]) if isinstance(checkpoint.get("args"), dict) else {}
    recorded.update({k: checkpoint[k] for k in ("arch", "conv_type", "N", "pr_target") if k in checkpoint})
    return recorded


def adopt_recorded_flags(args, given, checkpoint, flags, source):
    """Set each of `flags` that the checkpoint records and the command does not give (`given`: the
    flags the command names) to the checkpoint's value, so that `--resume` alone rebuilds the
    recorded model; a flag given with another value is a CheckpointError naming both."""
    recorded = recorded_flags(checkpoint)
    for flag in flags:
        if flag not in recorded or getattr(args, flag) == recorded[flag]:
            continue
        if flag in given:
            raise CheckpointError(f"{source}: saved with {_as_flag(flag, recorded[flag])}, but the command gives "
                                  f"{_as_flag(flag, getattr(args, flag))} (cannot change here; omit it to use the saved one)")
        setattr(args, flag, recorded[flag])


def _as_flag(flag, value):
    if isinstance(value, bool):
        return f"--{flag}" if value else f"no --{flag}"
    return f"--{flag} {value}"


def state_dict_of(checkpoint):
    """The state_dict inside any of the formats: raw, {'state_dict': ...}, {'model': ...}; no `module.`."""
    if isinstance(checkpoint, dict):
        for key in ("state_dict", "model"):
            if isinstance(checkpoint.get(key), dict):
                checkpoint = checkpoint[key]
                break
    if not isinstance(checkpoint, dict) or not all(torch.is_tensor(v) for v in checkpoint.values()):
        raise CheckpointError("holds no state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


def to_model_layout(state, model):
    """Map a dense pretrained state_dict onto `model`'s keys and shapes.

    Handles torchvision's names (utils/torchvision_weights.py) and 2-D weights (nn.Linear in
    torchvision's and the upstream models) for what are 1×1 convs here.
    """
    state = torchvision_weights.to_our_names(state)
    target = model.state_dict()
    converted = {}
    for key, value in state.items():
        expected = target.get(key)
        if expected is not None and value.dim() == 2 and expected.dim() == 4 and expected.shape[2:] == (1, 1):
            value = value.view(*value.shape, 1, 1)
        converted[key] = value
    return converted


def _optional_key(key, model_keys):
    """Keys a dense pretrained file may lack: masks, and the zero biases of the prunable convs."""
    if key.endswith(".mask"):
        return True
    return key.endswith(".bias") and key[: -len("bias")] + "mask" in model_keys


def load_pretrained(model, checkpoint, source):
    """Load dense weights; any missing or unexpected key beyond the optional ones is an error.

    `source` ("--pretrained_model PATH") starts every error message.
    """
    state = to_model_layout(_state_dict(checkpoint, source), model)
    model_keys = model.state_dict().keys()
    missing = [k for k in model_keys if k not in state and not _optional_key(k, model_keys)]
    _check_fits(source, state, model, missing)
    model.load_state_dict(state, strict=False)


def load_pruned(model, checkpoint, source):
    """Load a pruned checkpoint (the authors' or ours) strictly: every key, masks included."""
    state = to_model_layout(_state_dict(checkpoint, source), model)
    _check_fits(source, state, model, [k for k in model.state_dict() if k not in state])
    model.load_state_dict(state, strict=True)


def num_classes_in(checkpoint, source):
    """Class count stored in a checkpoint: rows of its last classifier weight (ResNets: `fc`)."""
    state = _state_dict(checkpoint, source)
    weights = [k for k in state if k.startswith(("classifier.", "fc.")) and k.endswith(".weight")]
    if not weights:
        raise CheckpointError(f"{source}: no classifier or fc weight, so not a MobileNet or ResNet checkpoint")
    return state[weights[-1]].shape[0]


def variant_in(checkpoint):
    """The model variant a checkpoint needs: ours record it; a dense file's keys tell it
    (torchvision's MobileNetV3 needs our "torchvision" block order, see models/mobilenet_v3.py)."""
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("variant"), str):
        return checkpoint["variant"]
    try:
        return torchvision_weights.variant_of(state_dict_of(checkpoint))
    except CheckpointError:
        return "authors"  # not a state_dict: loading it will say so


def _state_dict(checkpoint, source):
    try:
        return state_dict_of(checkpoint)
    except CheckpointError as error:
        raise CheckpointError(f"{source}: {error}") from None


def _check_fits(source, state, model, missing):
    target = model.state_dict()
    unexpected = [k for k in state if k not in target]
    if missing or unexpected:
        parts = [f"{len(missing)} missing (first: {', '.join(missing[:3])})" if missing else "",
                 f"{len(unexpected)} unexpected (first: {', '.join(unexpected[:3])})" if unexpected else ""]
        raise CheckpointError(f"{source}: keys do not fit this --arch: " + "; ".join(p for p in parts if p))
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(target[k].shape)}" for k, v in state.items()
             if v.shape != target[k].shape]
    if wrong:
        raise CheckpointError(f"{source}: shapes do not fit this --arch (first: {'; '.join(wrong[:3])})")
