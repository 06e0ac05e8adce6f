import contextlib
import json
from collections import OrderedDict
import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

# Test tensors are tiny: one thread is faster than two (and keeps subprocesses from oversubscribing).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Data made with the authors' code, shrunk where that loses nothing (tests/reference/README.md).
REFERENCE = ROOT / "tests" / "reference"
PACKED_MASKS = "mobilenet_v2_N4.masks.pth"
ARCHS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]


@contextlib.contextmanager
def torch_threads(count):
    """torch's intra-op thread count is `count` inside the block and what it was after."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def reference(name):
    path = REFERENCE / name
    assert path.exists(), f"reference data missing: {path}"
    return path


def layout(arch):
    return json.loads(reference(f"{arch}.layout.json").read_text())


def load_reference(name):
    return torch.load(reference(name), map_location="cpu", weights_only=True)


def _unpack(packed):
    """{key: (shape, bits)} → {key: bool tensor}, the inverse of shrink.py's pack."""
    return {key: torch.from_numpy(np.unpackbits(bits.numpy(), count=math.prod(shape)).astype(bool)).view(shape)
            for key, (shape, bits) in packed.items()}


def authors_pruned_checkpoint(folder=REFERENCE):
    """The authors' mobilenet_v2_N4_rearrange.pruned.pth, bit for bit: their pruning keeps the dense
    weights (the pretrained file's, classifier as a 1×1 conv) beside float masks."""
    packed = torch.load(folder / PACKED_MASKS, weights_only=True)
    state = torch.load(folder / "mobilenet_v2_N4_rearrange.pretrained.pth", weights_only=True)
    state = {k: v.view(*v.shape, 1, 1) if v.dim() == 2 else v for k, v in state.items()}
    state.update({k: mask.float() for k, mask in _unpack(packed["rearrange"]).items()})
    return {"state_dict": OrderedDict((k, state[k]) for k in packed["pruned_keys"]), **packed["pruned_meta"]}


def authors_plain_masks_of(folder=REFERENCE):
    """The authors' mobilenet_v2_N4_plain.masks.pth: masks without --rearrange, and the logits."""
    packed = torch.load(folder / PACKED_MASKS, weights_only=True)
    return {"masks": _unpack(packed["plain"]), "logits": packed["plain_logits"], **packed["plain_meta"]}


@pytest.fixture(scope="session")
def authors_pruned(tmp_path_factory):
    """Path of the authors' pruned golden MobileNetV2 checkpoint (rebuilt: see shrink.py)."""
    path = tmp_path_factory.mktemp("reference") / "mobilenet_v2_N4_rearrange.pruned.pth"
    torch.save(authors_pruned_checkpoint(), path)
    return path


@pytest.fixture(scope="session")
def authors_plain_masks():
    return authors_plain_masks_of()


# Child processes that must see no GPU (exact CPU resume, gloo ranks), even on a CUDA machine.
CPU_ONLY_ENV = {"CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture
def cpu_only(monkeypatch):
    """The CPU-only situation in this process, also where CUDA exists (checked on CUDA machines too)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from data.synthetic import make_image_folder
    return make_image_folder(tmp_path_factory.mktemp("tiny"), num_classes=3, train_per_class=8, val_per_class=4)


@pytest.fixture(scope="session")
def golden_pretrained():
    return load_reference("mobilenet_v2_N4_rearrange.pretrained.pth")
