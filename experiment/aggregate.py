"""Tables and plots from the job dirs of the sweeps (experiment/*.sh).

    python -m experiment.aggregate JOB_ROOT --out DIR

Reads every `config.json` + `metrics.jsonl` under JOB_ROOT and writes to DIR:
  tables.md    the paper's Table 1, Table 2, Fig. 4 (as a table), ℓ1 vs random, and the paper's
               orderings as paired differences over seeds; the published ImageNet number beside
               ours where one exists (SPEC §9)
  runs.csv     one row per run (finished or not)
  fig4_<arch>.png, table1_<arch>_p<rate>.png   top-1 against the rate per method / against N
A run's result is its last `finetune` evaluation (its `pruned` one when it has 0 epochs); only
finished runs enter the tables. Mean ± sample std over seeds where a configuration has several.
"""
import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from experiment import schedule_kd
from experiment.jobs import final_record, last, read_config, read_metrics

ARCHS = ["mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large", "resnet18", "resnet34", "resnet50"]
ARCH_NAMES = {"mobilenet_v1": "V1", "mobilenet_v2": "V2", "mobilenet_v3_small": "V3-small",
              "mobilenet_v3_large": "V3-large", "resnet18": "ResNet-18", "resnet34": "ResNet-34",
              "resnet50": "ResNet-50"}
METHODS = {"UnstructureConv": "weight", "StructureConv": "filter", "BlockL1Conv": "1xN", "BlockRandomConv": "random"}

# SPEC §9: ImageNet top-1 (%) at p = 0.5; 1×N rows are with rearrangement, as the paper's Table 2.
PUBLISHED_TABLE2 = {
    "weight": (70.76, 71.15, 66.38, 72.90), "filter": (65.35, 66.73, 59.05, 69.14),
    2: (70.28, 70.23, 65.38, 72.12), 4: (70.05, 69.58, 64.47, 71.94), 8: (69.91, 69.37, 64.10, 71.48),
    16: (69.56, 69.35, 63.13, 71.11), 32: (69.54, 68.76, 62.88, 70.77),
}
PUBLISHED_V2_PLAIN = {2: 69.90, 4: 69.52, 8: 69.21, 16: 68.97, 32: 68.43}  # Table 1, without rearrangement
# The journal version's Fig. 4b (its raw data): ResNet-50 at p = 0.5, 1×N rearranged as in Table 2.
PUBLISHED_RESNET50 = {"weight": 77.088, "filter": 75.382, 2: 76.654, 4: 76.506, 8: 76.146, 16: 76.254, 32: 75.960}
PUBLISHED_DENSE = {"mobilenet_v2": 71.74, "resnet50": 77.008}
MOBILENETS = ARCHS[:4]  # the columns of PUBLISHED_TABLE2


def published(arch, method, n, rate, rearrange):
    """The paper's ImageNet top-1 for this configuration, or None."""
    if not math.isclose(rate, 0.5):
        return None
    if arch == "resnet50":
        return PUBLISHED_RESNET50.get(method if method in ("weight", "filter") else n) if (
            method in ("weight", "filter") or (method == "1xN" and rearrange)) else None
    if arch not in MOBILENETS:
        return None
    if method in ("weight", "filter"):
        return PUBLISHED_TABLE2[method][MOBILENETS.index(arch)]
    if method == "1xN" and rearrange and n in PUBLISHED_TABLE2:
        return PUBLISHED_TABLE2[n][MOBILENETS.index(arch)]
    if method == "1xN" and not rearrange and arch == "mobilenet_v2":
        return PUBLISHED_V2_PLAIN.get(n)
    return None


# ---------------------------------------------------------------- reading the job dirs

def read_run(job_dir, root):
    """One run as a flat dict, or None for a dense pre-training job or a dir that is not a run."""
    config = read_config(job_dir)
    if config is None or config.get("conv_type") not in METHODS or config.get("evaluate"):
        return None
    records = read_metrics(job_dir)
    epochs = config["num_epochs"]
    final = final_record(records, epochs)
    if final is None and epochs > 0:  # unfinished: its last evaluation so far, for runs.csv only
        final = last(records, "finetune") or last(records, "pruned")
    method = METHODS[config["conv_type"]]
    block = method in ("1xN", "random")
    pruned, dense = last(records, "pruned"), last(records, "dense")
    return {
        "job_dir": str(Path(job_dir).relative_to(root)), "arch": config["arch"], "method": method,
        "N": config["N"] if block else None, "rate": config["pr_target"],
        "rearrange": bool(config["rearrange"]) and block, "seed": config["seed"], "epochs": epochs,
        "finished": final_record(records, epochs) is not None,
        "top1": final["top1"] if final else None, "top5": final["top5"] if final else None,
        "pruned_top1": pruned["top1"] if pruned else None, "dense_top1": dense["top1"] if dense else None,
        "setup": setup_of(config), "variant": variant_of(config),
    }


def variant_of(config):
    """oneshot, cubic, kd or cubic_kd (experiment/schedule_kd.sh); runs from before the flags: oneshot."""
    cubic = config.get("prune_schedule") == "cubic"
    kd = bool(config.get("distill"))
    return {(False, False): "oneshot", (True, False): "cubic", (False, True): "kd", (True, True): "cubic_kd"}[cubic, kd]


def setup_of(config):
    data = config["data_path"] or "embedded Fashion-MNIST"
    images = (f", {config['train_images'] or 'all'} train / {config['val_images'] or 'all'} val images"
              if config.get("train_images") or config.get("val_images") else "")
    return f"{data}, {config['img_size']} px{images}, {config['num_epochs']} fine-tuning epoch(s)"


def collect(root):
    root = Path(root)
    runs = [read_run(path.parent, root) for path in sorted(root.rglob("config.json"))]
    return [run for run in runs if run is not None]


# ---------------------------------------------------------------- statistics

def config_key(run):
    return run["arch"], run["method"], run["N"], run["rate"], run["rearrange"]


def group(runs, variant="oneshot"):
    """{config key: {seed: top1}} over finished runs of one variant (the paper's tables: one-shot, no KD)."""
    groups = defaultdict(dict)
    for run in runs:
        if run["finished"] and run["variant"] == variant:
            groups[config_key(run)][run["seed"]] = run["top1"]
    return groups


def summary(values):
    values = list(values)
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def paired(a, b):
    """Differences a − b over the seeds both have (same seed: same data subsets and order)."""
    seeds = sorted(set(a) & set(b))
    return [a[s] - b[s] for s in seeds]


def cell(values, signed=False):
    if not values:
        return "–"
    s = summary(values)
    text = f"{s['mean']:+.2f}" if signed else f"{s['mean']:.2f}"
    return text + (f" ± {s['std']:.2f}" if s["std"] is not None else "")


def paper_cell(value):
    return "–" if value is None else f"{value:.2f}"


def markdown(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows])


def method_name(method, n=None):
    return {"weight": "weight pruning", "filter": "filter pruning"}.get(method) or (
        f"1×{n}" if method == "1xN" else f"random 1×{n}")


# ---------------------------------------------------------------- tables

def _values(groups, key):
    return list(groups.get(key, {}).values())


def table1(groups, arch, rate):
    ns = sorted({k[2] for k in groups if k[0] == arch and k[1] == "1xN" and k[3] == rate})
    rows = []
    for n in ns:
        plain, rearranged = groups.get((arch, "1xN", n, rate, False), {}), groups.get((arch, "1xN", n, rate, True), {})
        rows.append([f"1×{n}", cell(plain.values()), paper_cell(published(arch, "1xN", n, rate, False)),
                     cell(rearranged.values()), paper_cell(published(arch, "1xN", n, rate, True)),
                     cell(paired(rearranged, plain), signed=True)])
    return markdown(["N", "without (ours)", "without (paper)", "with (ours)", "with (paper)",
                     "with − without (ours, paired)"], rows)


def method_rows(groups, arch, rate):
    """(label, values, published) for weight, filter and the rearranged 1×N rows present."""
    rows = [(method_name(m), _values(groups, (arch, m, None, rate, False)), published(arch, m, None, rate, False))
            for m in ("weight", "filter")]
    ns = sorted({k[2] for k in groups if k[:2] == (arch, "1xN") and k[3] == rate and k[4]})
    rows += [(method_name("1xN", n), _values(groups, (arch, "1xN", n, rate, True)),
              published(arch, "1xN", n, rate, True)) for n in ns]
    return [row for row in rows if row[1]]


def table2(groups, runs, rate, archs):
    by_arch = {arch: {label: (values, paper) for label, values, paper in method_rows(groups, arch, rate)}
               for arch in archs}
    labels = dict.fromkeys(label for arch in archs for label in by_arch[arch])  # ordered union
    header = ["method"] + [f"{ARCH_NAMES[arch]} ({who})" for arch in archs for who in ("ours", "paper")]
    rows = [["dense"] + [c for arch in archs
                         for c in (cell(dense_values(runs, arch)), paper_cell(PUBLISHED_DENSE.get(arch)))]]
    for label in labels:
        rows.append([label] + [c for arch in archs for values, paper in [by_arch[arch].get(label, ([], None))]
                               for c in (cell(values), paper_cell(paper))])
    return markdown(header, rows)


def dense_values(runs, arch):
    """The dense model's top-1, once per seed (each seed evaluates on its own val subset)."""
    return list({r["seed"]: r["dense_top1"] for r in runs if r["arch"] == arch and r["dense_top1"] is not None}.values())


def fig4_table(groups, arch):
    rates = sorted({k[3] for k in groups if k[0] == arch and (k[1] != "1xN" or k[4])})
    rows = {}
    for rate in rates:
        for label, values, _ in method_rows(groups, arch, rate):
            rows.setdefault(label, {})[rate] = values
    return rates, rows, markdown(["method"] + [f"p = {rate:g}" for rate in rates],
                                 [[label] + [cell(by_rate.get(rate, [])) for rate in rates] for label, by_rate in rows.items()])


def random_table(groups, arch, rate, rearrange):
    ns = sorted({k[2] for k in groups if k[0] == arch and k[1] == "random" and k[3] == rate and k[4] == rearrange})
    rows = []
    for n in ns:
        l1, rnd = groups.get((arch, "1xN", n, rate, rearrange), {}), groups.get((arch, "random", n, rate, rearrange), {})
        rows.append([f"1×{n}", cell(l1.values()), cell(rnd.values()), cell(paired(l1, rnd), signed=True)])
    return markdown(["N", "ℓ1 (ours)", "random (ours)", "ℓ1 − random (ours, paired)"], rows)


def orderings(groups, arch, rate):
    """The paper's claims as paired differences A − B (> 0: the claim holds on average).

    Each claim is one comparison, or a family of them (one per N) summarised per seed by the
    mean difference over N, so that every row is a sample of independent seeds."""
    def get(method, n=None, rearrange=False):
        return groups.get((arch, method, n, rate, rearrange), {})
    ns = sorted({k[2] for k in groups if k[:2] == (arch, "1xN") and k[3] == rate})
    families = [
        ("weight ≥ 1×{n}", [(n, get("weight"), get("1xN", n, True)) for n in ns]),
        ("1×{n} ≥ filter", [(n, get("1xN", n, True), get("filter")) for n in ns]),
        ("1×{n} ≥ next larger N", [(f"{a} ≥ 1×{b}", get("1xN", a, True), get("1xN", b, True))
                                   for a, b in zip(ns, ns[1:])]),
        ("1×{n} rearranged ≥ plain", [(n, get("1xN", n, True), get("1xN", n, False)) for n in ns]),
        ("ℓ1 ≥ random, 1×{n}", [(n, get("1xN", n, False), get("random", n, False)) for n in ns]),
    ]
    rows = []
    for template, pairs in families:
        pairs = [(n, a, b) for n, a, b in pairs if paired(a, b)]
        for n, a, b in pairs:
            rows.append(_claim_row(template.replace("{n}", str(n)).replace(" ≥ next larger N", ""), paired(a, b)))
        if len(pairs) > 1 and "next larger" not in template:  # that mean is just (smallest − largest N) / steps
            seeds = set.intersection(*(set(a) & set(b) for _, a, b in pairs))
            means = [statistics.fmean(a[s] - b[s] for _, a, b in pairs) for s in sorted(seeds)]
            if means:
                rows.append(_claim_row(f"**{template.replace('1×{n}', '1×N')}, mean over N**", means))
    if len(ns) > 2 and paired(get("1xN", ns[0], True), get("1xN", ns[-1], True)):
        rows.append(_claim_row(f"1×{ns[0]} ≥ 1×{ns[-1]}", paired(get("1xN", ns[0], True), get("1xN", ns[-1], True))))
    return rows


def _claim_row(label, diffs):
    s = summary(diffs)
    t = f"{s['mean'] / (s['std'] / math.sqrt(s['n'])):+.1f}" if s["std"] else "–"
    return [label, cell(diffs, signed=True), t, f"{sum(d > 0 for d in diffs)}/{len(diffs)}"]


def noise(groups):
    """Median seed-to-seed std of single runs over the configurations that have ≥ 2 seeds."""
    stds = [statistics.stdev(v.values()) for v in groups.values() if len(v) > 1]
    return (statistics.median(stds), len(stds)) if stds else (None, 0)


def write_tables(runs, out):
    groups = group(runs)
    archs = [a for a in ARCHS if any(k[0] == a for k in groups)]
    rates = sorted({k[3] for k in groups})
    setups = sorted({r["setup"] for r in runs if r["finished"]})
    seeds = sorted({len(v) for v in groups.values()})
    median_std, with_seeds = noise(groups)
    text = ["# Results", "",
            f"Top-1 (%) after the **last fine-tuning epoch** of each run (the `pruned` evaluation for runs "
            f"with 0 epochs), from {sum(r['finished'] for r in runs)} finished runs "
            f"({sum(not r['finished'] for r in runs)} unfinished, left out). Ours: mean ± sample std over "
            f"seeds where there are several (seeds per configuration: {', '.join(map(str, seeds)) or '–'}). "
            "Paper: ImageNet top-1 at p = 0.5 (SPEC §9; 1×N rows of Table 2 are with rearrangement); "
            "the data sets differ, so compare orderings, not values.", ""]
    text += [f"Setup: {s}." for s in setups] + [""]
    if median_std is not None:
        text += [f"Seed-to-seed noise: the median std of a single run's top-1 over the {with_seeds} "
                 f"configurations with several seeds is {median_std:.2f} points.", ""]
    for arch in archs:
        for rate in rates:
            keys = {k[4] for k in groups if k[0] == arch and k[1] == "1xN" and k[3] == rate}
            if keys == {False, True}:
                text += [f"## Table 1: {ARCH_NAMES[arch]}, 1×N at p = {rate:g}, without / with rearrangement", "",
                         table1(groups, arch, rate), ""]
    # Table 2 is the paper's p = 0.5 comparison; other rates appear in the Fig. 4 tables.
    for rate in [0.5] if 0.5 in rates else rates:
        if any(method_rows(groups, arch, rate) for arch in archs):
            present = [arch for arch in archs if method_rows(groups, arch, rate)]
            text += [f"## Table 2: weight, filter and 1×N (rearranged) pruning at p = {rate:g}", "",
                     table2(groups, runs, rate, present), ""]
    for arch in archs:
        rates_here, _, table = fig4_table(groups, arch)
        if len(rates_here) > 1:
            text += [f"## Fig. 4: {ARCH_NAMES[arch]}, top-1 against the pruning rate (1×N rearranged)", "", table,
                     "", f"![Fig. 4 {ARCH_NAMES[arch]}](fig4_{arch}.png)", ""]
    for arch in archs:
        for rate in rates:
            for rearrange in (False, True):
                if any(k[0] == arch and k[1] == "random" and k[3] == rate and k[4] == rearrange for k in groups):
                    text += [f"## ℓ1 vs random blocks: {ARCH_NAMES[arch]}, p = {rate:g}, "
                             f"{'with' if rearrange else 'without'} rearrangement", "",
                             random_table(groups, arch, rate, rearrange), ""]
    for arch in archs:
        for rate in rates:
            rows = orderings(groups, arch, rate)
            if rows:
                text += [f"## The paper's orderings: {ARCH_NAMES[arch]}, p = {rate:g}", "",
                         "A − B in top-1 points, paired by seed (mean ± std over seeds); t = mean / (std / √n), "
                         "a difference is significant at 5 % (two-sided) when |t| > 4.30 with 3 seeds, 3.18 with 4, 2.78 with 5; "
                         "and in how many seeds A > B. 1×N is rearranged except in the ℓ1 vs random rows "
                         "(both plain).", "",
                         markdown(["claim", "A − B", "t", "A > B in"], rows), ""]
    (out / "tables.md").write_text("\n".join(text))


def write_csv(runs, out):
    fields = ["job_dir", "arch", "method", "N", "rate", "rearrange", "variant", "seed", "epochs", "finished", "top1",
              "top5", "pruned_top1", "dense_top1"]
    with open(out / "runs.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(runs)


# ---------------------------------------------------------------- plots

def _errorbar(ax, xs, series, **style):
    stats = [summary(v) for v in series]
    ax.errorbar(xs, [s["mean"] for s in stats], yerr=[s["std"] or 0 for s in stats], capsize=3, marker="o",
                markersize=4, **style)


def write_plots(runs, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group(runs)
    written = []
    for arch in ARCHS:
        rates, rows, _ = fig4_table(groups, arch)
        if len(rates) > 1:
            fig, ax = plt.subplots(figsize=(6.4, 4.4))
            for label, by_rate in rows.items():
                xs = [r for r in rates if by_rate.get(r)]
                _errorbar(ax, xs, [by_rate[r] for r in xs], label=label,
                          linestyle="--" if label.endswith("pruning") else "-")
            dense = dense_values(runs, arch)
            if dense:
                ax.axhline(statistics.fmean(dense), color="gray", linewidth=0.8, linestyle=":", label="dense")
            ax.set(xlabel="pruning rate p", ylabel="top-1 (%) after fine-tuning",
                   title=f"{ARCH_NAMES[arch]}: top-1 against the pruning rate (1×N rearranged)")
            ax.legend(fontsize=8, title=_seeds_note(rows.values()), title_fontsize=8)
            written.append(_save(fig, out / f"fig4_{arch}.png"))
        for rate in sorted({k[3] for k in groups if k[0] == arch}):
            lines = {"without rearrangement": ("1xN", False), "with rearrangement": ("1xN", True),
                     "random blocks (not rearranged)": ("random", False)}
            series = {}
            for label, (method, rearrange) in lines.items():
                ns = sorted(k[2] for k in groups if k[0] == arch and k[1] == method and k[3] == rate and k[4] == rearrange)
                if ns:
                    series[label] = (ns, [list(groups[(arch, method, n, rate, rearrange)].values()) for n in ns])
            if len(series) < 2:
                continue
            paper = [(n, published(arch, "1xN", n, rate, False), published(arch, "1xN", n, rate, True))
                     for n in sorted(PUBLISHED_V2_PLAIN)]
            paper = [row for row in paper if None not in row]
            fig, axes = plt.subplots(1, 2 if paper else 1, figsize=(10 if paper else 6, 4.2), squeeze=False)
            ax = axes[0][0]
            for label, (ns, values) in series.items():
                _errorbar(ax, ns, values, label=label, linestyle=":" if label.startswith("random") else "-")
            ax.set(xscale="log", xlabel="N (block height)", ylabel="top-1 (%) after fine-tuning",
                   title=f"ours: {ARCH_NAMES[arch]}, p = {rate:g}")
            ax.set_xticks(sorted({n for ns, _ in series.values() for n in ns}))
            ax.legend(fontsize=8, title=_seeds_note([{n: v for n, v in zip(*s)} for s in series.values()]),
                      title_fontsize=8)
            if paper:
                ax = axes[0][1]
                ns = [n for n, *_ in paper]
                ax.plot(ns, [p for _, p, _ in paper], marker="o", label="without rearrangement")
                ax.plot(ns, [p for *_, p in paper], marker="o", label="with rearrangement")
                ax.set(xscale="log", xlabel="N (block height)", ylabel="top-1 (%)",
                       title=f"paper (ImageNet): {ARCH_NAMES[arch]}, p = 0.5", xticks=ns)
                ax.legend(fontsize=8)
            for a in axes[0]:
                a.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
                a.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
            written.append(_save(fig, out / f"table1_{arch}_p{rate:g}.png"))
    return written


def _seeds_note(series):
    """Legend title: how many seeds the error bars span."""
    counts = sorted({len(values) for by_x in series for values in by_x.values()})
    if counts == [1]:
        return "one seed each"
    return f"mean ± std over {'/'.join(map(str, counts))} seeds"


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def get_args_parser():
    p = argparse.ArgumentParser(description="Tables (Markdown), runs.csv and plots from sweep job dirs.")
    p.add_argument("job_root", help="the --root of the sweeps (job dirs anywhere below it)")
    p.add_argument("--out", required=True, help="folder for tables.md, runs.csv and the PNGs")
    p.add_argument("--no_plots", action="store_true", help="skip the matplotlib plots")
    return p


def main(args):
    root, out = Path(args.job_root), Path(args.out)
    if not root.is_dir():
        raise SystemExit(f"error: {root}: {'is a file, not a folder' if root.exists() else 'no such folder'}")
    runs = collect(root)
    if not runs:
        raise SystemExit(f"error: no runs (config.json + metrics.jsonl) under {root}")
    setups = {run["setup"] for run in runs}
    if len(setups) > 1:  # the tables key runs by arch, method, N, rate, rearrangement and seed only
        print(f"warning: {root} mixes {len(setups)} recipes, which the tables pool: " + "; ".join(sorted(setups)),
              file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(runs, out)
    write_tables(runs, out)
    plots = [] if args.no_plots else write_plots(runs, out)
    if any(run["variant"] != "oneshot" for run in runs):
        plots += schedule_kd.write(runs, out, plots=not args.no_plots)
    print(f"{len(runs)} runs → {out / 'tables.md'}, {out / 'runs.csv'}" + "".join(f", {p.name}" for p in plots))
    return runs


if __name__ == "__main__":
    main(get_args_parser().parse_args())
