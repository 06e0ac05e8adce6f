"""train_one_epoch and evaluate: plain loops that return metric dicts."""
import logging
import sys
import time
import warnings
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import torch
from tqdm import tqdm

from data import set_epoch
from utils.distributed import all_reduce_max_, all_reduce_sum_

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
    """Number of samples whose target is among the top-k logits, for each k: a tensor on the
    logits' device (reading it would wait for the device; the loops sum first and read later)."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (B, kmax)
    hits = top == target[:, None]
    return torch.stack([hits[:, :k].any(dim=1).sum() for k in ks])


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
        """One optimisation step. Returns the loss and the top-1/top-5 hit counts as tensors on
        the device, without waiting for it: the host never syncs here (fp16's GradScaler aside,
        which reads its inf check). A non-finite loss therefore still reaches the optimizer; the
        caller finds it at its next log point and stops before anything is saved."""
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
        self.optimizer.zero_grad(set_to_none=True)
        # One backward path: a disabled scaler passes the loss and the step through unchanged.
        self.scaler.scale(loss).backward()  # under DDP, gradients are averaged over ranks here
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # The schedule counts iterations, so a step the fp16 scaler skipped (inf gradients, as
        # while it finds its scale in the first steps) still advances it; torch would warn that
        # the scheduler ran before the optimizer, which here is intended.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            self.scheduler.step()
        return loss.detach(), topk_correct(logits.detach(), target)


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


NO_STEP = 2 ** 62  # "no non-finite loss yet" (larger than any step)


def train_one_epoch(stepper, loader, progress, should_stop=lambda: False, log_every=50):
    """Train from `progress.step` to the end of the epoch; False if a stop was agreed on.

    The host never waits for the device between log points: losses and hit counts are summed on
    the device and read every `log_every` steps and at the end of the epoch. At those points one
    all-reduce of [stop, first non-finite step] makes every rank take the same decision, so all
    stop at the same step boundary (a checkpoint taken then resumes exactly): `should_stop()`
    (this rank's SIGTERM flag) stops the epoch at the next log point, and a non-finite loss on
    any rank raises NonFiniteLoss there, naming the first step whose loss was not finite.
    """
    stepper.model.train()
    device = stepper.device
    set_epoch(loader, progress.epoch, start=progress.step * loader.batch_size)
    total = progress.step + len(loader)
    start = time.time() - progress.seconds
    running = torch.zeros(3, dtype=torch.float64, device=device)  # loss × batch, top-1 hits, top-5 hits
    first_bad = torch.full((), NO_STEP, dtype=torch.int64, device=device)
    bad_loss = torch.zeros((), device=device)
    for images, target in _progress_bar(loader, f"train {progress.epoch}", len(loader)):
        lr = stepper.optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after)
        loss, correct = stepper.step(images, target)
        batch = target.shape[0]
        running += torch.cat([loss.double().reshape(1) * batch, correct.double()])
        is_first_bad = ~torch.isfinite(loss) & (first_bad == NO_STEP)
        first_bad = torch.where(is_first_bad, progress.step, first_bad)
        bad_loss = torch.where(is_first_bad, loss.float(), bad_loss)
        progress.step += 1
        progress.sums["images"] += batch
        if progress.step % log_every and progress.step < total:
            continue
        # A log point: the one place where the host reads the device.
        stop, bad_step = _agree(should_stop(), first_bad, device)
        if bad_step != NO_STEP:
            value = bad_loss.item() if first_bad.item() == bad_step else "not finite (on another rank)"
            raise NonFiniteLoss(f"loss is {value} at epoch {progress.epoch}, step {bad_step}: the last "
                                "checkpoint is kept; lower --lr, or try without --amp fp16")
        loss_sum, correct1, correct5 = running.tolist()
        running.zero_()
        progress.sums["loss"] += loss_sum
        progress.sums["correct1"] += int(correct1)
        progress.sums["correct5"] += int(correct5)
        progress.seconds = time.time() - start
        m = progress.metrics()
        log.info("epoch %d [%d/%d] loss %.4f top1 %.2f lr %.6f (%.1f img/s)", progress.epoch, progress.step,
                 total, m["loss"], m["top1"], lr, m["images"] / max(progress.seconds, 1e-9))
        if stop and progress.step < total:
            return False
    # A resumed epoch's offset applies to that epoch only: the loader is a whole epoch long again
    # (the next phase sizes its LR schedule by it).
    set_epoch(loader, progress.epoch)
    return True


def _agree(stop, first_bad, device):
    """(stop on any rank, earliest non-finite step on any rank): one all-reduce, one host read."""
    status = torch.stack([torch.tensor(int(stop), device=device), -first_bad])
    stop, minus_bad = all_reduce_max_(status).tolist()
    return bool(stop), -minus_bad


@torch.no_grad()
def evaluate(model, loader, device, amp=None, channels_last=False):
    """Mean cross entropy, top-1 and top-5 (percent) over the whole loader (every rank's shard)."""
    model.eval()
    criterion = torch.nn.CrossEntropyLoss(reduction="sum")
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 hits, top-5 hits, images
    start = time.time()
    for images, target in _progress_bar(loader, "eval", len(loader)):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images).float()
        batch = torch.tensor([target.shape[0]], dtype=torch.float64, device=device)
        sums += torch.cat([criterion(logits, target).double().reshape(1), topk_correct(logits, target).double(), batch])
    # Sums, not means, are reduced: the validation shards need not be of equal size.
    total_loss, correct1, correct5, seen = all_reduce_sum_(sums).tolist()
    seen = int(seen)
    return {"loss": total_loss / seen, "top1": 100 * correct1 / seen, "top5": 100 * correct5 / seen,
            "images": seen, "seconds": time.time() - start}
