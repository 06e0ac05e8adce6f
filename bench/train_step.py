"""Masked vs dense training step on the CPU (the cost of the 1×N masks during fine-tuning).

    python bench/train_step.py [--arch mobilenet_v2] [--batch 32] [--img_size 224] [--threads 2]

The same model is timed with `DenseConv` layers (no mask applied: plain conv) and with pruned
`BlockL1Conv` layers (forward uses mask ⊙ weight), alternating steps in one process; prints the
medians and their ratio. The prune + rearrange time of a whole model is `bench/bench_rearrange.py`.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import get_model  # noqa: E402
from utils.pruning import DenseConv, masked_convs, prune_model  # noqa: E402


class PlainConv(DenseConv):
    """The dense baseline: a conv with no mask multiplication at all."""

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def make(arch, masked):
    model = get_model(arch, conv_type="BlockL1Conv")
    if masked:
        prune_model(model, 0.5, 4)
    else:
        for name, conv in masked_convs(model):
            conv.__class__ = PlainConv
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                weight_decay=4e-5)
    return model.train(), optimizer


def step(model, optimizer, images, target):
    start = time.perf_counter()
    loss = F.cross_entropy(model(images), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--img_size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.randn(args.batch, 3, args.img_size, args.img_size)
    target = torch.randint(0, 1000, (args.batch,))
    runs = {"dense": make(args.arch, False), "masked": make(args.arch, True)}
    times = {name: [] for name in runs}
    for i in range(args.steps + 2):  # alternate; the first two rounds are warm-up
        for name, (model, optimizer) in runs.items():
            elapsed = step(model, optimizer, images, target)
            if i >= 2:
                times[name].append(elapsed)
    dense, masked = (statistics.median(times[name]) for name in ("dense", "masked"))
    print(f"{args.arch}, batch {args.batch}, {args.img_size} px, {args.threads} threads, "
          f"median of {args.steps} steps")
    print(f"dense step  {1000 * dense:8.1f} ms\nmasked step {1000 * masked:8.1f} ms\n"
          f"masked / dense {masked / dense:.3f}")


if __name__ == "__main__":
    main()
