"""Atomic saves, strict loading, and every pretrained format we accept."""
import pytest
import torch
import torchvision

import models
from utils.checkpoint import (CheckpointError, load_pretrained, load_pruned, num_classes_in, read_checkpoint,
                              save_atomic)
from utils.pruning import masked_convs, prune_model


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def dense_upstream_state(model, linear_keys, drop_biases=True):
    """A dense state_dict as upstream code saves it: no masks, no prunable biases, Linear weights 2-D."""
    masked = {f"{name}.{suffix}" for name, _ in masked_convs(model) for suffix in ("mask", "bias")}
    state = {k: v.clone() for k, v in model.state_dict().items()
             if not k.endswith(".mask") and not (drop_biases and k in masked)}
    for key in linear_keys:
        state[key] = state[key].flatten(1)
    return state


def randomised(arch, **kwargs):
    model = models.get_model(arch, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model


def test_state_dict_round_trip_into_a_fresh_model(tmp_path):
    model = randomised("mobilenet_v2", width_mult=0.25, num_classes=5)
    prune_model(model, 0.5, 4)
    save_atomic({"state_dict": model.state_dict()}, tmp_path / "ck.pt")
    fresh = models.get_model("mobilenet_v2", width_mult=0.25, num_classes=5)
    load_pruned(fresh, read_checkpoint(tmp_path / "ck.pt", "--evaluate"), "--evaluate")
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(outputs(model, x), outputs(fresh, x))
    for (_, a), (_, b) in zip(masked_convs(model), masked_convs(fresh)):
        assert torch.equal(a.mask, b.mask)


@pytest.mark.parametrize("arch,linear_keys,wrap", [
    ("mobilenet_v2", ["classifier.1.weight"], False),                 # V2: raw, 2-D classifier
    ("mobilenet_v1", ["classifier.0.weight"], True),                  # V1: {'state_dict': ...}
    ("mobilenet_v3_small", ["features.1.conv.3.fc.0.weight", "features.1.conv.3.fc.2.weight",
                            "classifier.0.weight", "classifier.3.weight"], False),  # V3: SE + classifier 2-D
])
def test_authors_dense_formats_load(arch, linear_keys, wrap):
    source = randomised(arch, width_mult=0.5, num_classes=6)
    state = dense_upstream_state(source, linear_keys)
    checkpoint = {"state_dict": state} if wrap else state
    target = models.get_model(arch, width_mult=0.5, num_classes=6)
    assert num_classes_in(checkpoint, "x") == 6
    load_pretrained(target, checkpoint, "--pretrained_model x")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(outputs(source, x), outputs(target, x), atol=1e-6)


def test_torchvision_mobilenet_v2_maps_onto_the_authors_layout():
    tv = torchvision.models.mobilenet_v2(weights=None, num_classes=10)
    with torch.no_grad():
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    ours = models.get_model("mobilenet_v2", num_classes=10)
    load_pretrained(ours, tv.state_dict(), "--pretrained_model tv.pth")
    x = torch.randn(2, 3, 64, 64)
    assert torch.allclose(outputs(tv, x), outputs(ours, x), atol=1e-5)


def test_mismatched_keys_are_named():
    source = models.get_model("mobilenet_v1", width_mult=0.25)
    state = dense_upstream_state(source, [])
    del state["features.0.1.running_var"]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"--pretrained_model p\.pth: keys do not fit.*features\.0\.1\.running_var"
                                              r".*extra\.weight"):
        load_pretrained(models.get_model("mobilenet_v1", width_mult=0.25), state, "--pretrained_model p.pth")
    with pytest.raises(CheckpointError, match="shapes do not fit"):
        load_pretrained(models.get_model("mobilenet_v1", width_mult=0.5), dense_upstream_state(source, []), "p")


def test_pruned_loading_is_strict_about_masks():
    model = models.get_model("mobilenet_v2", width_mult=0.25)
    state = dense_upstream_state(model, [], drop_biases=False)
    with pytest.raises(CheckpointError, match="missing.*mask"):
        load_pruned(models.get_model("mobilenet_v2", width_mult=0.25), state, "--evaluate e.pt")


def test_unreadable_files_get_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match="--evaluate .*nope.pt: no such file"):
        read_checkpoint(tmp_path / "nope.pt", "--evaluate")
    good = tmp_path / "good.pt"
    save_atomic({"state_dict": {"a": torch.zeros(100)}}, good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable PyTorch checkpoint"):
        read_checkpoint(truncated, "--pretrained_model")
    with pytest.raises(CheckpointError, match="no state_dict"):
        load_pretrained(models.get_model("mobilenet_v2"), {"epoch": 3}, "--pretrained_model x")


def test_atomic_save_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "model_last.pt"
    save_atomic({"epoch": 1}, path)

    def full_disk(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space"):
        save_atomic({"epoch": 2}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model_last.pt"]
