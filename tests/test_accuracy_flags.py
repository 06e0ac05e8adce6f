"""The flags of gradual pruning, distillation, --best_metric and --val_seed: one-line errors (exit 2,
nothing written), the best-model rule, the fixed validation subset, the cached test set."""
import argparse

import pytest
import torch

from data import build_datasets, fashion_mnist
from imagenet import cli
from test_bad_inputs import job_dir, snapshot  # noqa: F401  (a fixture)
from utils.trainer import default_best_metric, improves

ROWS = [
    ("kd_alpha > 1", ["--kd_alpha", "1.5"], "argument --kd_alpha: expected float in [0, 1], got '1.5'"),
    ("kd_alpha not a number", ["--kd_alpha", "half"], "argument --kd_alpha: expected float in [0, 1], got 'half'"),
    ("kd_temperature 0", ["--kd_temperature", "0"], "argument --kd_temperature: expected float > 0, got '0'"),
    ("prune_every 0", ["--prune_every", "0"], "argument --prune_every: expected int ≥ 1, got '0'"),
    ("prune_start negative", ["--prune_start_epoch", "-1"], "argument --prune_start_epoch: expected float ≥ 0, got '-1'"),
    ("unknown schedule", ["--prune_schedule", "linear"], "argument --prune_schedule: invalid choice: 'linear'"),
    ("unknown best metric", ["--best_metric", "top3"], "argument --best_metric: invalid choice: 'top3'"),
    ("ramp ends after training", ["--prune_schedule", "cubic", "--num_epochs", "2", "--prune_end_epoch", "2"],
     "--prune_start_epoch 0.0 / --prune_end_epoch 2.0: expected start ≤ end < --num_epochs 2"),
    ("ramp starts after it ends", ["--prune_schedule", "cubic", "--num_epochs", "4", "--prune_start_epoch", "3"],
     "--prune_start_epoch 3.0 / --prune_end_epoch 2.0: expected start ≤ end < --num_epochs 4"),
    ("cubic without fine-tuning", ["--prune_schedule", "cubic", "--num_epochs", "0"],
     "--prune_schedule cubic prunes during fine-tuning: give --num_epochs ≥ 1"),
    ("teacher without distill", ["--teacher", "x.pt"], "--teacher is the distillation teacher: add --distill"),
    ("distill from nothing", ["--distill", "--num_epochs", "1"], "--distill: the teacher is the dense model before pruning"),
    ("distill without fine-tuning", ["--distill", "--num_epochs", "0"], "--distill acts during fine-tuning"),
]


@pytest.mark.parametrize("case,argv,message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_flag(case, argv, message, job_dir, capsys):  # noqa: F811
    before = snapshot(job_dir)
    try:
        code = cli(["--job_dir", str(job_dir), "--workers", "0", *argv])
    except SystemExit as exit_:   # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1 and snapshot(job_dir) == before


def test_missing_teacher_file_is_named(tiny_data, tmp_path, capsys):
    code = cli(["--data_path", str(tiny_data), "--job_dir", str(tmp_path / "job"), "--workers", "0", "--img_size", "32",
                "--pretrain_epochs", "1", "--distill", "--teacher", str(tmp_path / "nope.pt")])
    assert code == 2 and f"--teacher {tmp_path / 'nope.pt'}: no such file" in capsys.readouterr().err
    assert not (tmp_path / "job").exists()


def test_best_metric_rule():
    assert default_best_metric(1000) == "top5" and default_best_metric(100) == "top5"
    assert default_best_metric(10) == "top1" and default_best_metric(99) == "top1"
    best = {"top1": 90.0, "top5": 99.0}
    assert improves({"top1": 91.0, "top5": 98.0}, best, "top1")
    assert not improves({"top1": 91.0, "top5": 98.0}, best, "top5")
    assert improves({"top1": 90.0, "top5": 99.5}, best, "top1")        # a tie on top-1: top-5 decides
    assert not improves({"top1": 90.0, "top5": 98.5}, best, "top1")


def test_summary_reports_the_chosen_best_and_the_last_epoch(tiny_data, tmp_path, capsys):
    job = tmp_path / "job"
    code = cli(["--data_path", str(tiny_data), "--job_dir", str(job), "--workers", "0", "--img_size", "32",
                "--num_classes", "3", "--num_epochs", "2", "--train_batch_size", "8", "--eval_batch_size", "8",
                "--warmup_epochs", "0", "--skip_initial_eval"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| best (by top1): top-1 " in out and "; last epoch: top-1 " in out
    saved = torch.load(job / "checkpoint" / "model_last.pt", weights_only=True)
    assert saved["best_metric"] == "top1" and saved["best_epoch"] in (1, 2)
    assert "| dense (epoch" not in out and "| pruned (epoch" not in out          # --skip_initial_eval


def test_val_seed_fixes_the_val_subset_across_seeds(tiny_data):
    def val_targets(seed, val_seed):
        args = argparse.Namespace(data_path=str(tiny_data), img_size=32, train_images=None, val_images=5,
                                  seed=seed, val_seed=val_seed)
        return build_datasets(args, need_train=False)[1].indices
    assert val_targets(1, 0) == val_targets(2, 0)
    assert val_targets(1, None) != val_targets(2, None)        # the old behaviour: drawn with --seed


def test_cached_test_set_equals_the_pil_pipeline(tmp_path):
    if not fashion_mnist.SOURCE.exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    root = fashion_mnist._unpack(root=tmp_path)
    images, targets = fashion_mnist._resized_test_images(20, root)
    reference = fashion_mnist.datasets.FashionMNIST(root, train=False, transform=fashion_mnist._transform(20, False))
    cached = fashion_mnist.ResizedTestSet.__new__(fashion_mnist.ResizedTestSet)
    cached.images, cached.targets = images, targets
    for index in range(0, 10000, 333):
        image, label = cached[index]
        expected, expected_label = reference[index]
        assert label == expected_label and torch.equal(image, expected), index
    assert (root / "FashionMNIST" / "test_20px.pt").exists()    # the next process loads it instead
