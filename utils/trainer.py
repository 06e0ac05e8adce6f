"""One training run's phases: pre-train, prune, fine-tune, checkpoint, resume (used by imagenet.py)."""
import argparse
import logging
import random
import signal
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from utils import distributed
from utils.checkpoint import plain_args, save_atomic
from utils.distill import Distiller
from utils.engine import EpochProgress, Stepper, evaluate, train_one_epoch
from utils.gradual import GradualPruner, prunable_sparsity
from utils.pruning import masked_convs, prune_model
from utils.rearrange import apply_permutations_, rearrangement_orders
from utils.report import format_report, sparsity_report
from utils.schedule import build_scheduler

log = logging.getLogger("imagenet")


class Stopped(Exception):
    """A SIGTERM stopped training at a step all ranks agreed on, after model_last.pt was saved."""


def rng_states():
    """Every generator's state as tensors, numbers and tuples: what a weights-only load accepts."""
    name, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "position": position,
                      "has_gauss": has_gauss, "cached_gaussian": cached_gaussian},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng_states(states):
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state["name"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["position"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if torch.cuda.is_available() and states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def improves(metrics, best, metric="top5"):
    """Best = highest `metric` (--best_metric; the authors' is top-5), ties going to the other one
    (with 10 classes top-5 saturates near 100 %, and the first epoch to reach it would otherwise
    stay "best"). The first evaluation (best is None) is always best, so model_best.pt exists even
    when every one is 0 %."""
    other = "top1" if metric == "top5" else "top5"
    return best is None or (metrics[metric], metrics[other]) > (best[metric], best[other])


def default_best_metric(num_classes):
    """The authors' top-5 on ImageNet-sized problems; top-1 below 100 classes, where top-5 saturates."""
    return "top5" if num_classes >= 100 else "top1"


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
        self.gradual_orders = {}   # cubic schedule: rearrangement orders of layers not permuted physically
        self.distiller = None      # set for --distill (a teacher from a file, or the dense model at pruning)
        self.last_metrics = None
        self.stop_requested = False

    def evaluate(self, phase, epoch):
        metrics = evaluate(self.model, self.val_loader, self.device, self.args.amp, self.args.channels_last)
        self.runlog.record(phase, epoch, metrics)
        self.last_metrics = metrics
        log.info("%s (epoch %d): loss %.4f  top1 %.2f  top5 %.2f  (%d images)", phase, epoch,
                 metrics["loss"], metrics["top1"], metrics["top5"], metrics["images"])
        return metrics

    def stepper(self, epochs, finetune=False):
        """Fine-tuning steppers carry the distiller (--distill) and the cubic pruner (--prune_schedule)."""
        args = self.args
        optimizer = build_optimizer(self.model, args)
        schedule_args = argparse.Namespace(**{**vars(args), "num_epochs": epochs})
        train_model = distributed.wrap(self.model, self.device, args.sync_bn)  # DDP, or the model itself
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
        if finetune and self.distiller is not None:
            self.distiller.criterion = criterion
        return Stepper(train_model, criterion, optimizer,
                       build_scheduler(optimizer, len(self.train_loader), schedule_args), self.device, args.amp,
                       torch.amp.GradScaler(self.device.type, enabled=args.amp == "fp16"), args.channels_last,
                       distiller=self.distiller if finetune else None,
                       pruner=self.gradual_pruner() if finetune and args.prune_schedule == "cubic" else None)

    def gradual_pruner(self):
        args, steps = self.args, len(self.train_loader)
        return GradualPruner(self.model, args.pr_target, args.N, round(args.prune_start_epoch * steps),
                             round(prune_end_epoch(args) * steps), args.prune_every, full=args.full,
                             orders=self.gradual_orders, seed=args.seed, on_update=self.record_prune_update)

    def record_prune_update(self, step, rate):
        """The ramp in metrics.jsonl and TensorBoard (x = optimizer step); the report when it ends."""
        sparsity = prunable_sparsity(self.model, self.args.full)
        self.runlog.record("prune_update", step // len(self.train_loader), {"rate": rate, "sparsity": sparsity},
                           step=step)
        log.info("step %d: masks updated at rate %.4f (pruned fraction %.4f)", step, rate, sparsity)
        if rate == self.args.pr_target:
            self.report_sparsity()

    def train(self, phase, epochs, stepper=None, progress=None, best=None):
        """Train up to `epochs`, evaluating after each and saving model_last.pt (and, when
        fine-tuning, model_best.pt). Returns the best fine-tuning metrics (None before any);
        raises Stopped when a SIGTERM stopped it (after saving: mid-epoch at a log point, or at
        the end of an epoch that more would follow).
        """
        stepper = stepper or self.stepper(epochs, finetune=phase == "finetune")
        progress = progress or EpochProgress(0)
        while progress.epoch < epochs:
            finished = train_one_epoch(stepper, self.train_loader, progress, lambda: self.stop_requested,
                                       self.args.print_freq)
            self.reduce_sums(progress)
            if not finished:
                self.save(phase, stepper, progress, best)
                raise Stopped(f"stopping at {phase} epoch {progress.epoch}, step {progress.step} (SIGTERM); "
                              "continue with --resume")
            # DDP copies rank 0's buffers at the start of each forward, so after the last step each
            # rank holds BN statistics of its own batch: make them rank 0's before evaluating and saving.
            distributed.broadcast_buffers(self.model)
            epoch = progress.epoch + 1
            self.runlog.record(f"{phase}_train", epoch, {**progress.metrics(), "lr": stepper.optimizer.param_groups[0]["lr"],
                                                         **self.teacher_cost(stepper, progress)})
            metrics = self.evaluate(phase, epoch)
            is_best = phase == "finetune" and improves(metrics, best, self.args.best_metric)
            if is_best:
                best = {"top1": metrics["top1"], "top5": metrics["top5"], "epoch": epoch}
            progress = EpochProgress(epoch)
            self.save(phase, stepper, progress, best, is_best)
            # A SIGTERM during the last step or the evaluation: stop before the next epoch. (After a
            # phase's last epoch the next phase's first log point sees it.)
            if epoch < epochs and distributed.any_rank(self.stop_requested, self.device):
                raise Stopped(f"stopping after {phase} epoch {epoch} (SIGTERM); continue with --resume")
        distributed.write_state_digest(self.model, self.ctx)
        return best

    def teacher_cost(self, stepper, progress):
        """Distillation: the teacher's forward time this epoch (this process), logged and recorded."""
        if stepper.distiller is None:
            return {}
        seconds = stepper.distiller.take_seconds()
        log.info("distillation: teacher forward %.1f s of the epoch's %.1f s (%.0f %%)", seconds, progress.seconds,
                 100 * seconds / max(progress.seconds, 1e-9))
        return {"teacher_seconds": seconds}

    def reduce_sums(self, progress):
        """Training sums over every rank's images; under DDP rank 0 alone keeps them (for a resume)."""
        keys = list(progress.sums)
        totals = distributed.all_reduce_sum([progress.sums[k] for k in keys], self.device)
        progress.sums = {k: (type(progress.sums[k])(v) if self.ctx.is_main else 0) for k, v in zip(keys, totals)}

    def save(self, phase, stepper, progress, best, is_best=False):
        """model_last.pt (and model_best.pt): the authors' keys plus all that an exact resume needs.

        `phase` is "pretrain" (dense training before pruning) or "finetune"; --resume continues it.
        """
        if not self.ctx.is_main:
            return
        args = self.args
        checkpoint = {
            "state_dict": self.model.state_dict(), "best_acc": best["top5"] if best else 0.0,
            "best_top1": best["top1"] if best else 0.0, "best_epoch": best["epoch"] if best else 0,
            "best_metric": args.best_metric, "gradual_orders": self.gradual_orders, "phase": phase,
            "optimizer": stepper.optimizer.state_dict() if stepper else {}, "epoch": progress.epoch,
            "progress": progress.state_dict() if progress.step else None,   # set when saved mid-epoch
            "scheduler": stepper.scheduler.state_dict() if stepper else None,
            "scaler": stepper.scaler.state_dict() if stepper and stepper.scaler else None,
            "arch": args.arch, "variant": getattr(self.model, "variant", "authors"),
            "conv_type": args.conv_type, "N": args.N, "pr_target": args.pr_target,
            "num_classes": masked_convs(self.model)[-1][1].out_channels, "permutations": self.permutations,
            "args": plain_args(args), "rng": rng_states(),
        }
        save_atomic(checkpoint, self.checkpoint_dir / "model_last.pt")
        if is_best:
            save_atomic(checkpoint, self.checkpoint_dir / "model_best.pt")

    def resume(self, checkpoint):
        """Continue from a model_last.pt, mid-epoch if it was saved mid-epoch: fine-tuning, or
        pre-training followed by pruning and fine-tuning.

        A `--num_epochs 0` checkpoint holds no optimizer or schedule (no step was taken): fine-tuning
        starts afresh from its weights and RNG states, as it would have in one uninterrupted run.
        """
        self.permutations = checkpoint.get("permutations", {})
        self.gradual_orders = checkpoint.get("gradual_orders", {})
        phase = checkpoint.get("phase", "finetune")  # checkpoints older than pre-training saves
        epochs = self.args.pretrain_epochs if phase == "pretrain" else self.args.num_epochs
        stepper = self.stepper(epochs, finetune=phase == "finetune")
        training_began = bool(checkpoint.get("optimizer"))
        if training_began:
            stepper.optimizer.load_state_dict(checkpoint["optimizer"])
            stepper.scheduler.load_state_dict(checkpoint["scheduler"])
        if stepper.scaler is not None and checkpoint.get("scaler"):
            stepper.scaler.load_state_dict(checkpoint["scaler"])
        restore_rng_states(checkpoint["rng"])
        progress = (EpochProgress.from_state_dict(checkpoint["progress"]) if checkpoint.get("progress")
                    else EpochProgress(checkpoint["epoch"]))
        if not self.ctx.is_main:  # the saved sums are all ranks' together: rank 0 carries them on
            progress.sums = EpochProgress(0).sums
        log.info("resuming %s at epoch %d, step %d", phase, progress.epoch, progress.step)
        if phase == "pretrain":
            return prune_and_fine_tune(self, pretrained=False, pretraining=(stepper, progress))
        # Best of fine-tuning, as in an uninterrupted run: with no fine-tuning evaluation yet (stopped
        # before the first, or a --num_epochs 0 checkpoint), the next evaluation is the best.
        evaluated = training_began and checkpoint["epoch"] > 0
        best = ({"top1": checkpoint["best_top1"], "top5": checkpoint["best_acc"], "epoch": checkpoint.get("best_epoch", 0)}
                if evaluated else None)
        return self.train("finetune", self.args.num_epochs, stepper, progress, best=best)

    def prune(self):
        args = self.args
        orders = rearrangement_orders(self.model) if args.rearrange else None
        generator = torch.Generator().manual_seed(args.seed)
        prune_model(self.model, args.pr_target, args.N, full=args.full, orders=orders, generator=generator)
        if orders:
            self.permutations = apply_permutations_(self.model, orders)
        self.report_sparsity()

    def start_gradual(self):
        """Cubic schedule: rearrange now (the order comes from the dense weights), prune later, in steps."""
        if self.args.rearrange:
            orders = rearrangement_orders(self.model)
            self.permutations = apply_permutations_(self.model, orders)
            self.gradual_orders = {name: order for name, order in orders.items() if name not in self.permutations}
        for _, conv in masked_convs(self.model):  # frozen as at one-shot pruning, before the optimizer exists
            if conv.bias is not None:
                conv.bias.requires_grad_(False)

    def report_sparsity(self):
        args = self.args
        rows, totals = sparsity_report(self.model, args.N, args.img_size)
        report = format_report(rows, totals)
        if self.ctx.is_main:
            (Path(args.job_dir) / "sparsity.txt").write_text(report + "\n")
        log.info("sparsity after pruning (%s, N=%d, rate %.2f%s):\n%s", args.conv_type, args.N, args.pr_target,
                 ", rearranged" if args.rearrange else "", report)
        self.runlog.record("sparsity", 0, {"prunable_sparsity": 1 - totals["prunable_kept"] / totals["prunable_weights"],
                                           "macs_kept": totals["macs_kept"], "params_kept": totals["params_kept"]})


def prune_and_fine_tune(run, pretrained, pretraining=()):
    """The authors' order: (pre-train) → evaluate dense → prune → evaluate pruned → fine-tune.

    `pretraining`: the (stepper, progress) of a resumed pre-training.
    """
    args = run.args
    if args.pretrain_epochs:
        log.info("dense pre-training for %d epochs", args.pretrain_epochs)
        run.train("pretrain", args.pretrain_epochs, *pretraining)
        if run.ctx.is_main:
            save_atomic({"state_dict": run.model.state_dict(), "arch": args.arch}, run.checkpoint_dir / "dense.pt")
        if run.last_metrics is None:  # resumed from the save after the last pre-training epoch
            run.evaluate("dense", 0)
        else:
            run.runlog.record("dense", 0, run.last_metrics)  # the last pre-training evaluation is the dense one
    else:
        if not pretrained:
            log.info("no --pretrained_model: pruning the randomly initialised model")
        if not args.skip_initial_eval:
            run.evaluate("dense", 0)
    if args.distill and run.distiller is None:  # no --teacher: the dense model, before pruning
        run.distiller = Distiller.from_student(run.model, args.kd_alpha, args.kd_temperature, None)
    if args.prune_schedule == "cubic":  # pruning happens during fine-tuning; nothing to evaluate yet
        run.start_gradual()
        return run.train("finetune", args.num_epochs)
    run.prune()
    if args.num_epochs == 0:
        pruned = run.evaluate("pruned", 0)
        best = {"top1": pruned["top1"], "top5": pruned["top5"], "epoch": 0}
        run.save("finetune", None, EpochProgress(0), best, is_best=True)
        return best
    if not args.skip_initial_eval:
        run.evaluate("pruned", 0)
    return run.train("finetune", args.num_epochs)


def prune_end_epoch(args):
    """--prune_end_epoch, by default half of the fine-tuning epochs."""
    return args.num_epochs / 2 if args.prune_end_epoch is None else args.prune_end_epoch


@contextmanager
def stop_on_sigterm(run):
    """SIGTERM (what schedulers send before pre-emption) stops training at the next log point."""
    def request_stop(signum, frame):
        log.info("SIGTERM received: saving at the next log point")
        run.stop_requested = True
    previous = signal.signal(signal.SIGTERM, request_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
