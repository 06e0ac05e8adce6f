"""bf16 autocast and channels_last on the CPU: masks and pruned zeros survive training."""
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
