"""bf16 autocast and channels_last on the CPU: masks and pruned zeros survive training; a step the
fp16 gradient scaler skips."""
import warnings

import torch
from torch.optim.lr_scheduler import LambdaLR

import models
from utils.trainer import build_optimizer
from test_training import train_args
from utils.engine import EpochProgress, Stepper
from utils.pruning import masked_convs, prune_model


def test_bf16_autocast_and_channels_last_keep_the_pattern():
    torch.manual_seed(0)
    model = models.get_model("mobilenet_v2", width_mult=0.25, num_classes=3)
    prune_model(model, 0.5, 4)
    model = model.to(memory_format=torch.channels_last)
    masks = {name: conv.mask.clone() for name, conv in masked_convs(model)}
    optimizer = build_optimizer(model, train_args(lr=0.05))
    scheduler = LambdaLR(optimizer, lambda step: 1.0)
    batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])) for _ in range(3)]
    before = {name: conv.weight.clone() for name, conv in masked_convs(model)}
    stepper = Stepper(model, torch.nn.CrossEntropyLoss(), optimizer, scheduler, torch.device("cpu"), amp="bf16",
                      scaler=torch.amp.GradScaler("cpu", enabled=False), channels_last=True)
    progress = EpochProgress(0)
    for images, target in batches:
        loss, _ = stepper.step(images, target)
        progress.sums["loss"] += loss.item() * len(target)  # step returns device tensors
        progress.sums["images"] += len(target)
    result = progress.metrics()
    assert torch.isfinite(torch.tensor(result["loss"])) and result["images"] == 12
    for name, conv in masked_convs(model):
        assert conv.weight.dtype == torch.float32 and torch.equal(conv.mask, masks[name])
        assert (conv.weight[conv.mask == 0] == 0).all(), name
        assert not torch.equal(conv.weight, before[name]), name


def test_a_step_the_scaler_skips_still_advances_the_schedule_without_a_warning():
    """fp16's GradScaler skips the optimizer step on inf gradients (its first steps on a GPU); the
    per-iteration schedule still advances, and torch's "scheduler before optimizer" warning, which
    would suggest a wrong order, is not shown."""
    torch.manual_seed(0)
    model = models.get_model("mobilenet_v1", width_mult=0.25, num_classes=3)
    optimizer = build_optimizer(model, train_args(lr=0.05))
    scheduler = LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    # A scale of inf makes every scaled gradient inf: the scaler must skip the step.
    scaler = torch.amp.GradScaler("cpu", init_scale=float("inf"))
    stepper = Stepper(model, torch.nn.CrossEntropyLoss(), optimizer, scheduler, torch.device("cpu"), scaler=scaler)
    before = {name: p.clone() for name, p in model.named_parameters()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        stepper.step(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))
    assert all(torch.equal(p, before[name]) for name, p in model.named_parameters())  # skipped
    assert scheduler.last_epoch == 1 and optimizer.param_groups[0]["lr"] == 0.05 / 2
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)], [str(w.message) for w in caught]
