"""Masked training: pruned weights stay zero, masks stay fixed, biases frozen, optimizer sees the rest."""
import argparse
import math

import pytest
import torch

import models
from utils.trainer import build_optimizer, improves
from utils.pruning import masked_convs, prune_model
from utils.schedule import lr_factor


def train_args(**overrides):
    base = dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.1,
                warmup_epochs=5, lr_type="cos", num_epochs=10, lr_decay_freq=30, lr_decay_step=None)
    return argparse.Namespace(**{**base, **overrides})


@pytest.mark.parametrize("optimizer,nesterov", [("sgd", False), ("sgd", True), ("adam", False)])
def test_pruned_weights_stay_zero_and_masks_fixed(optimizer, nesterov):
    torch.manual_seed(0)
    model = models.get_model("mobilenet_v3_small", width_mult=0.25, num_classes=4)
    prune_model(model, 0.5, 4, full=True)
    masks = {name: conv.mask.clone() for name, conv in masked_convs(model)}
    opt = build_optimizer(model, train_args(optimizer=optimizer, nesterov=nesterov))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for group in opt.param_groups for p in group["params"]} == trainable
    assert all(id(conv.bias) not in trainable for _, conv in masked_convs(model))
    before = {name: conv.weight.clone() for name, conv in masked_convs(model)}
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, conv in masked_convs(model):
        assert torch.equal(conv.mask, masks[name])
        assert (conv.weight[conv.mask == 0] == 0).all(), name
        assert not torch.equal(conv.weight[conv.mask == 1], before[name][conv.mask == 1]), name


def test_mask_folded_into_weight_equals_masked_forward():
    model = models.get_model("mobilenet_v1", width_mult=0.25).eval()
    prune_model(model, 0.7, 2)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        masked = model(x)
        for _, conv in masked_convs(model):
            conv.mask.fill_(1)    # weights already hold the zeros
        assert torch.equal(masked, model(x))


def test_classifier_is_pruned_only_with_full():
    model = models.get_model("mobilenet_v2", width_mult=0.25, num_classes=8)
    prune_model(model, 0.5, 4)
    assert model.classifier[1].mask.all() and not model.features[2].conv[0].mask.all()
    prune_model(model, 0.5, 4, full=True)
    assert not model.classifier[1].mask.all()


def test_lr_warmup_then_policies():
    steps = 10
    args = train_args()
    assert lr_factor(0, steps, args) == pytest.approx(1 / 50)           # (1 + 0) / (5 · 10)
    assert lr_factor(49, steps, args) == pytest.approx(1.0)
    assert lr_factor(50, steps, args) == pytest.approx(1.0)              # cos at epoch 5: 0.5(1 + cos 0)
    assert lr_factor(70, steps, args) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 5)))
    assert lr_factor(75, steps, args) == lr_factor(70, steps, args)      # once per epoch
    step = train_args(lr_type="step", lr_decay_freq=3, warmup_epochs=0)
    assert [lr_factor(e * steps, steps, step) for e in (0, 2, 3, 6)] == pytest.approx([1, 1, 0.1, 0.01])
    milestones = train_args(lr_type="step", lr_decay_step=[2, 5], warmup_epochs=0)
    assert [lr_factor(e * steps, steps, milestones) for e in (1, 2, 5)] == pytest.approx([1, 0.1, 0.01])
    assert lr_factor(30, steps, train_args(lr_type="exp", warmup_epochs=0)) == pytest.approx(0.96 ** 3)
    short = train_args(num_epochs=1, warmup_epochs=5)                    # no division by zero for E ≤ 5
    assert lr_factor(5, steps, short) == pytest.approx(6 / 50)


def test_best_is_top5_with_ties_broken_by_top1():
    best = {"top1": 60.0, "top5": 99.0}
    assert improves({"top1": 50.0, "top5": 99.5}, best)      # top-5 decides
    assert not improves({"top1": 90.0, "top5": 98.0}, best)
    assert improves({"top1": 61.0, "top5": 99.0}, best)      # a tie on top-5: top-1 decides
    assert not improves({"top1": 60.0, "top5": 99.0}, best)


def test_stepper_honours_label_smoothing_optimizer_and_amp_flags():
    from imagenet import get_args_parser
    from utils.trainer import Run
    args = get_args_parser().parse_args(["--label_smoothing", "0.1", "--optimizer", "adam", "--amp", "bf16"])
    model = models.get_model("mobilenet_v1", width_mult=0.25, num_classes=3)
    stepper = Run(args, torch.device("cpu"), model, [None] * 4, None, None).stepper(epochs=2)
    assert stepper.criterion.label_smoothing == 0.1
    assert isinstance(stepper.optimizer, torch.optim.Adam) and stepper.amp == "bf16"
    assert not stepper.scaler.is_enabled()          # the scaler is for fp16 only
