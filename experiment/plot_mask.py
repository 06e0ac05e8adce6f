"""Draw one layer's 1×N mask before and after physical filter rearrangement, side by side.

    python experiment/plot_mask.py --arch mobilenet_v2 --layer features.2.conv.0 --N 4 \
        --pr_target 0.5 --out mask.png [--pretrained PATH]

Left: the mask as the authors store it (blocks formed over the ℓ1-sorted filters, mapped back
to the original order: the kept blocks are scattered). Right: the same mask after our
permutation moved the filters into that order (each kept block is N adjacent output channels).
Output channels run along x and input channels along y, so a 1×N block is a horizontal run.
"""
import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable as a script from anywhere

from models import get_model  # noqa: E402
from utils.checkpoint import load_pretrained, read_checkpoint  # noqa: E402
from utils.pruning import prune_model  # noqa: E402
from utils.rearrange import apply_permutations_, rearrangement_orders  # noqa: E402


def rearranged_masks(model, layer, N, rate):
    """Prune `model` with rearrangement; the (C_out, C_in) keep-mask of `layer` before and after
    the physical permutation (any kernel size: a block covers the whole kernel)."""
    orders = rearrangement_orders(model)
    if layer not in orders:
        raise ValueError(f"{layer!r} is not a rearranged layer; those are: {', '.join(orders)}")
    conv = dict(model.named_modules())[layer]
    prune_model(model, rate, N, orders=orders)
    before = conv.mask[:, :, 0, 0].bool().clone()
    if layer not in apply_permutations_(model, orders):
        raise ValueError(f"{layer!r} is not moved (the logits conv, or a conv type whose mask ignores the order)")
    return before, conv.mask[:, :, 0, 0].bool().clone()


def plot_masks(before, after, N, title, out):
    """Write a PNG with the two (C_out, C_in) keep-masks side by side."""
    c_out, c_in = before.shape
    width = min(16.0, 3.0 + 2 * c_out / 16)
    fig, axes = plt.subplots(1, 2, figsize=(width, 1.5 + 2 * max(2.0, c_in / 12)), sharey=True)
    panels = [(before, "authors: blocks over the ℓ1-sorted order, mask mapped back"),
              (after, "ours: filters physically sorted, blocks contiguous")]
    for ax, (mask, label) in zip(axes, panels):
        # (C_in, C_out) image: kept = dark, pruned = white.
        ax.imshow(mask.t().float().numpy(), cmap="Greys", vmin=0, vmax=1, interpolation="nearest",
                  aspect="auto")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("output channel (storage order)")
        for x in range(N, c_out, N):  # block boundaries
            ax.axvline(x - 0.5, color="tab:red", linewidth=0.5, alpha=0.6)
    axes[0].set_ylabel("input channel")
    fig.suptitle(f"{title}: black = kept ({after.float().mean():.0%}), white = pruned; 1×{N} blocks, "
                 f"red lines every {N} output channels", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def get_args_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--layer", default="features.2.conv.0")
    parser.add_argument("--N", type=int, default=4)
    parser.add_argument("--pr_target", type=float, default=0.5)
    parser.add_argument("--out", default="mask.png")
    parser.add_argument("--pretrained", help="pretrained weights; random weights when omitted")
    parser.add_argument("--width_mult", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(args):
    torch.manual_seed(args.seed)
    model = get_model(args.arch, width_mult=args.width_mult)
    if args.pretrained:
        # weights-only, like every load: a downloaded file never runs code
        load_pretrained(model, read_checkpoint(args.pretrained, "--pretrained"), f"--pretrained {args.pretrained}")
    before, after = rearranged_masks(model, args.layer, args.N, args.pr_target)
    plot_masks(before, after, args.N, f"{args.arch} {args.layer}", args.out)
    return args.out


if __name__ == "__main__":
    print(main(get_args_parser().parse_args()))
