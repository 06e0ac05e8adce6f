"""The sweep scripts (experiment/*.sh) and the aggregator: hand-made job dirs (fast), and one real
two-run sweep on the tiny generated data whose table must show the runs' own numbers."""
import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from conftest import ROOT
from experiment import aggregate, jobs


def make_job(root, name, records, finished=True, **config):
    """A job dir as imagenet.py leaves it: config.json, metrics.jsonl, checkpoint/model_last.pt."""
    job = Path(root) / name
    (job / "checkpoint").mkdir(parents=True)
    defaults = {"arch": "mobilenet_v2", "conv_type": "BlockL1Conv", "N": 4, "pr_target": 0.5, "rearrange": False,
                "seed": 0, "num_epochs": 1, "data_path": None, "img_size": 32, "train_images": 3000,
                "val_images": 2000, "evaluate": None}
    (job / "config.json").write_text(json.dumps({**defaults, **config}))
    (job / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    if finished:
        (job / "checkpoint" / "model_last.pt").write_bytes(b"")
    return job


def evals(top1, dense=80.0, pruned=10.0, epochs=1):
    records = [{"phase": "dense", "epoch": 0, "top1": dense, "top5": 99.0},
               {"phase": "pruned", "epoch": 0, "top1": pruned, "top5": 50.0}]
    for epoch in range(1, epochs + 1):
        records += [{"phase": "finetune_train", "epoch": epoch, "top1": 1.0, "top5": 2.0},
                    {"phase": "finetune", "epoch": epoch, "top1": top1 - (epochs - epoch), "top5": 98.0}]
    return records


def aggregated(root, tmp_path):
    out = tmp_path / "out"
    aggregate.main(aggregate.get_args_parser().parse_args([str(root), "--out", str(out), "--no_plots"]))
    return (out / "tables.md").read_text(), list(csv.DictReader(open(out / "runs.csv")))


def row(table_text, heading, first_cell):
    """The cells of the row starting with `first_cell` in the table under the heading containing `heading`."""
    section = table_text.split(heading, 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] == first_cell:
            return cells[1:]
    raise AssertionError(f"no row {first_cell!r} under {heading!r}")


# ---------------------------------------------------------------- the aggregator on hand-made dirs

@pytest.fixture
def study(tmp_path):
    """V2 at p = 0.5: 1×4 plain/rearranged, weight, filter, random over two seeds; odd cases beside."""
    root = tmp_path / "runs"
    top1 = {("1x4", 0): 70.0, ("1x4", 1): 72.0, ("1x4r", 0): 71.0, ("1x4r", 1): 74.0, ("weight", 0): 75.0,
            ("weight", 1): 76.0, ("filter", 0): 60.0, ("filter", 1): 62.0, ("rnd", 0): 65.0, ("rnd", 1): 66.0}
    kinds = {"1x4": {}, "1x4r": {"rearrange": True}, "weight": {"conv_type": "UnstructureConv"},
             "filter": {"conv_type": "StructureConv"}, "rnd": {"conv_type": "BlockRandomConv"}}
    for (kind, seed), value in top1.items():
        make_job(root, f"v2/{kind}/seed{seed}", evals(value, dense=80.0 + seed), seed=seed, **kinds[kind])
    make_job(root, "v2/dense", evals(0)[:1], conv_type="DenseConv", num_epochs=0)  # pre-training job: not a run
    make_job(root, "v2/1x8/seed0", evals(50.0, epochs=2)[:-1], N=8, num_epochs=2)  # interrupted after epoch 1
    make_job(root, "v2/1x2_r/seed0", evals(68.0), N=2, rearrange=True, pr_target=0.7)
    make_job(root, "v2/1x2/seed0", evals(0.0, pruned=33.0)[:2], N=2, pr_target=0.7, num_epochs=0)
    return root


def test_tables_hold_mean_std_paper_and_paired_differences(study, tmp_path):
    text, _ = aggregated(study, tmp_path)
    assert "last fine-tuning epoch" in text and "from 12 finished runs (1 unfinished" in text
    assert row(text, "Table 1: V2, 1×N at p = 0.5", "1×4") == [
        "71.00 ± 1.41", "69.52", "72.50 ± 2.12", "69.58", "+1.50 ± 0.71"]
    table2 = row(text, "Table 2: weight, filter and 1×N (rearranged) pruning at p = 0.5", "weight pruning")
    assert table2 == ["75.50 ± 0.71", "71.15"]
    assert row(text, "Table 2: weight, filter and 1×N (rearranged) pruning at p = 0.5", "dense") == [
        "80.50 ± 0.71", "71.74"]
    assert row(text, "ℓ1 vs random blocks: V2, p = 0.5, without", "1×4") == [
        "71.00 ± 1.41", "65.50 ± 0.71", "+5.50 ± 0.71"]
    assert row(text, "orderings: V2, p = 0.5", "1×4 ≥ filter") == ["+11.50 ± 0.71", "+23.0", "2/2"]
    assert row(text, "orderings: V2, p = 0.5", "weight ≥ 1×4") == ["+3.00 ± 1.41", "+3.0", "2/2"]
    # Fig. 4 (p = 0.5, 0.7) shows rearranged 1×N only: the plain 1×2 at p = 0.7 is not in it.
    assert row(text, "Fig. 4: V2", "1×2") == ["–", "68.00"]
    assert row(text, "Fig. 4: V2", "1×4") == ["72.50 ± 2.12", "–"]


def test_runs_csv_marks_unfinished_runs_and_zero_epoch_runs_use_pruned(study, tmp_path):
    _, rows = aggregated(study, tmp_path)
    by_dir = {r["job_dir"]: r for r in rows}
    assert "v2/dense" not in by_dir and len(rows) == 13
    assert by_dir["v2/1x8/seed0"]["finished"] == "False" and by_dir["v2/1x8/seed0"]["top1"] == "49.0"
    assert by_dir["v2/1x2/seed0"]["finished"] == "True" and by_dir["v2/1x2/seed0"]["top1"] == "33.0"
    assert by_dir["v2/weight/seed1"]["N"] == "" and by_dir["v2/weight/seed1"]["rearrange"] == "False"


def test_a_resumed_run_counts_its_last_record(tmp_path):
    records = evals(70.0) + [{"phase": "finetune", "epoch": 1, "top1": 71.5, "top5": 98.0}]
    job = make_job(tmp_path / "runs", "a/seed0", records)
    run = aggregate.read_run(job, tmp_path / "runs")
    assert run["finished"] and run["top1"] == 71.5


def test_plots_are_written(study, tmp_path):
    pytest.importorskip("matplotlib")
    aggregate.main(aggregate.get_args_parser().parse_args([str(study), "--out", str(tmp_path / "out")]))
    assert (tmp_path / "out" / "fig4_mobilenet_v2.png").stat().st_size > 10_000
    assert (tmp_path / "out" / "table1_mobilenet_v2_p0.5.png").stat().st_size > 10_000


def test_job_state(tmp_path):
    assert jobs.state(tmp_path / "missing", 1) == "new"
    assert jobs.state(make_job(tmp_path, "done", evals(70.0)), 1) == "done"
    assert jobs.state(make_job(tmp_path, "more", evals(70.0)), 2) == "resume"  # asked for more epochs
    assert jobs.state(make_job(tmp_path, "died", evals(70.0)[:2], finished=False), 1) == "new"
    torn = make_job(tmp_path, "torn", evals(70.0))
    with open(torn / "metrics.jsonl", "a") as f:
        f.write('{"phase": "fine')
    assert jobs.state(torn, 1) == "done"


def test_dense_job_state(tmp_path):
    """A dense pre-training job stopped with a checkpoint resumes; one without starts afresh."""
    assert jobs.dense_state(tmp_path / "missing") == "new"
    assert jobs.dense_state(make_job(tmp_path, "died", [], finished=False)) == "new"
    assert jobs.dense_state(make_job(tmp_path, "stopped", [{"phase": "pretrain", "epoch": 1, "top1": 50.0}])) == "resume"
    done = make_job(tmp_path, "done", evals(70.0)[:2])
    (done / "checkpoint" / "dense.pt").write_bytes(b"")
    assert jobs.dense_state(done) == "done"


# ---------------------------------------------------------------- the bash side

def sweep(script, *argv, env=None):
    return subprocess.run(["bash", str(ROOT / "experiment" / script), *map(str, argv)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120, env={**os.environ, "PYTHON": sys.executable, **(env or {})})


def test_dry_run_skips_finished_resumes_interrupted_and_restarts_the_rest(tmp_path):
    root, pretrained = tmp_path / "runs", tmp_path / "pre"
    pretrained.mkdir()
    (pretrained / "mobilenet_v2.pth").write_bytes(b"")
    make_job(root, "mobilenet_v2/1x2_p0.5/seed0", evals(70.0))
    make_job(root, "mobilenet_v2/1x2_p0.5_rearranged/seed0", evals(70.0, epochs=2)[:-1], num_epochs=2)
    make_job(root, "mobilenet_v2/1x4_p0.5/seed0", evals(70.0)[:2], finished=False)
    result = sweep("table1.sh", "--N", "2 4", "--root", root, "--pretrained_dir", pretrained, "--epochs", 2,
                   "--gpus", "0 1", "--dry_run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert sum(line.startswith("[") for line in lines) == 4
    resumed = [line for line in lines if line.startswith("[resume]")]
    assert len(resumed) == 2 and all(line.endswith("--resume") for line in resumed)  # 1×2 plain: 1 → 2 epochs
    assert sum(line.startswith("[new]") for line in lines) == 2
    new = next(line for line in lines if "1x4_p0.5_rearranged" in line)
    assert "--N 4 --rearrange" in new and "--gpus 1" in new and "mobilenet_v2.pth" in new
    assert "--gpus 0" in next(line for line in lines if "1x2_p0.5/seed0" in line)


def test_baselines_leave_out_n_and_rearrange(tmp_path):
    result = sweep("fig4.sh", "--rates", "0.3", "--N", "8", "--root", tmp_path, "--quick", "--dry_run")
    assert result.returncode == 0, result.stderr
    weight = next(line for line in result.stdout.splitlines() if "/weight_p0.3/seed0" in line)
    assert "UnstructureConv" in weight and "--N " not in weight and "--rearrange" not in weight
    assert sum(line.startswith("[new]") for line in result.stdout.splitlines()) == 4  # dense, weight, filter, 1×8


@pytest.mark.parametrize("argv,message", [
    (["--arch", "resnet"], "unknown architecture resnet"),
    (["--rates", "1.5"], "--rates: expected rates in [0, 1)"),
    (["--seeds", "x"], "expected a whole number, got x"),
    (["--data_path", "/nonexistent"], "no such folder"),
    (["--bogus"], "unknown option --bogus"),
])
def test_bad_sweep_options_are_one_line_errors(argv, message):
    result = sweep("table2.sh", *argv, "--dry_run")
    assert result.returncode == 2 and message in result.stderr


def test_imagenet_needs_a_dense_model(tiny_data):
    result = sweep("table1.sh", "--data_path", tiny_data, "--dry_run")
    assert result.returncode == 2 and "--pretrained_dir" in result.stderr


# ---------------------------------------------------------------- a real sweep

def test_two_run_sweep_then_aggregate(tiny_data, tmp_path):
    pretrained, root = tmp_path / "pre", tmp_path / "runs"
    pretrained.mkdir()
    dense = models.get_model("mobilenet_v3_small", conv_type="DenseConv", num_classes=3)
    torch.save({"state_dict": dense.state_dict()}, pretrained / "mobilenet_v3_small.pth")
    argv = ["--data_path", tiny_data, "--arch", "mobilenet_v3_small", "--N", "2", "--epochs", 1, "--root", root,
            "--pretrained_dir", pretrained, "--", "--img_size", 32, "--workers", 0, "--train_batch_size", 8,
            "--eval_batch_size", 8, "--warmup_epochs", 0]
    result = sweep("table1.sh", *argv, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    job_dirs = sorted(p.parent for p in root.rglob("metrics.jsonl"))
    assert [p.relative_to(root).as_posix() for p in job_dirs] == [
        "mobilenet_v3_small/1x2_p0.5/seed0", "mobilenet_v3_small/1x2_p0.5_rearranged/seed0"]

    again = sweep("table1.sh", *argv)  # everything finished: nothing runs
    assert again.returncode == 0 and again.stdout.count("skip") == 2 and "start" not in again.stdout

    text, rows = aggregated(root, tmp_path)
    final = {p.parent.name: jobs.last(jobs.read_metrics(p), "finetune")["top1"] for p in job_dirs}
    cells = row(text, "Table 1: V3-small, 1×N at p = 0.5", "1×2")
    assert cells[0] == f"{final['1x2_p0.5']:.2f}" and cells[2] == f"{final['1x2_p0.5_rearranged']:.2f}"
    assert cells[1] == "–" and cells[3] == "65.38"  # the paper gives V3-small's 1×2 only rearranged
    assert {float(r["top1"]) for r in rows} == set(final.values())


def test_resnet50_runs_show_the_papers_fig4b_numbers(tmp_path):
    root = tmp_path / "runs"
    make_job(root, "r50/1x4r/seed0", evals(60.0), arch="resnet50", rearrange=True)
    make_job(root, "r50/weight/seed0", evals(61.0), arch="resnet50", conv_type="UnstructureConv")
    make_job(root, "r50/filter/seed0", evals(59.0), arch="resnet50", conv_type="StructureConv")
    text, _ = aggregated(root, tmp_path)
    assert "ResNet-50 (paper)" in text
    assert row(text, "## Table 2", "1×4") == ["60.00", "76.51"]
    assert row(text, "## Table 2", "weight pruning")[1] == "77.09"
    assert row(text, "## Table 2", "filter pruning")[1] == "75.38"
    assert aggregate.published("resnet50", "1xN", 32, 0.5, True) == 75.960
    assert aggregate.PUBLISHED_DENSE["resnet50"] == 77.008


@pytest.mark.parametrize("script", ["table2.sh", "fig4.sh"])
def test_sweeps_accept_the_resnets(script, tmp_path):
    result = sweep(script, "--arch", "resnet18 resnet50", "--N", "4", "--rates", "0.5", "--root", tmp_path,
                   "--quick", "--dry_run")
    assert result.returncode == 0, result.stderr
    runs = [line for line in result.stdout.splitlines() if line.startswith("[new]")]
    assert sum("--arch resnet50" in line for line in runs) == sum("--arch resnet18" in line for line in runs) == 4
