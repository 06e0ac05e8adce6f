"""Filter rearrangement: the authors' layer set, function preservation, block contiguity, and the
reference V2 golden set (N=4, p=0.5, --rearrange). Run from the repository root: python -m pytest."""
import pytest
import torch

from conftest import authors_pruned_checkpoint, layout, load_reference
from models import get_model, list_models
from utils.pruning import CONV_TYPES, masked_convs, prune_model
from utils.rearrange import (apply_permutations_, channel_chains, original_order_state_dict,
                             rearranged_layers, rearrangement_orders)

def randomize_(model, generator):
    """Random biases and BN affine/statistics (conv weights keep their random init), so that a
    wrongly ordered channel shows; scaled so the logits stay O(1) and float32 noise below 1e-5."""
    def rand(tensor, low, high):
        tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)

    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.dim() == 1 and name.endswith(("weight", "running_var")):
                rand(tensor, 0.5, 1.5)                               # BN scale and variance
            elif name.endswith(("bias", "running_mean")):
                rand(tensor, -0.2, 0.2)
    return model.eval()


def small_model(arch, conv_type="BlockL1Conv", seed=0):
    generator = torch.Generator().manual_seed(seed)
    return randomize_(get_model(arch, conv_type, num_classes=10, width_mult=0.25), generator), generator


def logits(model, seed=1):
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model.eval()(x)


def assert_blocks_contiguous(mask, N):
    """Each group of N consecutive output channels (the last may be shorter) is, at every input
    channel, all kept or all pruned."""
    keep = mask.bool().flatten(2).all(-1)                          # (C_out, C_in); kernels are whole
    for start in range(0, keep.shape[0], N):
        group = keep[start:start + N]                               # (≤N, C_in)
        assert (group == group[:1]).all(), f"block at rows {start}..{start + N - 1} is split"


@pytest.mark.parametrize("arch", [arch for arch in list_models() if arch not in ("resnet18", "resnet34")])
def test_rearranged_set_is_the_authors(arch):  # (the authors have no ResNet-18/34)
    expected = [m["module"] for m in layout(arch)["masked_modules"] if m["rearranged_by_authors"]]
    assert rearranged_layers(get_model(arch)) == expected
    narrow = get_model(arch, width_mult=0.25)  # (a narrow ResNet-50's first block needs no downsample)
    names = {name for name, _ in masked_convs(narrow)}
    assert list(rearrangement_orders(narrow)) == [name for name in expected if name in names]


@pytest.mark.parametrize("arch", list_models())
def test_permutation_alone_changes_no_output(arch):
    model, generator = small_model(arch)
    before = logits(model)
    modules = dict(model.named_modules())
    # Random permutations are a harder test than the ℓ1 orders (which may be near-identity).
    orders = {name: torch.randperm(modules[name].out_channels, generator=generator)
              for name in rearranged_layers(model)}
    applied = apply_permutations_(model, orders)
    assert applied and all(not chains.to_output for name, chains in channel_chains(model).items()
                           if name in applied)
    torch.testing.assert_close(logits(model), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", list_models())
@pytest.mark.parametrize("N", [4, 16])
def test_pruned_then_permuted_keeps_function_and_blocks_are_contiguous(arch, N):
    model, _ = small_model(arch)
    orders = rearrangement_orders(model)
    prune_model(model, 0.5, N, full=True, orders=orders)
    masks = {name: conv.mask.clone() for name, conv in masked_convs(model)}
    before = logits(model)

    applied = apply_permutations_(model, orders)

    torch.testing.assert_close(logits(model), before, atol=1e-5, rtol=0)
    # The classes are never reordered; outputs that join a residual sum (ResNets) are mask-only.
    shared = [name for name, chain in channel_chains(model).items() if not chain.private]
    assert set(applied) == set(orders) - set(shared) and applied
    for name, conv in masked_convs(model):
        if name in applied:
            assert_blocks_contiguous(conv.mask, N)
    # Rows and (for V1, whose consumers are rearranged too) columns moved; nothing else changed.
    restored = original_order_state_dict(model, applied)
    for name in masks:
        assert torch.equal(restored[f"{name}.mask"], masks[name]), name


@pytest.mark.parametrize("conv_type", list(CONV_TYPES))
def test_every_conv_type_works_and_only_l1_blocks_move(conv_type):
    model, generator = small_model("mobilenet_v3_small", conv_type)
    orders = rearrangement_orders(model)
    prune_model(model, 0.5, 4, orders=orders, generator=generator)
    before = logits(model)
    applied = apply_permutations_(model, orders)
    torch.testing.assert_close(logits(model), before, atol=1e-5, rtol=0)
    # Only ℓ1 blocks are formed over the order; the others are left where they are.
    assert bool(applied) == CONV_TYPES[conv_type].uses_order


def test_original_order_state_dict_undoes_the_permutation():
    model, generator = small_model("mobilenet_v3_large")
    original = {k: v.clone() for k, v in model.state_dict().items()}
    modules = dict(model.named_modules())
    orders = {name: torch.randperm(modules[name].out_channels, generator=generator)
              for name in rearranged_layers(model)}
    permutations = apply_permutations_(model, orders)
    assert any(not torch.equal(v, original[k]) for k, v in model.state_dict().items())
    restored = original_order_state_dict(model, permutations)
    assert restored.keys() == original.keys()
    for key, value in restored.items():
        assert torch.equal(value, original[key]), key


def test_reference_v2_golden_set():
    state = load_reference("mobilenet_v2_N4_rearrange.pretrained.pth")
    state["classifier.1.weight"] = state["classifier.1.weight"].view(1000, 1280, 1, 1)
    io = load_reference("mobilenet_v2_N4_rearrange.io.pth")
    theirs = authors_pruned_checkpoint()["state_dict"]
    assert (io["N"], io["pr_target"], io["rearrange"], io["full"]) == (4, 0.5, True, False)
    model = get_model("mobilenet_v2")
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(key.endswith(".mask") for key in missing)

    orders = rearrangement_orders(model)
    prune_model(model, 0.5, 4, orders=orders)
    permutations = apply_permutations_(model, orders)

    torch.testing.assert_close(logits_of(model, io["input"]), io["logits"], atol=1e-4, rtol=0)
    assert len(permutations) == 17  # every rearranged layer; the logits conv is not among them here
    original = original_order_state_dict(model, permutations)
    for name, conv in masked_convs(model):
        their_mask = theirs[f"{name}.mask"].bool()
        their_kept = theirs[f"{name}.weight"][their_mask]
        ours = conv.weight * conv.mask
        assert torch.equal(ours[ours != 0].sort().values, their_kept[their_kept != 0].sort().values), name
        if name in permutations:
            assert_blocks_contiguous(conv.mask, 4)
        # Mapped back to the original channel order, ours is theirs bit for bit (zeros aside).
        assert torch.equal(original[f"{name}.mask"].bool(), their_mask), name
        assert torch.equal(original[f"{name}.weight"], theirs[f"{name}.weight"] * their_mask), name


def logits_of(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_plot_mask_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    from experiment.plot_mask import get_args_parser, main

    out = tmp_path / "mask.png"
    main(get_args_parser().parse_args(["--arch", "mobilenet_v2", "--layer", "features.2.conv.0", "--N", "4",
                                       "--pr_target", "0.5", "--width_mult", "0.25", "--out", str(out)]))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sync_batchnorm_is_rearranged_like_batchnorm():
    """--sync_bn converts BatchNorm2d to SyncBatchNorm in place, before pruning when there is a
    pre-training phase: the same layers must be rearranged, with the same permutations."""
    import copy
    plain, _ = small_model("mobilenet_v2")
    synced = torch.nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(plain))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in synced.modules())
    assert rearranged_layers(synced) == rearranged_layers(plain) != []
    apply_permutations_(plain, rearrangement_orders(plain))
    apply_permutations_(synced, rearrangement_orders(synced))
    expected = plain.state_dict()
    for key, value in synced.state_dict().items():
        assert torch.equal(value, expected[key]), key
