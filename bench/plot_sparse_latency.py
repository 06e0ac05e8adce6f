"""Latency against pruning rate: ours (the sparse network) and each dense runtime, from the JSON
that bench/sparse_conv.py writes (--scope model).

    python bench/plot_sparse_latency.py bench/results/models_avx512.json [more.json ...] \
        --arch mobilenet_v2 --batch 1 --output bench/results/v2_latency.png
"""
import argparse
import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# The dense runtimes drawn (PyTorch's best path is drawn as one line).
RUNTIMES = ("ONNX Runtime dense", "OpenVINO dense")


def load(paths: list[str], arch: str, batch: int) -> list[dict]:
    records = []
    for path in paths:
        with open(path) as f:
            records += [r for r in json.load(f) if r["scope"] == "model" and r["arch"] == arch and r["batch"] == batch]
    if not records:
        raise SystemExit(f"error: no model records for --arch {arch} --batch {batch} in {paths}")
    return records


def plot(records: list[dict], output: str, title: str) -> None:
    panels = sorted({(r["isa"], r["threads"]) for r in records})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, sharey=True)
    for ax, (isa, threads) in zip(axes[0], panels):
        rows = sorted((r for r in records if (r["isa"], r["threads"]) == (isa, threads)), key=lambda r: r["p"])
        rates = [r["p"] for r in rows]
        ax.plot(rates, [r["sparse_ms"] for r in rows], "o-", label=f"ours, 1×N (N={rows[0]['N']})", linewidth=2)
        dense = defaultdict(list)
        for r in rows:
            times = r["dense_runtimes_ms"]
            dense["PyTorch (best dense path)"].append(min(v for k, v in times.items()
                                                          if not k.startswith(("ONNX", "OpenVINO"))))
            for name in RUNTIMES:
                if name in times:
                    dense[name].append(times[name])
        for name, values in dense.items():
            ax.plot(rates, values, "--", label=name)
        ax.set_title(f"{isa}, {threads} thread{'s' if threads > 1 else ''}")
        ax.set_xlabel("pruning rate p")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("latency (ms, median)")
    axes[0][0].set_ylim(bottom=0)
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(output, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("json", nargs="+")
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    records = load(args.json, args.arch, args.batch)
    plot(records, args.output, f"{args.arch}, batch {args.batch}, 224 px: {records[0]['cpu']}")


if __name__ == "__main__":
    main()
