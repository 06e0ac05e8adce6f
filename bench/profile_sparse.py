"""Where the sparse network's time goes: torch.profiler's self time per op, per forward, for the
frozen TorchScript file (what bench/sparse_conv.py times as ours).

    python bench/profile_sparse.py [--arch mobilenet_v2] [--N 4] [--p 0.5 0.9] [--threads 1 2] [--isa avx512 avx2] [--no-fuse]

--no-fuse runs V2's fused blocks layer by layer (the per-layer split of the time).
"""
import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench.sparse_conv import untrained_model  # noqa: E402
from sparse.deploy import script_sparse  # noqa: E402
from sparse.model import set_backend, set_fusion, to_sparse_model  # noqa: E402
from utils.pruning import prune_model  # noqa: E402

OUR_OPS = {"conv1xn::conv1x1_1xn": "sparse 1x1", "conv1xn::depthwise_conv": "depthwise",
           "conv1xn::inverted_residual": "fused V2 block"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--N", type=int, default=4)
    parser.add_argument("--p", type=float, nargs="+", default=[0.5, 0.9])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--isa", nargs="+", default=["avx512", "avx2"], choices=("avx512", "avx2", "auto"))
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--fuse", action=argparse.BooleanOptionalAction, default=True,
                        help="run V2 blocks as one fused op (default) or layer by layer")
    args = parser.parse_args()
    x = torch.randn(1, 3, 224, 224)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for isa in args.isa:
            for p in args.p:
                model = untrained_model(args.arch)
                prune_model(model, p, args.N)
                script = script_sparse(set_fusion(set_backend(to_sparse_model(model, args.N), isa), args.fuse))
                with torch.no_grad():
                    for _ in range(10):
                        script(x)
                    with profile() as prof:
                        for _ in range(args.calls):
                            script(x)
                per_call = {e.key: e.self_cpu_time_total / args.calls / 1e3 for e in prof.key_averages()}
                total = sum(per_call.values())
                ours = {label: per_call.pop(op, 0.0) for op, label in OUR_OPS.items()}
                others = sorted(per_call.items(), key=lambda kv: -kv[1])[:4]
                print(f"{args.arch} N={args.N} p={p} {isa} {threads} thread(s): {total:.2f} ms per forward; "
                      + ", ".join(f"{k} {v:.2f} ms ({100 * v / total:.0f}%)" for k, v in [*ours.items(), *others]))


if __name__ == "__main__":
    main()
