"""ResNets: the authors' ResNet-50 layout, and their width-16 golden set (masks bit for bit, logits)."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import models
from conftest import ROOT
from utils.checkpoint import load_pretrained
from utils.pruning import masked_convs, prune_model
from utils.rearrange import apply_permutations_, original_order_state_dict, rearrangement_orders, rearranged_layers
from utils.report import sparsity_report

FIXTURES = ROOT / "tests" / "reference"


def fixture(name):
    return torch.load(FIXTURES / name, map_location="cpu", weights_only=True)


def authors_masks(variant):
    saved = fixture("resnet50_w16_N4.masks.pth")
    return {key: torch.from_numpy(np.unpackbits(bits.numpy())[:int(np.prod(saved["shapes"][key]))])
            .bool().view(saved["shapes"][key]) for key, bits in saved[variant].items()}


def golden_model():
    """Their ResNet-50 with stage widths 16/32/64/128 (our width_mult 0.25), their pretrained file."""
    model = models.get_model("resnet50", width_mult=0.25)
    load_pretrained(model, fixture("resnet50_w16.pretrained.pth"), "golden")
    return model.eval()


def test_resnet50_layout_equals_the_authors_key_for_key():
    layout = json.loads((FIXTURES / "resnet50.layout.json").read_text())
    model = models.get_model("resnet50")
    assert [[k, list(v.shape)] for k, v in model.state_dict().items()] == layout["state_dict"]
    assert [name for name, _ in masked_convs(model)] == [m["module"] for m in layout["masked_modules"]]
    assert rearranged_layers(model) == [m["module"] for m in layout["masked_modules"] if m["rearranged_by_authors"]]


@pytest.mark.parametrize("arch", ["resnet18", "resnet34", "resnet50"])
def test_resnets_have_torchvisions_keys_and_function_shape(arch):
    import torchvision
    ours = models.get_model(arch, num_classes=10)
    theirs = getattr(torchvision.models, arch)(weights=None, num_classes=10).state_dict()
    assert {k for k in ours.state_dict() if not k.endswith(".mask")} == set(theirs)
    assert ours(torch.zeros(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize("variant", ["plain", "rearrange"])
def test_golden_masks_and_logits_equal_the_authors(variant):
    io = fixture("resnet50_w16_N4.io.pth")
    model = golden_model()
    with torch.no_grad():
        dense = model(io["input"])
    assert torch.allclose(dense, io["dense_logits"], atol=1e-4)
    orders = rearrangement_orders(model) if variant == "rearrange" else None
    prune_model(model, 0.5, 4, full=True, orders=orders)
    state = model.state_dict()
    reference = authors_masks(variant)
    assert len(reference) == 52  # every masked conv (width 16: layer1.0 needs no downsample), fc included
    for key, mask in reference.items():  # every width here is divisible by 4: all layers bit for bit
        assert torch.equal(state[key].bool(), mask), key
    with torch.no_grad():
        logits = model(io["input"])
    expected = io[f"{variant}_logits"]
    assert torch.allclose(logits, expected, atol=1e-4)
    labels = expected.argmax(1)
    assert abs(F.cross_entropy(logits, labels).item() - F.cross_entropy(expected, labels).item()) < 1e-4
    assert abs(F.cross_entropy(dense, labels).item() - F.cross_entropy(io["dense_logits"], labels).item()) < 1e-4


def test_fc_keeps_rate_zero_without_full_and_kxk_blocks_span_the_whole_kernel():
    model = models.get_model("resnet18", num_classes=10, width_mult=0.25)
    prune_model(model, 0.5, 4)
    assert bool(model.fc.mask.all())
    conv = model.layer1[0].conv1  # 64 (the stem) → 16, 3×3
    mask = conv.mask.bool()
    assert mask.shape == (16, 64, 3, 3)
    assert torch.equal(mask, mask[:, :, :1, :1].expand_as(mask))          # whole k×k kernel per block
    blocks = mask[:, :, 0, 0].view(4, 4, 64)                               # (groups, N, C_in)
    assert torch.equal(blocks.all(1), blocks.any(1))                       # N consecutive out channels
    assert int((~blocks.any(1)).sum()) == 128                              # floor(256 · 0.5) blocks
    assert not bool((conv.weight[~mask] != 0).any())


@pytest.mark.parametrize("conv_type", ["BlockL1Conv", "BlockRandomConv", "UnstructureConv", "StructureConv",
                                       "DenseConv"])
def test_every_conv_type_on_a_3x3_conv_with_partial_blocks(conv_type):
    model = models.get_model("resnet18", conv_type=conv_type, num_classes=10, width_mult=0.25)
    prune_model(model, 0.5, 3, generator=torch.Generator().manual_seed(0))  # 16 % 3 != 0: 5 blocks of 3, 1 of 1
    mask = model.layer1[0].conv2.mask.bool()                                # (16, 16, 3, 3)
    kernels_whole = torch.equal(mask, mask[:, :, :1, :1].expand_as(mask))
    if conv_type == "UnstructureConv":
        assert int((~mask).sum()) == 16 * 16 * 9 // 2 and not kernels_whole
        return
    assert kernels_whole
    rows = mask[:, :, 0, 0]                                                 # (C_out, C_in)
    if conv_type == "DenseConv":
        assert bool(rows.all())
    elif conv_type == "StructureConv":
        assert int((~rows.any(1)).sum()) == 8 and torch.equal(rows.any(1), rows.all(1))  # whole filters
    else:
        full = rows[:15].view(5, 3, 16)
        assert torch.equal(full.all(1), full.any(1))                        # blocks of 3 rows
        pruned_blocks = int((~full.any(1)).sum()) + int((~rows[15]).sum())  # + the partial blocks of 1 row
        assert pruned_blocks == 6 * 16 // 2


def test_report_counts_kxk_multiply_adds():
    model = models.get_model("resnet18", num_classes=10, width_mult=0.25)
    prune_model(model, 0.5, 4)
    rows, totals = sparsity_report(model, 4, 32)
    # by hand: every conv C_out·C_in·k·k·H_out·W_out; at 32 px the stem gives 16², layer1 8², …
    expected = 64 * 3 * 49 * 16 ** 2
    spatial = {1: 8, 2: 4, 3: 2, 4: 1}
    for name, conv in model.named_modules():
        if isinstance(conv, torch.nn.Conv2d) and name.startswith("layer"):
            expected += conv.weight.numel() * spatial[int(name[5])] ** 2
    expected += model.fc.weight.numel()
    assert totals["macs"] == expected
    kept = sum(int(m.mask.count_nonzero()) * spatial[int(n[5])] ** 2 for n, m in masked_convs(model) if n != "fc")
    assert totals["macs_kept"] == 64 * 3 * 49 * 16 ** 2 + kept + model.fc.weight.numel()
    assert len(rows) == len(masked_convs(model))


def test_golden_rearranged_physically_keeps_the_authors_kept_weights_and_logits():
    io = fixture("resnet50_w16_N4.io.pth")
    model = golden_model()
    orders = rearrangement_orders(model)
    prune_model(model, 0.5, 4, full=True, orders=orders)
    permutations = apply_permutations_(model, orders)
    # moved: every bottleneck's conv1 and conv2; mask-only: downsample.0 and fc (their outputs are
    # shared with the residual sum / are the classes)
    assert set(permutations) == {name for name in orders if name.endswith(("conv1", "conv2"))}
    for name, conv in masked_convs(model):
        if name in permutations:
            keep = conv.mask.bool().flatten(2).all(-1).view(-1, 4, conv.in_channels)
            assert torch.equal(keep.all(1), keep.any(1)), name  # blocks are 4 consecutive rows
    restored = original_order_state_dict(model, permutations)
    for key, mask in authors_masks("rearrange").items():
        assert torch.equal(restored[key].bool(), mask), key
    with torch.no_grad():
        assert torch.allclose(model(io["input"]), io["rearrange_logits"], atol=1e-4)


def test_the_authors_resnet50_command_runs_unchanged(tiny_data, tmp_path):
    """Their format (a DataParallel checkpoint, `module.` keys, 4-D fc, no masks) and their flags."""
    from imagenet import get_args_parser, main
    dense = models.get_model("resnet50", num_classes=3).state_dict()
    path = tmp_path / "resnet50_authors.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in dense.items() if not k.endswith(".mask")}}, path)
    job = tmp_path / "job"
    main(get_args_parser().parse_args([
        "--arch", "resnet50", "--pretrained_model", str(path), "--N", "4", "--pr_target", "0.5", "--rearrange",
        "--conv_type", "BlockL1Conv", "--data_path", str(tiny_data), "--job_dir", str(job), "--num_epochs", "0",
        "--img_size", "32", "--workers", "0", "--val_images", "6"]))
    state = torch.load(job / "checkpoint" / "model_best.pt", map_location="cpu", weights_only=True)["state_dict"]
    assert bool(state["fc.mask"].all())                      # no --full: fc keeps rate 0 (theirs prunes it)
    assert abs(state["layer1.0.conv2.mask"].float().mean().item() - 0.5) < 1e-6
    assert "sparsity" in (job / "metrics.jsonl").read_text()
