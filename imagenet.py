"""Prune a MobileNet with the 1×N block pattern, fine-tune it and evaluate it.

    python imagenet.py --arch mobilenet_v2 --N 4 --pr_target 0.5 --rearrange --data_path DATA ...
    torchrun --nproc_per_node=4 imagenet.py ...    (DistributedDataParallel, one process per GPU)

Without --data_path the embedded Fashion-MNIST set is used, so the whole pipeline runs anywhere.
"""
import argparse
import logging
import random
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

import models
from data import build_loaders, dali, set_epoch
from utils import distributed
from utils.checkpoint import CheckpointError, load_pretrained, load_pruned, num_classes_in, read_checkpoint, save_atomic
from utils.engine import NonFiniteLoss, evaluate, train_one_epoch
from utils.pruning import CONV_TYPES, masked_convs, prune_model
from utils.rearrange import apply_permutations_, rearrangement_orders
from utils.report import format_report, sparsity_report
from utils.runlog import RunLog, setup_logging, write_config
from utils.schedule import build_scheduler

log = logging.getLogger("imagenet")


class UsageError(ValueError):
    """Bad input that argparse cannot see (files, devices, class counts): one line, exit 2."""


def _at_least(minimum, kind=int):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} ≥ {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__} ≥ {minimum}, got {text!r}")
        return value
    return parse


def _rate(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a pruning rate in [0, 1), got {text!r}")
    return value


def get_args_parser():
    p = argparse.ArgumentParser(description="1×N block pruning of MobileNets: prune, fine-tune, evaluate.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = p.add_argument_group("run")
    run.add_argument("--gpus", type=int, nargs="+", default=None,
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
                     help="dense weights to prune: the authors' formats, ours, or torchvision's mobilenet_v2")
    run.add_argument("--evaluate", "--pruned_model", dest="evaluate", default=None, metavar="PATH",
                     help="evaluate this pruned checkpoint (the authors' or ours) on val and stop")
    run.add_argument("--seed", type=int, default=0, help="seed for weights, data order and random masks")
    run.add_argument("--workers", type=_at_least(0), default=4, help="data loading processes")
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
    model.add_argument("--pr_target", type=_rate, default=0.5, help="pruning rate of every prunable layer")
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
    train.add_argument("--val_images", type=_at_least(1), default=None, help="use a fixed random subset of val images")
    train.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="Adam uses no weight decay")
    train.add_argument("--lr", type=float, default=0.01, help="base learning rate")
    train.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    train.add_argument("--nesterov", action="store_true", help="Nesterov momentum")
    train.add_argument("--weight_decay", type=float, default=4e-5, help="SGD weight decay on all trainable parameters")
    train.add_argument("--label_smoothing", type=float, default=0.0, help="cross-entropy label smoothing")
    train.add_argument("--lr_type", "--lr_policy", dest="lr_type", choices=["cos", "step", "exp", "fixed"],
                       default="cos", help="learning-rate policy after warm-up")
    train.add_argument("--warmup_epochs", type=_at_least(0), default=5, help="linear per-iteration warm-up epochs")
    train.add_argument("--lr_decay_freq", type=_at_least(1), default=30, help="'step': ×0.1 every this many epochs")
    train.add_argument("--lr_decay_step", type=int, nargs="+", default=None,
                       help="'step': ×0.1 at these epochs instead of every --lr_decay_freq")
    return p


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


def rng_states():
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_states(states):
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_optimizer(model, args):
    """Only trainable parameters: pruning froze the masked convs' biases, as the authors do."""
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "adam":
        return torch.optim.Adam(params, lr=args.lr)
    return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                           nesterov=args.nesterov)


class Run:
    """The pieces one run shares between its phases (so functions take one object, not twenty)."""

    def __init__(self, args, device, model, train_loader, val_loader, runlog, ctx=distributed.Context()):
        self.args, self.device, self.model, self.ctx = args, device, model, ctx
        self.train_loader, self.val_loader, self.runlog = train_loader, val_loader, runlog
        self.checkpoint_dir = Path(args.job_dir) / "checkpoint"
        self.permutations = {}
        self.last_metrics = None
        self.scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")

    def evaluate(self, phase, epoch):
        metrics = evaluate(self.model, self.val_loader, self.device, self.args.amp, self.args.channels_last)
        self.runlog.record(phase, epoch, metrics)
        self.last_metrics = metrics
        log.info("%s (epoch %d): loss %.4f  top1 %.2f  top5 %.2f  (%d images)", phase, epoch,
                 metrics["loss"], metrics["top1"], metrics["top5"], metrics["images"])
        return metrics

    def train(self, phase, epochs, start_epoch=0, optimizer_state=None, best=None):
        """Train `epochs` epochs, evaluating after each; fine-tuning also saves checkpoints."""
        args = self.args
        schedule_args = argparse.Namespace(**{**vars(args), "num_epochs": epochs})
        optimizer = build_optimizer(self.model, args)
        scheduler = build_scheduler(optimizer, len(self.train_loader), schedule_args)
        if optimizer_state is not None:
            optimizer.load_state_dict(optimizer_state["optimizer"])
            scheduler.load_state_dict(optimizer_state["scheduler"])
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        best = best or {"top1": 0.0, "top5": 0.0}
        train_model = distributed.wrap(self.model, self.device, args.sync_bn)  # DDP, or the model itself
        for epoch in range(start_epoch, epochs):
            set_epoch(self.train_loader, epoch)
            train_metrics = train_one_epoch(train_model, self.train_loader, criterion, optimizer, scheduler,
                                            self.device, epoch, args.amp, self.scaler if args.amp == "fp16" else None,
                                            args.channels_last)
            distributed.broadcast_buffers(self.model)
            self.runlog.record(f"{phase}_train", epoch + 1, train_metrics)
            metrics = self.evaluate(phase, epoch + 1)
            is_best = metrics["top5"] > best["top5"]
            if is_best:
                best = {"top1": metrics["top1"], "top5": metrics["top5"]}
            if phase == "finetune":
                self.save(epoch + 1, best, optimizer, scheduler, is_best)
        distributed.write_state_digest(self.model, self.ctx)
        return best

    def save(self, epoch, best, optimizer=None, scheduler=None, is_best=False):
        if not self.ctx.is_main:
            return
        args = self.args
        generator = getattr(self.train_loader, "generator", None)  # DALI has its own
        checkpoint = {
            "state_dict": self.model.state_dict(), "best_acc": best["top5"], "best_top1": best["top1"],
            "optimizer": optimizer.state_dict() if optimizer else {}, "epoch": epoch,
            "scheduler": scheduler.state_dict() if scheduler else None,
            "arch": args.arch, "conv_type": args.conv_type, "N": args.N, "pr_target": args.pr_target,
            "num_classes": self.model.classifier[-1].out_channels, "permutations": self.permutations,
            "args": vars(args), "rng": rng_states(),
            "train_generator": generator.get_state() if generator is not None else None,
        }
        save_atomic(checkpoint, self.checkpoint_dir / "model_last.pt")
        if is_best:
            save_atomic(checkpoint, self.checkpoint_dir / "model_best.pt")

    def prune(self):
        args = self.args
        orders = rearrangement_orders(self.model) if args.rearrange else None
        generator = torch.Generator().manual_seed(args.seed)
        prune_model(self.model, args.pr_target, args.N, full=args.full, orders=orders, generator=generator)
        if orders:
            self.permutations = apply_permutations_(self.model, orders)
        rows, totals = sparsity_report(self.model, args.N, args.img_size)
        report = format_report(rows, totals)
        if self.ctx.is_main:
            (Path(args.job_dir) / "sparsity.txt").write_text(report + "\n")
        log.info("sparsity after pruning (%s, N=%d, rate %.2f%s):\n%s", args.conv_type, args.N, args.pr_target,
                 ", rearranged" if args.rearrange else "", report)
        self.runlog.record("sparsity", 0, {"prunable_sparsity": 1 - totals["prunable_kept"] / totals["prunable_weights"],
                                           "macs_kept": totals["macs_kept"], "params_kept": totals["params_kept"]})


def prepare_job_dir(args, create=True):
    job_dir = Path(args.job_dir)
    last = job_dir / "checkpoint" / "model_last.pt"
    if args.resume and not last.is_file():
        raise UsageError(f"--resume: {last} does not exist (nothing to resume in --job_dir {job_dir})")
    if not args.resume and not args.evaluate and last.is_file():
        raise UsageError(f"--job_dir {job_dir} already holds {last}: pass --resume to continue it, "
                         "or choose another --job_dir")
    if not create:  # under torchrun rank 0 alone creates and writes the job dir
        return job_dir
    try:
        (job_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
        probe = job_dir / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UsageError(f"--job_dir {job_dir}: not writable ({error.strerror})") from None
    return job_dir


def main(args):
    if args.use_dali and args.data_path is None:
        raise UsageError("--use_dali reads image files: pass --data_path (the embedded Fashion-MNIST set has none)")
    if args.use_dali and not dali.available():
        raise UsageError(f"--use_dali: NVIDIA DALI is not installed; install it with: {dali.INSTALL}")
    ctx = distributed.context_from_env()
    device = select_device(args, ctx)
    if args.amp == "fp16" and device.type != "cuda":
        raise UsageError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")
    if args.train_batch_size % ctx.world_size:
        raise UsageError(f"--train_batch_size {args.train_batch_size} is the global batch: make it a multiple "
                         f"of the {ctx.world_size} torchrun processes")
    if args.sync_bn and ctx.world_size > 1 and device.type != "cuda":
        raise UsageError("--sync_bn needs CUDA (torch's SyncBatchNorm does not run on the CPU)")
    args.img_size = args.img_size or (224 if args.data_path else 32)
    job_dir = prepare_job_dir(args, create=ctx.is_main)
    distributed.setup(ctx, device)  # the process group; a no-op for a single process
    setup_logging(job_dir, rank=ctx.rank)
    if ctx.is_main:
        write_config(job_dir, args)
    # The same seed on every rank: identical initial weights and identical (random) masks.
    seed_everything(args.seed)

    source_flag = "--evaluate" if args.evaluate else "--resume" if args.resume else "--pretrained_model"
    source_path = (args.evaluate or (job_dir / "checkpoint" / "model_last.pt" if args.resume else None)
                   or args.pretrained_model)
    checkpoint = read_checkpoint(source_path, source_flag) if source_path else None
    source = f"{source_flag} {source_path}"
    train_loader, val_loader, data_classes = build_loaders(args, need_train=not args.evaluate, rank=ctx.rank,
                                                           world_size=ctx.world_size, device=device)
    num_classes = (num_classes_in(checkpoint, source) if checkpoint is not None
                   else args.num_classes or (1000 if args.data_path else data_classes))
    if data_classes > num_classes:
        raise UsageError(f"--data_path {args.data_path}: {data_classes} classes, but the model has {num_classes} "
                         "(pass --num_classes, or a checkpoint with as many classes)")

    model = models.get_model(args.arch, conv_type=args.conv_type, num_classes=num_classes)
    runlog = RunLog(job_dir, enabled=ctx.is_main)
    log.info("%s, %s, %d classes, on %s%s", args.arch, args.conv_type, num_classes, device,
             f" (rank 0 of {ctx.world_size} processes)" if ctx.distributed else "")

    if args.evaluate:
        load_pruned(model, checkpoint, source)
        run = Run(args, device, _to_device(model, args, device), None, val_loader, runlog, ctx)
        metrics = run.evaluate("evaluate", checkpoint.get("epoch", 0) if isinstance(checkpoint, dict) else 0)
        runlog.close()
        return metrics

    if args.resume:
        load_pruned(model, checkpoint, source)
        for _, conv in masked_convs(model):  # pruning froze them; keep the optimizer's parameter set
            conv.bias.requires_grad_(False)
        run = Run(args, device, _to_device(model, args, device), train_loader, val_loader, runlog, ctx)
        run.permutations = checkpoint.get("permutations", {})
        restore_rng_states(checkpoint["rng"])
        if checkpoint.get("train_generator") is not None and getattr(train_loader, "generator", None) is not None:
            train_loader.generator.set_state(checkpoint["train_generator"])
        log.info("resuming after epoch %d from %s", checkpoint["epoch"], source_path)
        best = run.train("finetune", args.num_epochs, start_epoch=checkpoint["epoch"], optimizer_state=checkpoint,
                         best={"top1": checkpoint["best_top1"], "top5": checkpoint["best_acc"]})
        runlog.close()
        return best

    if checkpoint is not None:
        load_pretrained(model, checkpoint, source)
        log.info("loaded dense weights from %s", source_path)
    run = Run(args, device, _to_device(model, args, device), train_loader, val_loader, runlog, ctx)
    if args.pretrain_epochs:
        log.info("dense pre-training for %d epochs", args.pretrain_epochs)
        run.train("pretrain", args.pretrain_epochs)
        if ctx.is_main:
            save_atomic({"state_dict": model.state_dict(), "arch": args.arch}, run.checkpoint_dir / "dense.pt")
        run.runlog.record("dense", 0, run.last_metrics)  # the last pre-training evaluation is the dense one
    else:
        if checkpoint is None:
            log.info("no --pretrained_model: pruning the randomly initialised model")
        run.evaluate("dense", 0)
    run.prune()
    pruned = run.evaluate("pruned", 0)
    best = {"top1": pruned["top1"], "top5": pruned["top5"]}
    if args.num_epochs == 0:
        run.save(0, best, is_best=True)
    else:
        best = run.train("finetune", args.num_epochs)
    log.info("evaluations of this run:\n%s", runlog.summary())
    log.info("best top-1 %.2f, top-5 %.2f; checkpoints in %s", best["top1"], best["top5"], run.checkpoint_dir)
    runlog.close()
    return best


def _to_device(model, args, device):
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if args.channels_last else model


if __name__ == "__main__":
    arguments = get_args_parser().parse_args()
    try:
        main(arguments)
    except (UsageError, CheckpointError, FileNotFoundError, NonFiniteLoss) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
