"""The schedule × distillation study (experiment/schedule_kd.sh): tables and a plot.

Writes `schedule_kd.md` (top-1 of one-shot, cubic, one-shot + KD and cubic + KD per N and rate,
mean ± std over seeds, and the paired differences that decide between them) and
`schedule_kd_<arch>.png`. Called by `python -m experiment.aggregate` when the root holds such runs.
"""
import statistics
from collections import defaultdict

VARIANTS = {"oneshot": "one-shot", "cubic": "cubic", "kd": "one-shot + KD", "cubic_kd": "cubic + KD"}
# (A, B, what A − B > 0 would mean)
CLAIMS = [("cubic", "oneshot", "cubic ≥ one-shot"), ("kd", "oneshot", "KD helps one-shot"),
          ("cubic_kd", "cubic", "KD helps cubic"), ("cubic_kd", "kd", "cubic ≥ one-shot, both with KD"),
          ("cubic_kd", "oneshot", "cubic + KD ≥ one-shot")]


def _cells(runs):
    """{(arch, N, rate): {variant: {seed: top1}}} over finished rearranged 1×N runs."""
    cells = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        if run["finished"] and run["method"] == "1xN" and run["rearrange"]:
            cells[run["arch"], run["N"], run["rate"]][run["variant"]][run["seed"]] = run["top1"]
    return {key: value for key, value in cells.items() if len(value) > 1}   # only where variants compete


def tables(runs):
    from experiment.aggregate import ARCH_NAMES, _claim_row, cell, markdown, paired
    cells = _cells(runs)
    text = ["# One-shot vs gradual (cubic) pruning, without and with distillation", "",
            "Rearranged 1×N pruning; top-1 (%) after the last fine-tuning epoch, mean ± std over seeds. "
            "Differences are paired by seed (same fine-tuning subset and order, same 10,000 test images); "
            "t = mean / (std / √n), significant at 5 % (two-sided) when |t| > 4.30 with 3 seeds; "
            "'A > B in' counts the seeds where A wins.", ""]
    archs = sorted({key[0] for key in cells})
    for arch in archs:
        keys = sorted(key for key in cells if key[0] == arch)
        rows = [[f"1×{n}, p = {rate:g}"] + [cell(cells[arch, n, rate].get(v, {}).values()) for v in VARIANTS]
                for _, n, rate in keys]
        text += [f"## {ARCH_NAMES[arch]}: top-1", "", markdown(["N, rate", *VARIANTS.values()], rows), ""]
        claim_rows = []
        for a, b, label in CLAIMS:
            pooled = defaultdict(list)   # per seed, the mean difference over every (N, rate) cell
            for key in keys:
                diffs = cells[key].get(a, {}), cells[key].get(b, {})
                if paired(*diffs):
                    claim_rows.append(_claim_row(f"{label}: 1×{key[1]}, p = {key[2]:g}", paired(*diffs)))
                    for seed in set(diffs[0]) & set(diffs[1]):
                        pooled[seed].append(diffs[0][seed] - diffs[1][seed])
            complete = [statistics.fmean(v) for v in pooled.values() if len(v) == len(keys)]
            if len(keys) > 1 and len(complete) > 1:
                claim_rows.append(_claim_row(f"**{label}: mean over all {len(keys)} (N, rate)**", complete))
        text += [f"## {ARCH_NAMES[arch]}: paired differences A − B (top-1 points)", "",
                 markdown(["claim (A − B)", "A − B", "t", "A > B in"], claim_rows), ""]
    return "\n".join(text)


def plot(runs, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from experiment.aggregate import ARCH_NAMES, _errorbar, _save

    cells = _cells(runs)
    written = []
    for arch in sorted({key[0] for key in cells}):
        ns = sorted({key[1] for key in cells if key[0] == arch})
        fig, axes = plt.subplots(1, len(ns), figsize=(5.2 * len(ns), 4.2), squeeze=False)
        for ax, n in zip(axes[0], ns):
            rates = sorted(key[2] for key in cells if key[:2] == (arch, n))
            for variant, label in VARIANTS.items():
                xs = [r for r in rates if cells[arch, n, r].get(variant)]
                if xs:
                    _errorbar(ax, xs, [list(cells[arch, n, r][variant].values()) for r in xs], label=label,
                              linestyle="--" if "KD" in label else "-")
            ax.set(xlabel="pruning rate p", ylabel="top-1 (%) after fine-tuning",
                   title=f"{ARCH_NAMES[arch]}, rearranged 1×{n}")
            ax.legend(fontsize=8)
        written.append(_save(fig, out / f"schedule_kd_{arch}.png"))
    return written


def write(runs, out, plots=True):
    (out / "schedule_kd.md").write_text(tables(runs))
    return plot(runs, out) if plots else []
