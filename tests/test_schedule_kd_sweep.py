"""The schedule × distillation sweep: its job dirs and flags, and its tables (hand-made job dirs)."""
import subprocess

from conftest import ROOT
from test_sweep import aggregated, evals, make_job, row


def test_variants_get_their_own_job_dirs_and_flags(tmp_path):
    (tmp_path / "pre").mkdir()
    (tmp_path / "pre" / "mobilenet_v2.pth").write_bytes(b"")
    result = subprocess.run(["bash", str(ROOT / "experiment" / "schedule_kd.sh"), "--dry_run", "--N", "4",
                             "--rates", "0.7", "--root", str(tmp_path / "runs"), "--pretrained_dir", str(tmp_path / "pre")],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("[new]")]
    suffixes = {"1x4_p0.7_rearranged/": "", "1x4_p0.7_rearranged_cubic/": "--prune_schedule cubic --prune_every 50",
                "1x4_p0.7_rearranged_kd/": "--distill",
                "1x4_p0.7_rearranged_cubic_kd/": "--prune_schedule cubic --prune_every 50 --distill"}
    assert len(lines) == 4
    for line, (job, flags) in zip(lines, suffixes.items()):
        assert job in line and "--rearrange" in line and flags in line, line
        assert ("--distill" in line) == ("kd" in job) and ("cubic" in line) == ("cubic" in job)


def test_schedule_kd_table_pairs_by_seed(tmp_path):
    root = tmp_path / "runs"
    top1 = {"oneshot": (70.0, 71.0, 72.0), "cubic": (71.0, 73.0, 73.5), "kd": (72.0, 72.0, 75.0),
            "cubic_kd": (74.0, 74.0, 74.0)}
    flags = {"oneshot": {}, "cubic": {"prune_schedule": "cubic"}, "kd": {"distill": True},
             "cubic_kd": {"prune_schedule": "cubic", "distill": True}}
    for variant, values in top1.items():
        for seed, value in enumerate(values):
            make_job(root, f"v2/{variant}/seed{seed}", evals(value), seed=seed, rearrange=True, pr_target=0.7,
                     **flags[variant])
    text, rows = aggregated(root, tmp_path)
    assert {r["variant"] for r in rows} == set(top1)
    assert row(text, "## Table 2", "1×4")[0] == "71.00 ± 1.00"   # the paper's tables keep the one-shot runs only
    kd_text = (tmp_path / "out" / "schedule_kd.md").read_text()
    assert row(kd_text, "V2: top-1", "1×4, p = 0.7") == ["71.00 ± 1.00", "72.50 ± 1.32", "73.00 ± 1.73", "74.00 ± 0.00"]
    # cubic − one-shot per seed: +1, +2, +1.5 → mean +1.50 ± 0.50, t = 1.5 / (0.5/√3) = 5.2, 3/3 seeds
    assert row(kd_text, "paired differences", "cubic ≥ one-shot: 1×4, p = 0.7") == ["+1.50 ± 0.50", "+5.2", "3/3"]
