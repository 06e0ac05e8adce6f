"""Pruning the authors' golden pretrained MobileNetV2 gives their masks and their logits."""
import torch

import models
from conftest import authors_pruned_checkpoint, layout, load_reference
from utils.checkpoint import load_pretrained, load_pruned
from utils.pruning import filter_order, masked_convs, prune_model


def pruned_v2(golden_pretrained, orders=None):
    model = models.get_model("mobilenet_v2")
    load_pretrained(model, golden_pretrained, "golden")
    if orders == "authors":
        rearranged = {m["module"] for m in layout("mobilenet_v2")["masked_modules"] if m["rearranged_by_authors"]}
        orders = {name: filter_order(conv.weight) for name, conv in masked_convs(model) if name in rearranged}
    prune_model(model, 0.5, 4, orders=orders)
    return model.eval()


def test_plain_masks_equal_the_authors_bit_for_bit(golden_pretrained, authors_plain_masks):
    reference = authors_plain_masks
    io = load_reference("mobilenet_v2_N4_rearrange.io.pth")
    model = pruned_v2(golden_pretrained)
    state = model.state_dict()
    assert len(reference["masks"]) == 35
    for key, mask in reference["masks"].items():
        assert torch.equal(state[key].bool(), mask), key
    with torch.no_grad():
        assert torch.allclose(model(io["input"]), reference["logits"], atol=1e-4)


def test_blocks_over_the_l1_order_give_the_authors_rearranged_masks(golden_pretrained):
    authors = authors_pruned_checkpoint()["state_dict"]
    state = pruned_v2(golden_pretrained, orders="authors").state_dict()
    for key in (k for k in authors if k.endswith(".mask")):
        assert torch.equal(state[key], authors[key]), key


def test_evaluating_the_authors_pruned_checkpoint_gives_their_logits():
    checkpoint = authors_pruned_checkpoint()
    io = load_reference("mobilenet_v2_N4_rearrange.io.pth")
    model = models.get_model("mobilenet_v2")
    load_pruned(model, checkpoint, "--evaluate")
    with torch.no_grad():
        logits = model.eval()(io["input"])
    assert torch.allclose(logits, io["logits"], atol=1e-4)
    assert torch.equal(logits.argmax(1), io["logits"].argmax(1))
    loss = torch.nn.functional.cross_entropy(logits, io["logits"].argmax(1))
    reference_loss = torch.nn.functional.cross_entropy(io["logits"], io["logits"].argmax(1))
    assert abs(loss.item() - reference_loss.item()) < 1e-4
