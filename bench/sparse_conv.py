"""How much faster the 1xN kernel is than the fastest dense path, per layer and per model.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/sparse_conv.py [--quick] [--isa avx2] [--json out.json]

Layers: every distinct pruned 1x1 conv shape of MobileNetV2 at 224 px, batch 1; the dense
baseline is the faster of F.conv2d on NCHW and on channels_last (weight with the zeros in it);
NumPy's BLAS GEMM (C_out x C_in @ C_in x HW) is a hardware anchor. Models (any arch whose sparse
network sparse.model can build; default V1, V2, V3-large), batch 1 and 8, against the fastest of
PyTorch (eager NCHW, eager channels_last, BN folded, torch.compile,
torch.jit.optimize_for_inference), ONNX Runtime and OpenVINO on the dense model; the two runtimes
also run the masked model (zeros in the weights) to show that zeros alone buy them nothing. All
candidates for one model, batch and thread count run round-robin in one process and each reports
the median over rounds. Ours is the TorchScript file of sparse/deploy.py (what a user deploys,
also the fastest from Python); the nn.Module's time is recorded as sparse_eager_ms and, for
networks with fused inverted residual blocks (V2), the same frozen network with those blocks run
layer by layer as sparse_unfused_ms (what fusion gains, measured in the same round-robin).

--isa avx2 runs our kernels on their AVX2 path and restarts the script with
ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2, which cap PyTorch (and OpenVINO's oneDNN
primitives, where its build honours the variable) at AVX2; ONNX Runtime's MLAS picks its kernels
from cpuid with no run-time control, so it keeps using AVX-512 (a conservative baseline for us).

The BLAS anchor runs in a phase of its own: OpenBLAS's and OpenMP's idle threads spin and would slow each other down.
OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some of our machines) are read when NumPy loads
and slow its BLAS, hence the `env -u` above.
"""
import argparse
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

import models  # noqa: E402
from bench.runtimes import RUNTIMES, export_onnx, versions  # noqa: E402
from sparse.deploy import script_sparse  # noqa: E402
from sparse.kernel import available_backends, conv1x1_1xn  # noqa: E402
from sparse.model import (FusedInvertedResidual, bake_masks, fold_batchnorm, set_backend, set_fusion,  # noqa: E402
                          to_sparse_model)
from sparse.pack import pack_1xn  # noqa: E402
from utils.pruning import block_l1_mask, is_classifier, masked_convs, prune_model  # noqa: E402

# What --isa avx2 sets before torch starts: PyTorch's kernels and oneDNN (PyTorch's, OpenVINO's).
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}

log = logging.getLogger("bench.sparse_conv")
# Pause before each multi-threaded model sample (see time_round_robin): longer than PyTorch's
# OpenMP threads spin after a parallel region (libgomp's default spin count, a few ms).
SETTLE_S = 0.03


def time_round_robin(candidates: dict[str, Callable], rounds: int, sample_s: float = 1e-3,
                     settle_s: float = 0.0) -> dict[str, float]:
    """Median milliseconds per call of each candidate, the candidates interleaved round by round.
    One sample repeats a call until it lasts about `sample_s`, above timer noise. With `settle_s`,
    each sample starts after that long a pause and one untimed call: the runtimes' idle worker
    threads spin for milliseconds after a call (PyTorch's OpenMP, ONNX Runtime's pool), and a
    multi-threaded candidate timed while another runtime's thread still spins on one of its cores
    runs at half speed, as it never would alone in a deployment."""
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
            if settle_s:
                time.sleep(settle_s)
                fn()
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
            for (n, p), (masked_weight, packed) in masked.items():
                candidates[n, p] = lambda packed=packed: conv1x1_1xn(x, packed, bias, backend=args.isa)
                # A fast wrong answer is no answer: the kernel must compute the masked conv.
                torch.testing.assert_close(candidates[n, p](), F.conv2d(x, masked_weight, bias), atol=1e-4, rtol=1e-4)
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


def pytorch_dense_paths(model: nn.Module, x: torch.Tensor, with_compile: bool) -> dict[str, Callable]:
    """PyTorch's dense ways to run the masked model (zeros baked in), by name."""
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


def runtime_paths(onnx_files: dict[str, Path], x: torch.Tensor, threads: int) -> dict[str, Callable]:
    """Each installed runtime on each ONNX file ({'dense': ..., 'masked p=0.5': ...}), by name."""
    x_np = x.numpy()
    paths = {}
    for runtime, load in RUNTIMES.items():
        for label, path in onnx_files.items():
            run = load(path, threads)
            if run is not None:
                paths[f"{runtime} {label}"] = lambda run=run: run(x_np)
    return paths


def untrained_model(arch: str) -> nn.Module:
    """`arch` in eval mode with random BatchNorm statistics and affine parameters: freshly
    initialised MobileNets output logits of about 1e-8, against which any kernel looks exact; these
    give logits of about 0.1 to 1, so the 1e-4 check below means something."""
    generator = torch.Generator().manual_seed(0)
    model = models.get_model(arch).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for tensor, low, high in ((module.running_mean, -0.5, 0.5), (module.running_var, 0.5, 2.0),
                                          (module.weight, 0.5, 1.5), (module.bias, -0.5, 0.5)):
                    tensor.copy_(torch.rand(tensor.shape, generator=generator) * (high - low) + low)
    return model


def sparse_networks(arch: str, ns: list[int], rates: list[float], isa: str, x: torch.Tensor):
    """{(N, p): (masked model, sparse network, its TorchScript, the TorchScript with the fused
    blocks run layer by layer or None if it has none)} for `arch`, or None if its sparse network
    cannot be built; each sparse network is checked against its masked model."""
    model = untrained_model(arch)
    networks = {}
    for n in ns:
        for p in rates:
            pruned = models.get_model(arch).eval()
            pruned.load_state_dict(model.state_dict())
            prune_model(pruned, p, n)  # the paper's setting: the classifier stays dense
            try:
                sparse = set_backend(to_sparse_model(pruned, n), isa)
            except ValueError as error:
                log.warning("%s skipped: no sparse network (%s)", arch, error)
                return None
            script = script_sparse(sparse, x.shape[-1])
            unfused = None
            if any(isinstance(m, FusedInvertedResidual) for m in sparse.modules()):
                unfused = script_sparse(set_fusion(copy.deepcopy(sparse), False), x.shape[-1])
            with torch.no_grad():  # the sparse network must compute what the masked one does
                expected = pruned(x)
                torch.testing.assert_close(sparse(x), expected, atol=1e-4, rtol=1e-4)
                for frozen in (script, unfused or script):
                    torch.testing.assert_close(frozen(x), expected, atol=1e-4, rtol=1e-4)
            networks[n, p] = (pruned, sparse, script, unfused)
    return networks


def bench_models(args) -> list[dict]:
    records = []
    for arch in args.arch:
        for batch in args.batch:
            x = torch.randn(batch, 3, args.image_size, args.image_size)
            networks = sparse_networks(arch, args.N, args.p, args.isa, x)
            if networks is None:
                break
            dense_model = untrained_model(arch)
            pytorch = pytorch_dense_paths(dense_model, x, with_compile=args.compile)
            with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
                onnx_files = {"dense": export_onnx(bake_masks(dense_model), x, Path(tmp) / "dense.onnx")}
                for (n, p), (pruned, *_) in networks.items():
                    if n == args.N[0]:  # zeros at each rate; the block size does not matter to a dense runtime
                        onnx_files[f"masked p={p}"] = export_onnx(bake_masks(pruned), x, Path(tmp) / f"p{p}.onnx")
                for threads in args.threads:
                    torch.set_num_threads(threads)
                    runtimes = runtime_paths(onnx_files, x, threads)
                    candidates = {**pytorch, **runtimes}
                    for (n, p), (_, net, script, unfused) in networks.items():
                        candidates["ours", n, p] = lambda script=script: script(x)
                        candidates["ours eager", n, p] = lambda net=net: net(x)
                        if unfused is not None:
                            candidates["ours unfused", n, p] = lambda unfused=unfused: unfused(x)
                    times = time_round_robin(candidates, args.rounds, sample_s=20e-3, settle_s=SETTLE_S if threads > 1 else 0.0)
                    dense_names = [*pytorch, *(name for name in runtimes if name.endswith(" dense"))]
                    baseline = min(dense_names, key=times.get)
                    log.info("%s, batch %d, %d thread(s): %s", arch, batch, threads,
                             ", ".join(f"{name} {times[name]:.2f} ms" for name in candidates if isinstance(name, str)))
                    for n, p in networks:
                        records.append({"scope": "model", "arch": arch, "batch": batch, "N": n, "p": p,
                                        "threads": threads, "dense_ms": times[baseline],
                                        "sparse_ms": times["ours", n, p], "sparse_eager_ms": times["ours eager", n, p],
                                        "sparse_unfused_ms": times.get(("ours unfused", n, p)),
                                        "speedup": times[baseline] / times["ours", n, p], "baseline": baseline,
                                        "dense_runtimes_ms": {name: times[name] for name in candidates
                                                              if isinstance(name, str)}})
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
        print("\nWhole models at 224 px (ms); dense = the fastest of PyTorch, ONNX Runtime, OpenVINO")
        print("(unfused: the same frozen network with V2's fused blocks run layer by layer)")
        print(f"{'arch':>18} {'batch':>5} {'threads':>7} {'N':>3} {'p':>4} {'dense':>7} {'sparse':>7} {'speedup':>7} "
              f"{'unfused':>7}  baseline")
        for r in sorted(model_rows, key=lambda r: (r["arch"], r["batch"], r["threads"], r["N"], r["p"])):
            unfused = f"{r['sparse_unfused_ms']:7.2f}" if r.get("sparse_unfused_ms") is not None else f"{'-':>7}"
            print(f"{r['arch']:>18} {r['batch']:>5} {r['threads']:>7} {r['N']:>3} {r['p']:>4} {r['dense_ms']:7.2f} "
                  f"{r['sparse_ms']:7.2f} {r['speedup']:6.2f}x {unfused}  {r['baseline']}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scope", choices=("layers", "model", "all"), default="all")
    parser.add_argument("--N", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--p", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="model batch sizes")
    parser.add_argument("--isa", choices=("auto", "avx512", "avx2"), default="auto",
                        help="our kernels' instruction set; avx2 also caps PyTorch and oneDNN (see above)")
    parser.add_argument("--arch", nargs="+", default=["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large"],
                        choices=models.list_models())
    parser.add_argument("--image_size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=31, help="samples per candidate (median taken)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: N=4, p in {0.5, 0.9}, 1 thread, batch 1, V2 only, 5 rounds, no torch.compile")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="include torch.compile among PyTorch's dense paths (a minute of compiling)")
    parser.add_argument("--json", help="write the records here")
    return parser


def main(args: argparse.Namespace) -> list[dict]:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.isa == "avx2" and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        # The caps are read when torch and oneDNN start: restart this script with them set.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})
    if args.quick:
        args.N, args.p, args.threads, args.arch, args.rounds = [4], [0.5, 0.9], [1], ["mobilenet_v2"], 5
        args.batch, args.compile = [1], False
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            log.warning("%s is set: NumPy's BLAS anchor may be slow (run under `env -u %s`)", var, var)
    isa = available_backends()[0] if args.isa == "auto" else args.isa
    machine = {"cpu": cpu_model(), "isa": isa, "torch": torch.__version__, **versions(),
               "caps": {k: os.environ[k] for k in AVX2_ENV if k in os.environ}}
    log.info("kernel backends: %s; running %s; CPU: %s; %s", ", ".join(available_backends()), isa, machine["cpu"],
             machine)
    records = []
    if args.scope in ("layers", "all"):
        records += bench_layers(args)
    if args.scope in ("model", "all"):
        records += bench_models(args)
    for record in records:
        record.update(machine)
    print_tables(records)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(records, f, indent=1)
    return records


def cpu_model() -> str:
    """The model name, with the vector extensions that matter here (cloud VMs often hide the name)."""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return f"{name} ({', '.join(f for f in ('avx2', 'fma', 'avx512f', 'avx512vl') if f in flags)})"


try:
    from threadpoolctl import threadpool_limits
except ImportError:  # without it NumPy's BLAS uses all cores: the anchor is then not per thread count
    import contextlib

    def threadpool_limits(limits):
        log.warning("threadpoolctl not installed: BLAS anchor runs with OpenBLAS's default threads")
        return contextlib.nullcontext()


if __name__ == "__main__":
    main(get_args_parser().parse_args())
