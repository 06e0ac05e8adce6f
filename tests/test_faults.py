"""A crash never costs more than the work since the last checkpoint, and a resumed run equals an
uninterrupted one: SIGTERM mid-epoch (in fine-tuning or pre-training), SIGKILL mid-epoch, SIGKILL in
the middle of a save. Data-loader workers leave SIGTERM to their main process."""
import argparse
import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import data
from conftest import CPU_ONLY_ENV, ROOT

STEPS_PER_EPOCH = 6  # 24 tiny training images, batch 4


def argv(tiny_data, job_dir, *extra):
    return ["--data_path", str(tiny_data), "--job_dir", str(job_dir), "--img_size", "32", "--workers", "0",
            "--arch", "mobilenet_v1", "--train_batch_size", "4", "--eval_batch_size", "8", "--warmup_epochs", "1",
            "--num_epochs", "2", "--lr", "0.01", "--seed", "3", "--print_freq", "3", *extra]


def run_with_fault(arguments, fault):
    """Run imagenet.cli in a child process whose SGD.step / torch.save carry the injected `fault`."""
    code = textwrap.dedent(f"""
        import io, os, signal, sys
        import torch
        import imagenet
        steps = 0
        real_step, real_save = torch.optim.SGD.step, torch.save
        def step(self, *a, **k):
            global steps
            steps += 1
            out = real_step(self, *a, **k)
            {fault.get("step", "pass")}
            return out
        def save(obj, f, *a, **k):
            {fault.get("save", "return real_save(obj, f, *a, **k)")}
        torch.optim.SGD.step, torch.save = step, save
        sys.exit(imagenet.cli({arguments!r}))
    """)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **CPU_ONLY_ENV})  # exact resume is a CPU promise


def final_state(job_dir):
    return torch.load(job_dir / "checkpoint" / "model_last.pt", weights_only=True)


def resume_and_compare(tiny_data, job_dir, straight):
    result = run_with_fault(argv(tiny_data, job_dir, "--resume"), {})
    assert result.returncode == 0, result.stderr
    resumed = final_state(job_dir)
    assert resumed["epoch"] == 2 and resumed["progress"] is None
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert resumed["best_acc"] == straight["best_acc"]
    # A kill between an epoch's evaluation and its save repeats that epoch's record: the last one counts.
    records = [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]
    finetune = {r["epoch"]: r for r in records if r["phase"] == "finetune"}
    assert sorted(finetune) == [1, 2]
    assert max(r["top5"] for r in finetune.values()) == straight["best_acc"]


@pytest.fixture(scope="module")
def straight(tiny_data, tmp_path_factory):
    job_dir = tmp_path_factory.mktemp("straight")
    result = run_with_fault(argv(tiny_data, job_dir), {})
    assert result.returncode == 0, result.stderr
    return final_state(job_dir)


def test_sigterm_saves_at_the_next_log_point_and_resume_is_exact(tiny_data, tmp_path, straight):
    stop_at = STEPS_PER_EPOCH + 2  # in fine-tuning epoch 2, one step before its first log point (--print_freq 3)
    result = run_with_fault(argv(tiny_data, tmp_path),
                            {"step": f"if steps == {stop_at}: os.kill(os.getpid(), signal.SIGTERM)"})
    assert result.returncode == 0, result.stderr
    saved = final_state(tmp_path)
    assert saved["epoch"] == 1 and saved["progress"]["step"] == 3
    resume_and_compare(tiny_data, tmp_path, straight)


def test_sigkill_mid_epoch_loses_only_that_epoch(tiny_data, tmp_path, straight):
    result = run_with_fault(argv(tiny_data, tmp_path),
                            {"step": f"if steps == {STEPS_PER_EPOCH + 2}: os.kill(os.getpid(), signal.SIGKILL)"})
    assert result.returncode == -9
    assert final_state(tmp_path)["epoch"] == 1
    resume_and_compare(tiny_data, tmp_path, straight)


def test_sigkill_in_the_middle_of_a_save_keeps_the_previous_checkpoint(tiny_data, tmp_path, straight):
    half_write_then_die = textwrap.indent(textwrap.dedent(f"""
        if steps <= {STEPS_PER_EPOCH}:
            return real_save(obj, f, *a, **k)
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)"""), " " * 12).strip()
    result = run_with_fault(argv(tiny_data, tmp_path), {"save": half_write_then_die})
    assert result.returncode == -9
    assert list((tmp_path / "checkpoint").glob(".model_last.pt.*.tmp")), "the kill should hit a save"
    assert final_state(tmp_path)["epoch"] == 1
    resume_and_compare(tiny_data, tmp_path, straight)
    assert not list((tmp_path / "checkpoint").glob(".*.tmp"))


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tiny_data, tmp_path):
    poison = f"if steps == {STEPS_PER_EPOCH + 1}:\n                [p.data.fill_(float('nan')) for g in self.param_groups for p in g['params']]"
    result = run_with_fault(argv(tiny_data, tmp_path), {"step": poison})
    assert result.returncode == 2
    assert "error: loss is nan at epoch 1, step 1" in result.stderr and "Traceback" not in result.stderr
    assert final_state(tmp_path)["epoch"] == 1


def test_sigterm_in_pre_training_saves_and_resume_prunes_and_fine_tunes_exactly(tiny_data, tmp_path_factory):
    pretrain = ("--pretrain_epochs", "2", "--num_epochs", "1")
    straight_dir, job_dir = tmp_path_factory.mktemp("straight_pretrain"), tmp_path_factory.mktemp("pretrain")
    result = run_with_fault(argv(tiny_data, straight_dir, *pretrain), {})
    assert result.returncode == 0, result.stderr
    straight = final_state(straight_dir)

    stop_at = STEPS_PER_EPOCH + 2  # in pre-training epoch 2; its next log point is step 3
    result = run_with_fault(argv(tiny_data, job_dir, *pretrain),
                            {"step": f"if steps == {stop_at}: os.kill(os.getpid(), signal.SIGTERM)"})
    assert result.returncode == 0, result.stderr
    saved = final_state(job_dir)
    assert (saved["phase"], saved["epoch"], saved["progress"]["step"]) == ("pretrain", 1, 3)
    assert not (job_dir / "checkpoint" / "dense.pt").exists()
    assert not any(key.endswith(".mask") and (value == 0).any() for key, value in saved["state_dict"].items())

    result = run_with_fault(argv(tiny_data, job_dir, *pretrain, "--resume"), {})
    assert result.returncode == 0, result.stderr
    resumed = final_state(job_dir)
    assert (resumed["phase"], resumed["epoch"], resumed["progress"]) == ("finetune", 1, None)
    for key, value in straight["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    dense = [torch.load(d / "checkpoint" / "dense.pt", weights_only=True)["state_dict"] for d in (straight_dir, job_dir)]
    assert all(torch.equal(dense[0][key], dense[1][key]) for key in dense[0])
    phases = [(r["phase"], r["epoch"]) for r in map(json.loads, (job_dir / "metrics.jsonl").read_text().splitlines())
              if r["phase"] in ("pretrain", "dense", "pruned", "finetune")]
    assert phases == [("pretrain", 1), ("pretrain", 2), ("dense", 0), ("pruned", 0), ("finetune", 1)]


class WorkerPid:
    """A data set whose every sample is the pid of the process that loaded it."""

    def __len__(self):
        return 8

    def __getitem__(self, index):
        return os.getpid()


def test_loader_workers_ignore_sigterm_except_from_their_main_process():
    loader = data._loader(WorkerPid(), 1, False, argparse.Namespace(seed=0, workers=1), rank=0, world_size=1)
    batches = iter(loader)
    worker = int(next(batches))
    subprocess.run(["kill", "-TERM", str(worker)], check=True)  # another process, as a scheduler's signal
    time.sleep(0.5)
    assert [int(pid) for pid in batches] == [worker] * 7  # the worker kept loading
    process = next(p for p in multiprocessing.active_children() if p.pid == worker)
    os.kill(worker, signal.SIGTERM)  # from the main process (multiprocessing does this at exit)
    process.join(timeout=30)
    assert process.exitcode == 0


def test_sigterm_in_pre_training_with_distillation_resumes(tiny_data, tmp_path):
    """The teacher is the model as pre-training leaves it: a resumed pre-training makes it when
    it prunes, rather than looking for a dense.pt that does not exist yet."""
    flags = ("--pretrain_epochs", "2", "--num_epochs", "1", "--distill")
    result = run_with_fault(argv(tiny_data, tmp_path, *flags),
                            {"step": f"if steps == {STEPS_PER_EPOCH + 2}: os.kill(os.getpid(), signal.SIGTERM)"})
    assert result.returncode == 0, result.stderr
    assert final_state(tmp_path)["phase"] == "pretrain"
    result = run_with_fault(argv(tiny_data, tmp_path, *flags, "--resume"), {})
    assert result.returncode == 0, result.stderr
    resumed = final_state(tmp_path)
    assert (resumed["phase"], resumed["epoch"]) == ("finetune", 1)
    assert any(json.loads(line).get("teacher_seconds", 0) > 0
               for line in (tmp_path / "metrics.jsonl").read_text().splitlines())
