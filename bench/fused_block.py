"""What the fused inverted residual block gains: the frozen sparse MobileNetV2 with its blocks
fused (the default) against the same network with them run layer by layer, timed in pairs.

    python bench/fused_block.py [--p 0.5 0.9] [--isa avx512 avx2] [--pairs 200] [--json out.json]

bench/sparse_conv.py times both in its round-robin too, but a round there lasts a second or
more (every dense runtime runs in it), so on a shared machine a burst of load can fall on one
candidate and not the other. Here the two networks run back to back, one forward each, in
alternating order, and each pair gives one ratio (unfused / fused): the median ratio and its
quartiles are what to quote; a burst longer than a forward slows both of a pair alike. "Fused"
covers the stem with V2's first block too. Only our kernels' ISA changes with --isa (the dense
classifier stays PyTorch's, the same in both).
"""
import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.sparse_conv import cpu_model, untrained_model  # noqa: E402
from sparse.deploy import script_sparse  # noqa: E402
from sparse.kernel import available_backends  # noqa: E402
from sparse.model import set_backend, set_fusion, to_sparse_model  # noqa: E402
from utils.pruning import prune_model  # noqa: E402


def timed_pairs(first, second, x, pairs: int) -> tuple[list[float], list[float]]:
    """Seconds per forward of each, one pair at a time, the order alternating."""
    a, b = [], []
    for i in range(pairs):
        for run, out in ((first, a), (second, b)) if i % 2 == 0 else ((second, b), (first, a)):
            start = time.perf_counter()
            run(x)
            out.append(time.perf_counter() - start)
    return a, b


def main() -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--N", type=int, default=4)
    parser.add_argument("--p", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--isa", nargs="+", default=[b for b in available_backends() if b != "torch"],
                        choices=("avx512", "avx2"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x = torch.randn(1, 3, 224, 224)
    records = []
    with torch.no_grad():
        for p in args.p:
            model = untrained_model("mobilenet_v2")
            prune_model(model, p, args.N)
            for isa in args.isa:
                fused = set_backend(to_sparse_model(model, args.N), isa)
                unfused = set_fusion(copy.deepcopy(fused), False)
                nets = [script_sparse(net) for net in (fused, unfused)]
                expected = model(x)
                for net in nets:  # never time a network that computes something else
                    torch.testing.assert_close(net(x), expected, atol=1e-4, rtol=1e-4)
                    for _ in range(10):
                        net(x)
                t_fused, t_unfused = timed_pairs(*nets, x, args.pairs)
                ratios = [u / f for f, u in zip(t_fused, t_unfused)]
                q1, median, q3 = statistics.quantiles(ratios, n=4)
                record = {"arch": "mobilenet_v2", "N": args.N, "p": p, "isa": isa, "threads": args.threads,
                          "cpu": cpu_model(), "pairs": args.pairs,
                          "fused_ms": 1e3 * statistics.median(t_fused),
                          "unfused_ms": 1e3 * statistics.median(t_unfused),
                          "unfused_over_fused": median, "ratio_quartiles": [q1, q3]}
                records.append(record)
                print(f"V2 N={args.N} p={p} {isa} {args.threads} thread(s): fused {record['fused_ms']:.2f} ms, "
                      f"unfused {record['unfused_ms']:.2f} ms (medians); unfused / fused per pair: median "
                      f"{median:.3f}, quartiles {q1:.3f}-{q3:.3f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return records


if __name__ == "__main__":
    main()
