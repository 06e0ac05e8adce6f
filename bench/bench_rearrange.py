"""Time one-shot pruning + physical rearrangement of a full-width model on the CPU.

    python bench/bench_rearrange.py [--arch mobilenet_v2] [--N 4] [--repeats 5]

Prints the first call (what a training run pays once; includes torch's lazy start-up) and the
median of the following ones, split into orders + masks and the permutation itself. These are
small ops: on a CPU shared with other jobs, intra-op threads spin and can make it ~10× slower;
compare with OMP_NUM_THREADS=1.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import get_model  # noqa: E402
from utils.pruning import prune_model  # noqa: E402
from utils.rearrange import apply_permutations_, rearrangement_orders  # noqa: E402


def time_once(arch, N, rate):
    model = get_model(arch)
    start = time.perf_counter()
    orders = rearrangement_orders(model)
    prune_model(model, rate, N, orders=orders)
    pruned = time.perf_counter()
    apply_permutations_(model, orders)
    done = time.perf_counter()
    return pruned - start, done - pruned


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--N", type=int, default=4)
    parser.add_argument("--pr_target", type=float, default=0.5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    runs = [time_once(args.arch, args.N, args.pr_target) for _ in range(args.repeats + 1)]
    for label, (prune, permute) in [("first", runs[0]),
                                    ("median", tuple(map(statistics.median, zip(*runs[1:]))))]:
        print(f"{args.arch} N={args.N} {label}: orders+prune {prune:.3f} s, "
              f"permute {permute:.3f} s, total {prune + permute:.3f} s")


if __name__ == "__main__":
    main()
