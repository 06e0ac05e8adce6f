"""train_one_epoch and evaluate: plain loops that return metric dicts."""
import logging
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from data import set_epoch
from utils.distributed import all_reduce_sum

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


def _progress_bar(iterable, desc, total):
    """A tqdm bar on a terminal; elsewhere (logs, CI) plain lines from the loop itself."""
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=not sys.stderr.isatty())


def autocast(device, amp):
    """One AMP path for CUDA and CPU: `amp` is None, 'bf16' or 'fp16'."""
    if amp is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def topk_correct(logits, target, ks=(1, 5)):
    """Number of samples whose target is among the top-k logits, for each k."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (B, kmax)
    hits = top == target[:, None]
    return [hits[:, :k].any(dim=1).sum().item() for k in ks]


@dataclass
class Stepper:
    """What one optimisation step needs."""
    model: torch.nn.Module
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    device: torch.device
    amp: str = None
    scaler: object = None          # a GradScaler, enabled for fp16 only
    channels_last: bool = False
    distiller: object = None       # utils.distill.Distiller: the loss also matches a teacher's logits
    pruner: object = None          # utils.gradual.GradualPruner: masks updated on a schedule

    def step(self, images, target):
        images = images.to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(self.device, non_blocking=True)
        if self.pruner is not None:  # the scheduler counts the optimizer steps taken so far
            self.pruner.before_step(self.scheduler.last_epoch, self.optimizer)
        with autocast(self.device, self.amp):
            logits = self.model(images)
            loss = (self.criterion(logits.float(), target) if self.distiller is None
                    else self.distiller.loss(logits.float(), images, target))
        if not math.isfinite(loss.item()):
            return loss.item(), None  # the caller stops before the weights are touched
        self.optimizer.zero_grad(set_to_none=True)
        # One backward path: a disabled scaler passes the loss and the step through unchanged.
        self.scaler.scale(loss).backward()  # under DDP, gradients are averaged over ranks here
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.item(), topk_correct(logits.detach(), target)


@dataclass
class EpochProgress:
    """How far an epoch got, with its running sums: saved in mid-epoch checkpoints."""
    epoch: int
    step: int = 0
    sums: dict = field(default_factory=lambda: {"loss": 0.0, "correct1": 0, "correct5": 0, "images": 0})
    seconds: float = 0.0

    def metrics(self):
        seen = max(1, self.sums["images"])
        return {"loss": self.sums["loss"] / seen, "top1": 100 * self.sums["correct1"] / seen,
                "top5": 100 * self.sums["correct5"] / seen, "images": self.sums["images"], "seconds": self.seconds}

    state_dict = asdict

    @classmethod
    def from_state_dict(cls, state):
        return cls(**state)


def train_one_epoch(stepper, loader, progress, should_stop=lambda: False, log_every=50):
    """Train from `progress.step` to the end of the epoch; False if `should_stop()` cut it short.

    `should_stop` is asked at every step boundary (after a complete optimizer step), so a
    checkpoint taken then resumes exactly where this left off.
    """
    stepper.model.train()
    set_epoch(loader, progress.epoch, start=progress.step * loader.batch_size)
    total = progress.step + len(loader)
    start = time.time() - progress.seconds
    for images, target in _progress_bar(loader, f"train {progress.epoch}", len(loader)):
        lr = stepper.optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after)
        loss, correct = stepper.step(images, target)
        if correct is None:
            raise NonFiniteLoss(f"loss is {loss} at epoch {progress.epoch}, step {progress.step}: the last "
                                "checkpoint is kept; lower --lr, or try without --amp fp16")
        batch = target.shape[0]
        progress.step += 1
        progress.sums["loss"] += loss * batch
        progress.sums["correct1"] += correct[0]
        progress.sums["correct5"] += correct[1]
        progress.sums["images"] += batch
        progress.seconds = time.time() - start
        if progress.step % log_every == 0 or progress.step == total:
            m = progress.metrics()
            log.info("epoch %d [%d/%d] loss %.4f top1 %.2f lr %.6f (%.1f img/s)", progress.epoch, progress.step,
                     total, m["loss"], m["top1"], lr, m["images"] / max(progress.seconds, 1e-9))
        if progress.step < total and should_stop():
            return False
    return True


@torch.no_grad()
def evaluate(model, loader, device, amp=None, channels_last=False):
    """Mean cross entropy, top-1 and top-5 (percent) over the whole loader (every rank's shard)."""
    model.eval()
    criterion = torch.nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct1, correct5, seen = 0.0, 0, 0, 0
    start = time.time()
    for images, target in _progress_bar(loader, "eval", len(loader)):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images).float()
        total_loss += criterion(logits, target).item()
        c1, c5 = topk_correct(logits, target)
        correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + target.shape[0]
    # Sums, not means, are reduced: the validation shards need not be of equal size.
    total_loss, correct1, correct5, seen = all_reduce_sum([total_loss, correct1, correct5, seen], device)
    seen = int(seen)
    return {"loss": total_loss / seen, "top1": 100 * correct1 / seen, "top5": 100 * correct5 / seen,
            "images": seen, "seconds": time.time() - start}
