import json
import os
import sys
from pathlib import Path

import pytest
import torch

# Test tensors are tiny: one thread is faster than two (and keeps subprocesses from oversubscribing).
os.environ.setdefault("OMP_NUM_THREADS", "1")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The reference data made with the authors' code lives in shared/ beside the checkout.
REFERENCE = ROOT.parent / "shared" / "reference"
ARCHS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large"]


def reference(name):
    path = REFERENCE / name
    assert path.exists(), f"reference data missing: {path} (shared/ must sit beside the checkout)"
    return path


def layout(arch):
    return json.loads(reference(f"{arch}.layout.json").read_text())


def load_reference(name):
    return torch.load(reference(name), map_location="cpu", weights_only=True)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    from data.synthetic import make_image_folder
    return make_image_folder(tmp_path_factory.mktemp("tiny"), num_classes=3, train_per_class=8, val_per_class=4)


@pytest.fixture(scope="session")
def golden_pretrained():
    return load_reference("mobilenet_v2_N4_rearrange.pretrained.pth")
