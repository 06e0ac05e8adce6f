"""Prune a MobileNet with the 1×N block pattern, fine-tune it and evaluate it.

    python imagenet.py --arch mobilenet_v2 --N 4 --pr_target 0.5 --rearrange --data_path DATA ...

Without --data_path the embedded Fashion-MNIST set is used, so the whole pipeline runs anywhere.
"""
import argparse
import logging
import os
import random
import signal
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

import models
from data import build_loaders
from data.sampling import BadImage
from utils.checkpoint import CheckpointError, load_pretrained, load_pruned, num_classes_in, read_checkpoint, save_atomic
from utils.engine import EpochProgress, NonFiniteLoss, Stepper, evaluate, train_one_epoch
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


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse prints the whole usage before an error; one line is easier to read in a log."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def get_args_parser():
    p = OneLineErrorParser(description="1×N block pruning of MobileNets: prune, fine-tune, evaluate.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run = p.add_argument_group("run")
    run.add_argument("--gpus", type=int, nargs="+", default=None,
                     help="GPU id to use (default: the first GPU, or the CPU when there is none; "
                          "without CUDA a warning is printed and the CPU is used)")
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
    run.add_argument("--use_dali", action="store_true", help="load ImageFolder data with NVIDIA DALI")

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
    train.add_argument("--train_batch_size", type=_at_least(1), default=256, help="training batch size")
    train.add_argument("--eval_batch_size", type=_at_least(1), default=256, help="evaluation batch size")
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


def select_device(gpus):
    if not torch.cuda.is_available():
        if gpus is not None:
            warnings.warn("--gpus given but no CUDA device is available: running on the CPU", stacklevel=2)
        return torch.device("cpu")
    gpus = gpus or [0]
    if len(gpus) > 1:
        raise UsageError(f"--gpus {' '.join(map(str, gpus))}: one process drives one GPU; launch "
                         f"`torchrun --nproc_per_node={len(gpus)} imagenet.py ...` instead")
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

    def __init__(self, args, device, model, train_loader, val_loader, runlog):
        self.args, self.device, self.model = args, device, model
        self.train_loader, self.val_loader, self.runlog = train_loader, val_loader, runlog
        self.checkpoint_dir = Path(args.job_dir) / "checkpoint"
        self.permutations = {}
        self.last_metrics = None
        self.stop_requested = False

    def evaluate(self, phase, epoch):
        metrics = evaluate(self.model, self.val_loader, self.device, self.args.amp, self.args.channels_last)
        self.runlog.record(phase, epoch, metrics)
        self.last_metrics = metrics
        log.info("%s (epoch %d): loss %.4f  top1 %.2f  top5 %.2f  (%d images)", phase, epoch,
                 metrics["loss"], metrics["top1"], metrics["top5"], metrics["images"])
        return metrics

    def stepper(self, epochs):
        args = self.args
        optimizer = build_optimizer(self.model, args)
        schedule_args = argparse.Namespace(**{**vars(args), "num_epochs": epochs})
        return Stepper(self.model, torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing), optimizer,
                       build_scheduler(optimizer, len(self.train_loader), schedule_args), self.device, args.amp,
                       torch.amp.GradScaler(self.device.type) if args.amp == "fp16" else None, args.channels_last)

    def train(self, phase, epochs, stepper=None, progress=None, best=None):
        """Train up to `epochs`, evaluating after each; fine-tuning also saves checkpoints.

        Returns the best metrics, or None when a SIGTERM stopped it (after saving, if fine-tuning).
        """
        stepper = stepper or self.stepper(epochs)
        progress = progress or EpochProgress(0)
        best = best or {"top1": 0.0, "top5": 0.0}
        while progress.epoch < epochs:
            if not train_one_epoch(stepper, self.train_loader, progress, should_stop=lambda: self.stop_requested):
                log.info("stopping at epoch %d, step %d (SIGTERM)%s", progress.epoch, progress.step,
                         "; continue with --resume" if phase == "finetune" else "")
                if phase == "finetune":
                    self.save(stepper, progress, best)
                return None
            epoch = progress.epoch + 1
            self.runlog.record(f"{phase}_train", epoch, {**progress.metrics(), "lr": stepper.optimizer.param_groups[0]["lr"]})
            metrics = self.evaluate(phase, epoch)
            is_best = metrics["top5"] > best["top5"]
            if is_best:
                best = {"top1": metrics["top1"], "top5": metrics["top5"]}
            progress = EpochProgress(epoch)
            if phase == "finetune":
                self.save(stepper, progress, best, is_best)
        return best

    def save(self, stepper, progress, best, is_best=False):
        """model_last.pt (and model_best.pt): the authors' keys plus all that an exact resume needs."""
        args = self.args
        checkpoint = {
            "state_dict": self.model.state_dict(), "best_acc": best["top5"], "best_top1": best["top1"],
            "optimizer": stepper.optimizer.state_dict() if stepper else {}, "epoch": progress.epoch,
            "progress": progress.state_dict() if progress.step else None,   # set when saved mid-epoch
            "scheduler": stepper.scheduler.state_dict() if stepper else None,
            "scaler": stepper.scaler.state_dict() if stepper and stepper.scaler else None,
            "arch": args.arch, "conv_type": args.conv_type, "N": args.N, "pr_target": args.pr_target,
            "num_classes": self.model.classifier[-1].out_channels, "permutations": self.permutations,
            "args": vars(args), "rng": rng_states(),
        }
        save_atomic(checkpoint, self.checkpoint_dir / "model_last.pt")
        if is_best:
            save_atomic(checkpoint, self.checkpoint_dir / "model_best.pt")

    def resume(self, checkpoint):
        """Continue fine-tuning from a model_last.pt, mid-epoch if it was saved mid-epoch."""
        self.permutations = checkpoint.get("permutations", {})
        stepper = self.stepper(self.args.num_epochs)
        stepper.optimizer.load_state_dict(checkpoint["optimizer"])
        stepper.scheduler.load_state_dict(checkpoint["scheduler"])
        if stepper.scaler is not None and checkpoint.get("scaler"):
            stepper.scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_states(checkpoint["rng"])
        progress = (EpochProgress.from_state_dict(checkpoint["progress"]) if checkpoint.get("progress")
                    else EpochProgress(checkpoint["epoch"]))
        log.info("resuming at epoch %d, step %d", progress.epoch, progress.step)
        return self.train("finetune", self.args.num_epochs, stepper, progress,
                          best={"top1": checkpoint["best_top1"], "top5": checkpoint["best_acc"]})

    def prune(self):
        args = self.args
        orders = rearrangement_orders(self.model) if args.rearrange else None
        generator = torch.Generator().manual_seed(args.seed)
        prune_model(self.model, args.pr_target, args.N, full=args.full, orders=orders, generator=generator)
        if orders:
            self.permutations = apply_permutations_(self.model, orders)
        rows, totals = sparsity_report(self.model, args.N, args.img_size)
        report = format_report(rows, totals)
        (Path(args.job_dir) / "sparsity.txt").write_text(report + "\n")
        log.info("sparsity after pruning (%s, N=%d, rate %.2f%s):\n%s", args.conv_type, args.N, args.pr_target,
                 ", rearranged" if args.rearrange else "", report)
        self.runlog.record("sparsity", 0, {"prunable_sparsity": 1 - totals["prunable_kept"] / totals["prunable_weights"],
                                           "macs_kept": totals["macs_kept"], "params_kept": totals["params_kept"]})


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
    if existing is not None and not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        raise UsageError(f"--job_dir {job_dir}: {existing} is not a writable folder")


def open_job_dir(args):
    job_dir = Path(args.job_dir)
    (job_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
    setup_logging(job_dir)
    for partial in (job_dir / "checkpoint").glob(".*.tmp"):  # left by a save that was killed
        log.info("removing %s, a partial checkpoint from an interrupted save", partial)
        partial.unlink()
    if not (job_dir / "config.txt").exists():  # a resumed or evaluated run keeps the training config
        write_config(job_dir, args)
    return RunLog(job_dir)


def main(args):
    """Validate everything that can be wrong (device, checkpoint, data, class count) before
    writing to the job dir, so that bad input never overwrites or leaves anything there."""
    setup_logging(None)
    if args.use_dali:
        raise UsageError("--use_dali: the DALI loader is not available in this build; "
                         "omit --use_dali to use the torchvision loader")
    device = select_device(args.gpus)
    if args.amp == "fp16" and device.type != "cuda":
        raise UsageError("--amp fp16 needs a CUDA device; use --amp bf16 on the CPU")
    args.img_size = args.img_size or (224 if args.data_path else 32)
    check_job_dir(args)
    seed_everything(args.seed)

    source_flag = "--evaluate" if args.evaluate else "--resume" if args.resume else "--pretrained_model"
    source_path = (args.evaluate or (Path(args.job_dir) / "checkpoint" / "model_last.pt" if args.resume else None)
                   or args.pretrained_model)
    checkpoint = read_checkpoint(source_path, source_flag) if source_path else None
    source = f"{source_flag} {source_path}"
    train_loader, val_loader, data_classes = build_loaders(args, need_train=not args.evaluate)
    num_classes = (num_classes_in(checkpoint, source) if checkpoint is not None
                   else args.num_classes or (1000 if args.data_path else data_classes))
    if data_classes > num_classes:
        data = f"--data_path {args.data_path}" if args.data_path else "the embedded data set"
        raise UsageError(f"{data}: {data_classes} classes, but the model has {num_classes} "
                         "(pass --num_classes, or a checkpoint with as many classes)")
    model = models.get_model(args.arch, conv_type=args.conv_type, num_classes=num_classes)
    if checkpoint is None:
        pass
    elif args.evaluate or args.resume:
        load_pruned(model, checkpoint, source)
        for _, conv in masked_convs(model):  # pruning froze them; keep the optimizer's parameter set
            conv.bias.requires_grad_(False)
    else:
        load_pretrained(model, checkpoint, source)

    runlog = open_job_dir(args)
    log.info("%s, %s, %d classes, on %s%s", args.arch, args.conv_type, num_classes, device,
             f", weights from {source}" if checkpoint is not None else "")
    run = Run(args, device, _to_device(model, args, device), train_loader, val_loader, runlog)
    try:
        if args.evaluate:
            return run.evaluate("evaluate", checkpoint.get("epoch", 0) if isinstance(checkpoint, dict) else 0)
        with stop_on_sigterm(run):
            best = run.resume(checkpoint) if args.resume else prune_and_fine_tune(run, pretrained=checkpoint is not None)
        if best is not None:
            log.info("evaluations of this run:\n%s", runlog.summary())
            log.info("best top-1 %.2f, top-5 %.2f; checkpoints in %s", best["top1"], best["top5"], run.checkpoint_dir)
        return best
    finally:
        runlog.close()


def prune_and_fine_tune(run, pretrained):
    """The authors' order: (pre-train) → evaluate dense → prune → evaluate pruned → fine-tune."""
    args = run.args
    if args.pretrain_epochs:
        log.info("dense pre-training for %d epochs", args.pretrain_epochs)
        if run.train("pretrain", args.pretrain_epochs) is None:
            return None
        save_atomic({"state_dict": run.model.state_dict(), "arch": args.arch}, run.checkpoint_dir / "dense.pt")
        run.runlog.record("dense", 0, run.last_metrics)  # the last pre-training evaluation is the dense one
    else:
        if not pretrained:
            log.info("no --pretrained_model: pruning the randomly initialised model")
        run.evaluate("dense", 0)
    run.prune()
    pruned = run.evaluate("pruned", 0)
    best = {"top1": pruned["top1"], "top5": pruned["top5"]}
    if args.num_epochs == 0:
        run.save(None, EpochProgress(0), best, is_best=True)
        return best
    return run.train("finetune", args.num_epochs)


@contextmanager
def stop_on_sigterm(run):
    """SIGTERM (what schedulers send before pre-emption) stops training at the next step boundary."""
    def request_stop(signum, frame):
        log.info("SIGTERM received: saving at the next step boundary")
        run.stop_requested = True
    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _to_device(model, args, device):
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if args.channels_last else model


def _one_line(error):
    """DataLoader workers re-raise with the worker's traceback inside the message: keep its last line."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].split(": ", 1)[-1] if isinstance(error, BadImage) and len(lines) > 1 else str(error)


def cli(argv=None):
    """Parse, run, and turn expected failures into one line on stderr and exit code 2."""
    args = get_args_parser().parse_args(argv)
    try:
        main(args)
    except (UsageError, CheckpointError, FileNotFoundError, NonFiniteLoss, BadImage) as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
