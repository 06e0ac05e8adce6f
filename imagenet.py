"""Prune a MobileNet or ResNet with the 1×N block pattern, fine-tune it and evaluate it.

    python imagenet.py --arch mobilenet_v2 --N 4 --pr_target 0.5 --rearrange --data_path DATA ...
    torchrun --nproc_per_node=4 imagenet.py ...    (DistributedDataParallel, one process per GPU)

Without --data_path the embedded Fashion-MNIST set is used, so the whole pipeline runs anywhere.
"""
import argparse
import logging
import math
import os
import sys
import warnings
from pathlib import Path

import torch

import models
from data import build_loaders, dali
from data.sampling import BadImage
from utils import distributed, torchvision_weights
from utils.checkpoint import (EVALUATE_FIXED, RESUME_FIXED, CheckpointError, adopt_recorded_flags, load_pretrained,
                              load_pruned, num_classes_in, read_checkpoint, variant_in)
from utils.engine import NonFiniteLoss
from utils.pruning import CONV_TYPES, masked_convs, widest_pruned_layer
from utils.runlog import RunLog, setup_logging, write_config
from utils.distill import Distiller
from utils.trainer import (Run, Stopped, default_best_metric, prune_and_fine_tune, prune_end_epoch, seed_everything,
                           stop_on_sigterm)

log = logging.getLogger("imagenet")


class UsageError(ValueError):
    """Bad input that argparse cannot see (files, devices, class counts): one line, exit 2."""


def _number(kind, low, high=math.inf, low_open=False, high_open=False, what=None):
    """argparse type: a finite `kind` number between `low` and `high` (open ends excluded), so that
    no bad value reaches the optimizer or the loss after the job dir was written."""
    if high == math.inf:
        condition = f"{'>' if low_open else '≥'} {low}"
    else:
        condition = f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    expected = f"expected {what or kind.__name__} {condition}"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}") from None
        too_low = value < low or (low_open and value == low)
        too_high = value > high or (high_open and value == high)
        if not math.isfinite(value) or too_low or too_high:
            raise argparse.ArgumentTypeError(f"{expected}, got {text!r}")
        return value
    return parse


def _at_least(minimum, kind=int):
    return _number(kind, minimum)


def _fraction(what=None):
    """A float in [0, 1): pruning rate, momentum, label smoothing."""
    return _number(float, 0, 1, high_open=True, what=what)


def _default_workers():
    """4, or fewer on a machine with fewer cores for this process (DataLoader warns beyond them)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(4, cores)


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints the whole usage before an error; one line is easier to read in a log."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def get_args_parser():
    p = OneLineErrorParser(description="1×N block pruning of MobileNets and ResNets: prune, fine-tune, evaluate.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = p.add_argument_group("run")
    run.add_argument("--gpus", type=_at_least(0), nargs="+", default=None,
                     help="GPU id to use (default: the first GPU, or the CPU when there is none; "
                          "without CUDA a warning is printed and the CPU is used); under torchrun, "
                          "one id per process on the node (default: the local rank)")
    run.add_argument("--data_path", default=None,
                     help="ImageNet-style folder with train/ (or ILSVRC2012_img_train/) and val/ class folders; "
                          "omitted: the embedded Fashion-MNIST set")
    run.add_argument("--job_dir", default="experiment/runs/default",
                     help="where config.txt, logs, metrics.jsonl, run/ (TensorBoard) and checkpoint/ go")
    run.add_argument("--resume", action="store_true", help="continue from <job_dir>/checkpoint/model_last.pt")
    run.add_argument("--pretrained_model", "--pretrain_model", dest="pretrained_model", default=None,
                     help="dense weights to prune: the authors' formats, ours, a torchvision state_dict, or "
                          "torchvision:NAME (e.g. torchvision:IMAGENET1K_V1) to fetch torchvision's weights")
    run.add_argument("--evaluate", "--pruned_model", dest="evaluate", default=None, metavar="PATH",
                     help="evaluate this pruned checkpoint (the authors' or ours) on val and stop")
    run.add_argument("--seed", type=_number(int, 0, 2**32 - 1), default=0, help="seed for weights, data order and random masks")
    run.add_argument("--workers", type=_at_least(0), default=_default_workers(),
                     help="data loading processes (4, or the cores available if fewer)")
    run.add_argument("--print_freq", type=_at_least(1), default=20,
                     help="log every this many training steps; also where a SIGTERM or a non-finite loss "
                          "stops training (the host reads the device only there)")
    run.add_argument("--amp", choices=["bf16", "fp16"], default=None,
                     help="mixed precision (autocast); fp16 adds a gradient scaler and needs CUDA")
    run.add_argument("--channels_last", action="store_true", help="channels_last memory format")
    run.add_argument("--use_dali", action="store_true",
                     help=f"load ImageFolder data with NVIDIA DALI (GPU decoding on CUDA; `{dali.INSTALL}`)")
    run.add_argument("--sync_bn", action="store_true", help="under torchrun on GPUs: synchronised BatchNorm")

    model = p.add_argument_group("model and pruning")
    model.add_argument("--arch", default="mobilenet_v2", choices=models.list_models(), help="architecture")
    model.add_argument("--num_classes", type=_at_least(1), default=None,
                       help="classes when no checkpoint gives them (default: 1000 with --data_path, "
                            "10 for the embedded set)")
    model.add_argument("--conv_type", default="BlockL1Conv", choices=list(CONV_TYPES),
                       help="pruning criterion: 1×N by ℓ1 or at random, weight pruning (Unstructure), "
                            "filter pruning (Structure), or none (Dense)")
    model.add_argument("--pr_target", type=_fraction("a pruning rate"), default=0.5, help="pruning rate of every prunable layer")
    model.add_argument("--N", type=_at_least(1), default=4, help="output channels per 1×N block")
    model.add_argument("--full", action="store_true", help="also prune the classifier convs")
    model.add_argument("--rearrange", action="store_true",
                       help="rearrange filters by ℓ1 norm before forming blocks (permuted physically)")

    train = p.add_argument_group("training")
    train.add_argument("--num_epochs", type=_at_least(0), default=180, help="fine-tuning epochs (0: prune and evaluate)")
    train.add_argument("--pretrain_epochs", type=_at_least(0), default=0,
                       help="dense training epochs before pruning (when there is no pretrained model)")
    train.add_argument("--train_batch_size", type=_at_least(1), default=256,
                       help="global training batch size (split evenly over the torchrun processes)")
    train.add_argument("--eval_batch_size", type=_at_least(1), default=256,
                       help="global evaluation batch size (split over the torchrun processes)")
    train.add_argument("--img_size", type=_at_least(8), default=None,
                       help="training/eval resolution (default: 224 with --data_path, 32 for the embedded set)")
    train.add_argument("--train_images", type=_at_least(1), default=None, help="use a fixed random subset of training images")
    train.add_argument("--val_images", type=_at_least(1), default=None,
                       help="use a fixed random subset of val images (default: all; drawn with --val_seed)")
    train.add_argument("--val_seed", type=int, default=None,
                       help="seed of the --val_images subset (default: --seed); fix it to compare seeds on one val set")
    train.add_argument("--skip_initial_eval", action="store_true",
                       help="skip the dense and pruned evaluations before fine-tuning (sweeps that prune one "
                            "dense model many times)")
    train.add_argument("--best_metric", choices=["top1", "top5"], default=None,
                       help="which accuracy picks model_best.pt (default: top5 with ≥ 100 classes, as the "
                            "authors' on ImageNet; top1 below 100 classes, where top-5 saturates)")
    train.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="Adam uses no weight decay")
    train.add_argument("--lr", type=_number(float, 0, low_open=True), default=0.01, help="base learning rate")
    train.add_argument("--momentum", type=_fraction(), default=0.9, help="SGD momentum")
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    train.add_argument("--weight_decay", type=_at_least(0, float), default=4e-5, help="SGD weight decay on all trainable parameters")
    train.add_argument("--label_smoothing", type=_fraction(), default=0.0, help="cross-entropy label smoothing")
    train.add_argument("--lr_type", "--lr_policy", dest="lr_type", choices=["cos", "step", "exp", "fixed"],
                       default="cos", help="learning-rate policy after warm-up")
    train.add_argument("--warmup_epochs", type=_at_least(0), default=5, help="linear per-iteration warm-up epochs")
    train.add_argument("--lr_decay_freq", type=_at_least(1), default=30, help="'step': ×0.1 every this many epochs")
    train.add_argument("--lr_decay_step", type=_at_least(1), nargs="+", default=None,
                       help="'step': ×0.1 at these epochs instead of every --lr_decay_freq")

    gradual = p.add_argument_group("gradual pruning (cubic schedule, Zhu & Gupta 2017)")
    gradual.add_argument("--prune_schedule", choices=["oneshot", "cubic"], default="oneshot",
                         help="oneshot: prune before fine-tuning (the paper); cubic: ramp the rate during fine-tuning")
    gradual.add_argument("--prune_start_epoch", type=_number(float, 0), default=0.0,
                         help="cubic: fine-tuning epoch (fractions allowed) at which the ramp starts")
    gradual.add_argument("--prune_end_epoch", type=_number(float, 0), default=None,
                         help="cubic: epoch at which --pr_target is reached (default: half of --num_epochs)")
    gradual.add_argument("--prune_every", type=_at_least(1), default=50,
                         help="cubic: optimizer steps between mask updates")

    kd = p.add_argument_group("distillation")
    kd.add_argument("--distill", action="store_true",
                    help="fine-tune with knowledge distillation from the dense model before pruning (or --teacher)")
    kd.add_argument("--teacher", default=None, metavar="FILE",
                    help="with --distill: the teacher's weights (any format --pretrained_model reads, pruned too)")
    kd.add_argument("--kd_alpha", type=_number(float, 0, 1), default=0.5,
                    help="weight of the distillation term: (1 − α)·CE + α·T²·KL")
    kd.add_argument("--kd_temperature", type=_number(float, 0, low_open=True), default=4.0, help="softmax temperature T")
    return p


def check_schedule_flags(args):
    """Flag combinations argparse cannot check one flag at a time."""
    if args.prune_schedule == "cubic":
        end = prune_end_epoch(args)
        if args.num_epochs == 0:
            raise UsageError("--prune_schedule cubic prunes during fine-tuning: give --num_epochs ≥ 1")
        if not args.prune_start_epoch <= end < args.num_epochs:
            raise UsageError(f"--prune_start_epoch {args.prune_start_epoch} / --prune_end_epoch {end}: expected "
                             f"start ≤ end < --num_epochs {args.num_epochs}")
    if args.teacher and not args.distill:
        raise UsageError("--teacher is the distillation teacher: add --distill")
    if args.distill and args.num_epochs == 0:
        raise UsageError("--distill acts during fine-tuning: give --num_epochs ≥ 1")
    if args.distill and not args.evaluate and not (args.teacher or args.pretrained_model or args.pretrain_epochs):
        raise UsageError("--distill: the teacher is the dense model before pruning, so give --pretrained_model "
                         "or --pretrain_epochs (or --teacher FILE)")


def teacher_file(args, checkpoint):
    """The teacher to load from disk: --teacher, or on --resume of fine-tuning the dense model
    pruning started from. (A resumed pre-training makes its teacher when it prunes, as a fresh run.)"""
    if args.teacher or not args.resume or checkpoint.get("phase") == "pretrain":
        return args.teacher
    return args.pretrained_model or str(Path(args.job_dir) / "checkpoint" / "dense.pt")


def select_device(args, ctx):
    """This process's device: `--gpus` (one id, or under torchrun one per local process) or the CPU."""
    gpus = args.gpus
    if not torch.cuda.is_available():
        if gpus is not None:
            warnings.warn("--gpus given but no CUDA device is available: running on the CPU", stacklevel=2)
        return torch.device("cpu")
    if ctx.world_size > 1:
        gpus = gpus or list(range(ctx.local_world_size))
        if len(gpus) != ctx.local_world_size:
            raise UsageError(f"--gpus {' '.join(map(str, gpus))}: torchrun started {ctx.local_world_size} "
                             "processes on this node; give one GPU id per process")
        gpus = [gpus[ctx.local_rank]]
    gpus = gpus or [0]
    if len(gpus) > 1:  # no DataParallel: one process drives one GPU
        command = distributed.torchrun_command(distributed.command_line(get_args_parser(), args), len(gpus))
        raise UsageError(f"--gpus {' '.join(map(str, gpus))}: one process drives one GPU; run: {command}")
    if gpus[0] >= torch.cuda.device_count():
        raise UsageError(f"--gpus {gpus[0]}: no such GPU (this machine has {torch.cuda.device_count()})")
    return torch.device("cuda", gpus[0])


def check_job_dir(args):
    """Refuse what would lose work, and an unwritable job dir, before anything is written."""
    job_dir = Path(args.job_dir)
    last = job_dir / "checkpoint" / "model_last.pt"
    if args.resume and not last.is_file():
        raise UsageError(f"--resume: {last} does not exist (nothing to resume in --job_dir {job_dir})")
    if not args.resume and not args.evaluate and last.is_file():
        raise UsageError(f"--job_dir {job_dir} already holds {last}: pass --resume to continue it, "
                         "or choose another --job_dir")
    existing = next((p for p in [job_dir, *job_dir.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise UsageError(f"--job_dir {job_dir}: {existing} is a file, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--job_dir {job_dir}: {existing} is not a writable folder")


def open_job_dir(args, ctx):
    """Rank 0 creates the job dir and logs there; the other ranks write nothing."""
    job_dir = Path(args.job_dir)
    if not ctx.is_main:
        setup_logging(rank=ctx.rank)
        return RunLog(job_dir, enabled=False)
    (job_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
    setup_logging(job_dir)
    for partial in (job_dir / "checkpoint").glob(".*.tmp"):  # left by a save that was killed
        log.info("removing %s, a partial checkpoint from an interrupted save", partial)
        partial.unlink()
    if not (job_dir / "config.txt").exists():  # a resumed or evaluated run keeps the training config
        write_config(job_dir, args)
    return RunLog(job_dir)


def main(args, given=None):
    """Validate everything that can be wrong (device, checkpoint, data, class count) before
    writing to the job dir, so that bad input never overwrites or leaves anything there.

    given: the flags the command line names (given_flags); None, for a caller without one, counts
    the flags away from their defaults."""
    ctx = distributed.context_from_env()
    setup_logging(rank=ctx.rank)
    if args.use_dali and args.data_path is None:
        raise UsageError("--use_dali reads image files: pass --data_path (the embedded Fashion-MNIST set has none)")
    if args.use_dali and not dali.available():
        raise UsageError(f"--use_dali: NVIDIA DALI is not installed; install it with: {dali.INSTALL}")
    device = select_device(args, ctx)
    if args.amp == "fp16" and device.type != "cuda":
        raise UsageError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")
    if args.train_batch_size % ctx.world_size:
        raise UsageError(f"--train_batch_size {args.train_batch_size} is the global batch: make it a multiple "
                         f"of the {ctx.world_size} torchrun processes")
    if args.sync_bn and ctx.world_size > 1 and device.type != "cuda":
        raise UsageError("--sync_bn needs CUDA (torch's SyncBatchNorm does not run on the CPU)")
    args.img_size = args.img_size or (224 if args.data_path else 32)
    check_schedule_flags(args)
    check_job_dir(args)
    distributed.setup(ctx, device)  # the process group; a no-op for a single process
    # The same seed on every rank: identical initial weights and identical (random) masks.
    seed_everything(args.seed)

    source_flag = "--evaluate" if args.evaluate else "--resume" if args.resume else "--pretrained_model"
    source_path = (args.evaluate or (Path(args.job_dir) / "checkpoint" / "model_last.pt" if args.resume else None)
                   or args.pretrained_model)
    checkpoint = read_weights(source_path, source_flag, args.arch) if source_path else None
    source = f"{source_flag} {source_path}"
    if checkpoint is not None and (args.evaluate or args.resume):  # build the model the checkpoint records
        if given is None:
            parser = get_args_parser()
            given = {flag for flag, value in vars(args).items() if value != parser.get_default(flag)}
        adopt_recorded_flags(args, given, checkpoint, RESUME_FIXED if args.resume else EVALUATE_FIXED, source)
    train_loader, val_loader, data_classes = build_loaders(args, need_train=not args.evaluate, rank=ctx.rank,
                                                           world_size=ctx.world_size, device=device)
    num_classes = (num_classes_in(checkpoint, source) if checkpoint is not None
                   else args.num_classes or (1000 if args.data_path else data_classes))
    if args.num_classes and args.num_classes != num_classes:  # the checkpoint's classifier decides
        raise UsageError(f"--num_classes {args.num_classes}: {source} has {num_classes} classes")
    if data_classes > num_classes:
        data = f"--data_path {args.data_path}" if args.data_path else "the embedded data set"
        raise UsageError(f"{data}: {data_classes} classes, but the model has {num_classes} "
                         "(pass --num_classes, or a checkpoint with as many classes)")
    variant = variant_in(checkpoint) if checkpoint is not None else "authors"
    model = models.get_model(args.arch, conv_type=args.conv_type, num_classes=num_classes, variant=variant)
    if checkpoint is not None and (args.evaluate or args.resume):
        load_pruned(model, checkpoint, source)
        if not (args.resume and checkpoint.get("phase") == "pretrain"):  # a dense model trains them
            for _, conv in masked_convs(model):  # pruning froze them; keep the optimizer's parameter set
                if conv.bias is not None:
                    conv.bias.requires_grad_(False)
    elif checkpoint is not None:
        load_pretrained(model, checkpoint, source)
    widest = widest_pruned_layer(model, args.full)
    if not (args.evaluate or args.resume) and 0 < widest < args.N:
        warnings.warn(f"--N {args.N} exceeds the output channels of every prunable layer (at most {widest}): "
                      "each block spans all of a layer's filters", stacklevel=2)
    args.best_metric = args.best_metric or default_best_metric(num_classes)
    teacher = None
    teacher_path = teacher_file(args, checkpoint) if args.distill and not args.evaluate else None
    if teacher_path:
        weights = read_weights(teacher_path, "--teacher", args.arch)
        teacher = models.get_model(args.arch, conv_type="DenseConv", num_classes=num_classes, variant=variant_in(weights))
        load_pretrained(teacher, weights, f"--teacher {teacher_path}")

    runlog = open_job_dir(args, ctx)
    log.info("%s, %s, %d classes, on %s%s%s", args.arch, args.conv_type, num_classes, device,
             f" (rank 0 of {ctx.world_size} processes)" if ctx.distributed else "",
             f", weights from {source}" if checkpoint is not None else "")
    run = Run(args, device, _to_device(model, args, device), train_loader, val_loader, runlog, ctx)
    if teacher is not None:
        run.distiller = Distiller(_to_device(teacher, args, device), args.kd_alpha, args.kd_temperature, None)
    try:
        if args.evaluate:
            return run.evaluate("evaluate", checkpoint.get("epoch", 0) if isinstance(checkpoint, dict) else 0)
        with stop_on_sigterm(run):
            best = run.resume(checkpoint) if args.resume else prune_and_fine_tune(run, pretrained=checkpoint is not None)
        log.info("evaluations of this run:\n%s", runlog.summary())
        if best is not None:
            last = run.last_metrics  # None when a resumed run had nothing left to do
            log.info("best (by %s): top-1 %.2f, top-5 %.2f at epoch %d%s; checkpoints in %s", args.best_metric,
                     best["top1"], best["top5"], best["epoch"],
                     f"; last epoch: top-1 {last['top1']:.2f}, top-5 {last['top5']:.2f}" if last else "",
                     run.checkpoint_dir)
        return best
    except Stopped as stop:
        log.info("%s", stop)
        return None
    finally:
        runlog.close()


def read_weights(path, flag, arch):
    """A checkpoint file, or torchvision's weights for `--pretrained_model torchvision:NAME`."""
    if not str(path).startswith(torchvision_weights.PREFIX):
        return read_checkpoint(path, flag)
    try:
        torchvision_weights.parse_spec(str(path), arch)  # offline: a bad name fails before any download
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        return torchvision_weights.fetch(str(path), arch)
    except Exception as error:  # no internet, a proxy, a corrupt download (the hash is checked)
        raise UsageError(f"{flag} {path}: could not fetch torchvision's weights ({type(error).__name__}: {error})") from None


def _to_device(model, args, device):
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if args.channels_last else model


def _one_line(error):
    """DataLoader workers re-raise with the worker's traceback inside the message: keep its last line."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].split(": ", 1)[-1] if isinstance(error, BadImage) and len(lines) > 1 else str(error)


def given_flags(argv=None):
    """The flags the command line names, whatever their values: one given at its default value
    still counts as given (--resume refuses it where the checkpoint recorded another)."""
    probe, absent = get_args_parser(), object()
    probe.set_defaults(**{flag: absent for flag in vars(probe.parse_args([]))})
    return {flag for flag, value in vars(probe.parse_args(argv)).items() if value is not absent}


def cli(argv=None):
    """Parse, run, and turn expected failures into one line on stderr and exit code 2."""
    args = get_args_parser().parse_args(argv)
    try:
        main(args, given_flags(argv))
    except (UsageError, CheckpointError, FileNotFoundError, NonFiniteLoss, BadImage) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
