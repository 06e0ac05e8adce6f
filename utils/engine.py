"""train_one_epoch and evaluate: plain loops that return metric dicts."""
import logging
import math
import sys
import time
from contextlib import nullcontext

import torch
from tqdm import tqdm

from utils.distributed import all_reduce_sum

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    pass


def _progress(iterable, desc, total):
    """A tqdm bar on a terminal; elsewhere (logs, CI) plain lines from the loop itself."""
    return tqdm(iterable, desc=desc, total=total, leave=False, disable=not sys.stderr.isatty())


def autocast(device, amp):
    """One AMP path for CUDA and CPU: `amp` is None, 'bf16' or 'fp16'."""
    if amp is None:
        return nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def topk_correct(logits, target, ks=(1, 5)):
    """Number of samples whose target is among the top-k logits, for each k."""
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # (B, kmax)
    hits = top == target[:, None]
    return [hits[:, :k].any(dim=1).sum().item() for k in ks]


def train_one_epoch(model, loader, criterion, optimizer, scheduler, device, epoch, amp=None, scaler=None,
                    channels_last=False, log_every=50):
    model.train()
    # One backward path: a disabled scaler passes the loss and the step through unchanged.
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    total_loss, correct1, correct5, seen = 0.0, 0, 0, 0
    start = time.time()
    for i, (images, target) in enumerate(_progress(loader, f"train {epoch}", len(loader))):
        images = images.to(device, non_blocking=True)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        target = target.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(images)
            loss = criterion(logits.float(), target)
        if not math.isfinite(loss.item()):
            raise NonFiniteLoss(f"loss is {loss.item()} at epoch {epoch}, step {i}: lower --lr, "
                                "or try without --amp fp16")
        lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()  # under DDP, gradients are averaged over ranks here
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        batch = target.shape[0]
        total_loss += loss.item() * batch
        c1, c5 = topk_correct(logits.detach(), target)
        correct1, correct5, seen = correct1 + c1, correct5 + c5, seen + batch
        if (i + 1) % log_every == 0 or i + 1 == len(loader):
            log.info("epoch %d [%d/%d] loss %.4f top1 %.2f lr %.6f (%.1f img/s)", epoch, i + 1, len(loader),
                     total_loss / seen, 100 * correct1 / seen, lr,
                     seen / (time.time() - start))
    # Averages over every rank's images (DistributedSampler may repeat a few to even out the shards).
    total_loss, correct1, correct5, seen = all_reduce_sum([total_loss, correct1, correct5, seen], device)
    seen = int(seen)
    return {"loss": total_loss / seen, "top1": 100 * correct1 / seen, "top5": 100 * correct5 / seen,
            "images": seen, "lr": lr, "seconds": time.time() - start}


@torch.no_grad()
def evaluate(model, loader, device, amp=None, channels_last=False):
    """Mean cross entropy, top-1 and top-5 (percent) over the whole loader (every rank's shard)."""
    model.eval()
    criterion = torch.nn.CrossEntropyLoss(reduction="sum")
    total_loss, correct1, correct5, seen = 0.0, 0, 0, 0
    start = time.time()
    for images, target in _progress(loader, "eval", len(loader)):
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
