"""The learning rate as a pure function of the step (SPEC §6), wrapped in torch's LambdaLR."""
import math

from torch.optim.lr_scheduler import LambdaLR


def lr_factor(step, steps_per_epoch, args):
    """Multiplier of `--lr` at global iteration `step` (0-based).

    Warm-up ramps linearly per iteration over `--warmup_epochs` (the authors' 5); after it the
    policy changes the rate once per epoch.
    """
    epoch, step_in_epoch = divmod(step, steps_per_epoch)
    warmup = args.warmup_epochs
    if epoch < warmup:
        return (1 + step_in_epoch + epoch * steps_per_epoch) / (warmup * steps_per_epoch)
    if args.lr_type == "cos":
        # max(1, …): the authors divide by (E − 5), which breaks for runs of ≤ 5 epochs.
        return 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / max(1, args.num_epochs - warmup)))
    if args.lr_type == "step":
        if args.lr_decay_step:  # explicit milestones
            return 0.1 ** sum(epoch >= milestone for milestone in args.lr_decay_step)
        return 0.1 ** (epoch // args.lr_decay_freq)
    if args.lr_type == "exp":
        return 0.96 ** epoch
    return 1.0  # fixed


def build_scheduler(optimizer, steps_per_epoch, args):
    """Stepped once per iteration; its state_dict carries the position for `--resume`."""
    return LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, args))
