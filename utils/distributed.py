"""Data-parallel training under torchrun: one process per device, world size 1 without torchrun.

    torchrun --nproc_per_node=4 imagenet.py --arch mobilenet_v2 ...

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; `setup()` reads them, joins the process group
(NCCL on GPUs, gloo on the CPU) and picks this process's device. Everything else here is a
no-op when the process group is not initialised, so single-process code calls it freely.
"""
import atexit
import hashlib
import json
import os
import shlex
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def is_main(self):
        """Rank 0 alone logs and writes the job dir (config, metrics.jsonl, TensorBoard, checkpoints)."""
        return self.rank == 0


def context_from_env(environ=os.environ):
    """The torchrun variables; without them this process is rank 0 of 1."""
    return Context(int(environ.get("RANK", 0)), int(environ.get("WORLD_SIZE", 1)),
                   int(environ.get("LOCAL_RANK", 0)), int(environ.get("LOCAL_WORLD_SIZE", 1)))


def setup(ctx, device):
    """Join the process group when there is more than one process (NCCL for CUDA, else gloo)."""
    if ctx.distributed and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                device_id=device if device.type == "cuda" else None)
        atexit.register(cleanup)  # however main() ends: NCCL warns about groups left open


def cleanup():
    if dist.is_initialized():
        dist.destroy_process_group()


def is_initialized():
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(values, device):
    """Sums of a list of numbers over all ranks (float64, so image counts stay exact)."""
    if not is_initialized():
        return list(values)
    # NCCL reduces CUDA tensors only; gloo reduces CPU ones.
    return all_reduce_sum_(torch.tensor(values, dtype=torch.float64, device=device)).tolist()


def all_reduce_sum_(tensor):
    """Sum `tensor` over all ranks in place (on this rank's device: no host sync); returns it."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max_(tensor):
    """Element-wise maximum over all ranks, in place; returns it."""
    if is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def any_rank(flag, device):
    """True on every rank when `flag` is True on any (a SIGTERM seen by one rank stops them all
    at the same point, so that none waits forever in the next collective)."""
    return bool(all_reduce_max_(torch.tensor([int(flag)], device=device)).item())


@torch.no_grad()
def broadcast_buffers(model):
    """Copy rank 0's buffers (BN running statistics, masks) to every rank.

    DDP broadcasts buffers at the *start* of each training forward, so after the last step
    every rank has updated its BN statistics with its own batch; without this, the ranks
    would evaluate (and rank 0 would save) slightly different models. Masks are identical
    anyway (same seed, same weights); broadcasting them too is free and makes it certain.
    """
    if not is_initialized():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def wrap(model, device, sync_bn=False):
    """DistributedDataParallel around `model` (which keeps the state_dict, without `module.`).

    Built once per training phase, after pruning has frozen the masked convs' biases: DDP
    registers the parameters that require grad when it is constructed. Construction also
    broadcasts rank 0's parameters and buffers, so every phase starts from identical models.
    """
    if not is_initialized():
        return model
    if sync_bn:
        # Same state_dict keys as BatchNorm2d; statistics reduced over all ranks' batches.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model):
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def torchrun_command(argv, nproc, script="imagenet.py"):
    """The command line that runs `argv` as `nproc` DDP processes on this machine."""
    return shlex.join(["torchrun", f"--nproc_per_node={nproc}", script, *argv])


def command_line(parser, args):
    """Arguments that reproduce `args` with `parser`: every option whose value is not the default."""
    argv = []
    for action in parser._actions:  # argparse has no public iterator over its options
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest, action.default)
        if value == action.default or value is None:
            continue
        flag = action.option_strings[0]
        if action.nargs == 0:  # store_true
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


DIGEST_ENV = "ONEXN_STATE_DIGEST_DIR"


def write_state_digest(model, ctx):
    """Test hook: with $ONEXN_STATE_DIGEST_DIR set, every rank writes `rank<k>.json`, a SHA-256
    per state_dict entry (weights, BN statistics, masks), so a test can check the ranks agree."""
    folder = os.environ.get(DIGEST_ENV)
    if not folder:
        return
    digest = state_digest(unwrap(model).state_dict())
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"rank{ctx.rank}.json"), "w") as f:
        json.dump(digest, f, indent=0, sort_keys=True)


def state_digest(state_dict):
    return {key: hashlib.sha256(value.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
            for key, value in state_dict.items()}
