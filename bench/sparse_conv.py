"""How much faster the 1xN kernel is than PyTorch's fastest dense path, per layer and per model.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m bench.sparse_conv [--quick] [--json out.json]

Layers: every distinct pruned 1x1 conv shape of MobileNetV2 at 224 px, batch 1; the dense
baseline is the faster of F.conv2d on NCHW and on channels_last (weight with the zeros in it);
NumPy's BLAS GEMM (C_out x C_in @ C_in x HW) is a hardware anchor. Models: V1, V2, V3-large,
batch 1, against the fastest of eager NCHW, eager channels_last, BN folded, torch.compile and
torch.jit.optimize_for_inference. All candidates for one layer (or model) and thread count run
round-robin in one process and each reports the median over rounds. The BLAS anchor runs in a
phase of its own: OpenBLAS's and OpenMP's idle threads spin and would slow each other down.
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some of our machines) are read when NumPy loads
and slow its BLAS, hence the `env -u` above.
"""
import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

import models
from sparse.kernel import available_backends, conv1x1_1xn
from sparse.model import bake_masks, fold_batchnorm, to_sparse_model
from sparse.pack import pack_1xn
from utils.pruning import block_l1_mask, is_classifier, masked_convs, prune_model

log = logging.getLogger("bench.sparse_conv")


def time_round_robin(candidates: dict[str, Callable], rounds: int, sample_s: float = 1e-3) -> dict[str, float]:
    """Median milliseconds per call of each candidate, the candidates interleaved round by round.
    One sample repeats a call until it lasts about `sample_s`, above timer noise."""
    repeats = {}
    for name, fn in candidates.items():
        for _ in range(3):
            fn()  # warm-up: caches, lazy init, thread pools
        start = time.perf_counter()
        fn()
        repeats[name] = max(1, int(sample_s / max(time.perf_counter() - start, 1e-7)))
    samples = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(repeats[name]):
                fn()
            samples[name].append((time.perf_counter() - start) / repeats[name])
    return {name: statistics.median(s) * 1e3 for name, s in samples.items()}


def v2_layer_shapes(image_size: int) -> list[tuple[int, int, int, int]]:
    """Distinct (C_out, C_in, H, W) of MobileNetV2's pruned 1x1 convs (classifier excluded: it
    keeps rate 0 without --full), in network order."""
    model = models.get_model("mobilenet_v2").eval()
    shapes = []
    hooks = [conv.register_forward_hook(lambda m, inputs, out: shapes.append((*m.weight.shape[:2], *out.shape[2:])))
             for name, conv in masked_convs(model) if not is_classifier(name)]
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    for hook in hooks:
        hook.remove()
    return list(dict.fromkeys(shapes))


def bench_layers(args) -> list[dict]:
    records = []
    generator = torch.Generator().manual_seed(0)
    for c_out, c_in, height, width in v2_layer_shapes(args.image_size):
        weight = torch.randn(c_out, c_in, 1, 1, generator=generator)
        x = torch.randn(1, c_in, height, width, generator=generator)
        x_cl = x.to(memory_format=torch.channels_last)
        bias = torch.zeros(c_out)
        masked = {}  # (N, p) -> (dense weight with zeros, packed weight)
        for n in args.N:
            for p in args.p:
                mask = block_l1_mask(weight, n, p)
                masked[n, p] = (weight * mask, pack_1xn(weight, n, keep=mask))
        x_np = x.reshape(c_in, -1).numpy()
        for threads in args.threads:
            torch.set_num_threads(threads)
            # Dense speed does not depend on the zeros, so one dense weight serves every (N, p).
            dense_weight = masked[args.N[0], args.p[0]][0]
            candidates = {
                "F.conv2d NCHW": lambda: F.conv2d(x, dense_weight, bias),
                "F.conv2d channels_last": lambda: F.conv2d(x_cl, dense_weight, bias),
            }
            for (n, p), (_, packed) in masked.items():
                candidates[n, p] = lambda packed=packed: conv1x1_1xn(x, packed, bias)
            with torch.no_grad():
                times = time_round_robin(candidates, args.rounds)
            with threadpool_limits(threads):
                w_np = dense_weight.reshape(c_out, c_in).numpy()
                blas_ms = time_round_robin({"blas": lambda: w_np @ x_np}, args.rounds)["blas"]
            baseline = min(("F.conv2d NCHW", "F.conv2d channels_last"), key=times.get)
            for n, p in masked:
                records.append({"scope": "layers", "arch": "mobilenet_v2", "shape": f"{c_out}x{c_in}@{height}x{width}",
                                "N": n, "p": p, "threads": threads, "dense_ms": times[baseline],
                                "sparse_ms": times[n, p], "speedup": times[baseline] / times[n, p],
                                "baseline": baseline, "blas_ms": blas_ms})
        log.info("layer %dx%d@%dx%d done", c_out, c_in, height, width)
    return records


def dense_paths(model: nn.Module, image_size: int, with_compile: bool) -> dict[str, Callable]:
    """PyTorch's dense ways to run the masked model (zeros baked in), by name."""
    x = torch.randn(1, 3, image_size, image_size)
    x_cl = x.to(memory_format=torch.channels_last)
    baked, folded = bake_masks(model), fold_batchnorm(model)
    baked_cl = bake_masks(model).to(memory_format=torch.channels_last)
    folded_cl = fold_batchnorm(model).to(memory_format=torch.channels_last)
    paths = {
        "eager NCHW": lambda: baked(x),
        "eager channels_last": lambda: baked_cl(x_cl),
        "BN folded NCHW": lambda: folded(x),
        "BN folded channels_last": lambda: folded_cl(x_cl),
    }
    with torch.no_grad():
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(baked, x)))
    paths["jit.optimize_for_inference"] = lambda: frozen(x)
    if with_compile:
        try:
            compiled = torch.compile(folded)
            with torch.no_grad():
                compiled(x)  # compile now, not inside the timing
            paths["torch.compile"] = lambda: compiled(x)
        except Exception as error:  # inductor needs a working C++ toolchain
            log.warning("torch.compile skipped: %s", error)
    return paths


def bench_models(args) -> list[dict]:
    records = []
    x = torch.randn(1, 3, args.image_size, args.image_size)
    for arch in args.arch:
        model = models.get_model(arch).eval()
        sparse = {}
        for n in args.N:
            for p in args.p:
                pruned = models.get_model(arch).eval()
                pruned.load_state_dict(model.state_dict())
                prune_model(pruned, p, n)  # the paper's setting: the classifier stays dense
                sparse[n, p] = to_sparse_model(pruned, n)
                with torch.no_grad():  # the sparse network must compute what the masked one does
                    torch.testing.assert_close(sparse[n, p](x), pruned(x), atol=1e-3, rtol=1e-3)
        dense = dense_paths(model, args.image_size, with_compile=not args.quick)
        for threads in args.threads:
            torch.set_num_threads(threads)
            candidates = dict(dense)
            for key, net in sparse.items():
                candidates[key] = lambda net=net: net(x)
            with torch.no_grad():
                times = time_round_robin(candidates, args.rounds, sample_s=20e-3)
            baseline = min(dense, key=times.get)
            log.info("%s, %d thread(s), dense: %s", arch, threads,
                     ", ".join(f"{name} {times[name]:.2f} ms" for name in dense))
            for n, p in sparse:
                records.append({"scope": "model", "arch": arch, "N": n, "p": p, "threads": threads,
                                "dense_ms": times[baseline], "sparse_ms": times[n, p],
                                "speedup": times[baseline] / times[n, p], "baseline": baseline})
    return records


def print_tables(records: list[dict]) -> None:
    layers = [r for r in records if r["scope"] == "layers"]
    if layers:
        print("\nMobileNetV2 1x1 layers at 224 px, batch 1, summed over the distinct shapes (ms)")
        print(f"{'threads':>7} {'N':>3} {'p':>4} {'dense':>7} {'sparse':>7} {'speedup':>7} {'BLAS':>7} {'BLAS/sparse':>11}")
        keys = sorted({(r["threads"], r["N"], r["p"]) for r in layers})
        for threads, n, p in keys:
            rows = [r for r in layers if (r["threads"], r["N"], r["p"]) == (threads, n, p)]
            dense, sparse, blas = (sum(r[k] for r in rows) for k in ("dense_ms", "sparse_ms", "blas_ms"))
            print(f"{threads:>7} {n:>3} {p:>4} {dense:7.3f} {sparse:7.3f} {dense / sparse:6.2f}x {blas:7.3f} {blas / sparse:10.2f}x")
    model_rows = [r for r in records if r["scope"] == "model"]
    if model_rows:
        print("\nWhole models at 224 px, batch 1 (ms); dense = PyTorch's fastest dense path")
        print(f"{'arch':>18} {'threads':>7} {'N':>3} {'p':>4} {'dense':>7} {'sparse':>7} {'speedup':>7}  baseline")
        for r in sorted(model_rows, key=lambda r: (r["arch"], r["threads"], r["N"], r["p"])):
            print(f"{r['arch']:>18} {r['threads']:>7} {r['N']:>3} {r['p']:>4} {r['dense_ms']:7.2f} "
                  f"{r['sparse_ms']:7.2f} {r['speedup']:6.2f}x  {r['baseline']}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scope", choices=("layers", "model", "all"), default="all")
    parser.add_argument("--N", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--p", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--arch", nargs="+", default=["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large"],
                        choices=models.list_models())
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=31, help="samples per candidate (median taken)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N=4, p in {0.5, 0.9}, 1 thread, V2 only, 5 rounds, no torch.compile")
    parser.add_argument("--json", help="write the records here")
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.quick:
        args.N, args.p, args.threads, args.arch, args.rounds = [4], [0.5, 0.9], [1], ["mobilenet_v2"], 5
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            log.warning("%s is set: NumPy's BLAS anchor may be slow (run under `env -u %s`)", var, var)
    log.info("kernel backends: %s; CPU: %s", ", ".join(available_backends()), cpu_model())
    records = []
    if args.scope in ("layers", "all"):
        records += bench_layers(args)
    if args.scope in ("model", "all"):
        records += bench_models(args)
    print_tables(records)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return records


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


try:
    from threadpoolctl import threadpool_limits
except ImportError:  # without it NumPy's BLAS uses all cores: the anchor is then not per thread count
    import contextlib

    def threadpool_limits(limits):
        log.warning("threadpoolctl not installed: BLAS anchor runs with OpenBLAS's default threads")
        return contextlib.nullcontext()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
