"""torchrun on two CPU processes (gloo): identical ranks, rank 0 writes, exact val counts, --resume."""
import json
import os
import shlex
import subprocess
import sys

import pytest
import torch

from conftest import CPU_ONLY_ENV, ROOT
from imagenet import UsageError, get_args_parser, select_device
from utils import distributed


def torchrun(*argv, env=None):
    # --standalone: a private rendezvous on a free port, so parallel test runs do not collide.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(ROOT / "imagenet.py"), *map(str, argv)]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **CPU_ONLY_ENV, **(env or {})})  # gloo ranks


def metrics(job_dir):
    return [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]


def test_torchrun_two_cpu_processes_train_and_resume(tiny_data, tmp_path):
    job, digests = tmp_path / "job", tmp_path / "digests"
    # 11 validation images: shards of 6 and 5; a padding sampler would count 12.
    argv = ["--data_path", tiny_data, "--job_dir", job, "--img_size", 32, "--workers", 0, "--arch", "mobilenet_v1",
            "--num_classes", 3, "--train_batch_size", 8, "--eval_batch_size", 4, "--warmup_epochs", 1,
            "--lr", 0.01, "--N", 2, "--pr_target", 0.5, "--val_images", 11]
    result = torchrun(*argv, "--num_epochs", 1, env={distributed.DIGEST_ENV: str(digests)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    rank0, rank1 = (json.loads((digests / f"rank{rank}.json").read_text()) for rank in (0, 1))
    assert rank0 == rank1  # weights, BN statistics and masks, bit for bit
    state = torch.load(job / "checkpoint" / "model_last.pt", weights_only=True)["state_dict"]
    assert not any(key.startswith("module.") for key in state)
    assert distributed.state_digest(state) == rank0
    masks = {key.removesuffix(".mask"): value for key, value in state.items() if key.endswith(".mask")}
    assert any((mask == 0).any() for mask in masks.values())
    for name, mask in masks.items():
        assert (state[f"{name}.weight"][mask == 0] == 0).all(), name

    # Rank 0 alone wrote the job dir and logged; every evaluation counts each val image once.
    assert len(list(job.glob("logger*.log"))) == 1 and len(list((job / "run").glob("events.out.tfevents.*"))) == 1
    evaluations = [r for r in metrics(job) if r["phase"] in ("dense", "pruned", "finetune")]
    assert [r["phase"] for r in evaluations] == ["dense", "pruned", "finetune"]
    assert all(r["images"] == 11 for r in evaluations)
    assert result.stdout.count("finetune (epoch 1)") == 1

    resumed = torchrun(*argv, "--num_epochs", 2, "--resume")
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
    assert [r["epoch"] for r in metrics(job) if r["phase"] == "finetune"] == [1, 2]
    assert torch.load(job / "checkpoint" / "model_last.pt", weights_only=True)["epoch"] == 2


def test_several_gpus_stop_with_the_exact_torchrun_command(monkeypatch):
    parser = get_args_parser()
    args = parser.parse_args(["--gpus", "0", "1", "2", "3", "--arch", "mobilenet_v1", "--data_path", "/data/my net",
                              "--rearrange", "--lr_decay_step", "30", "60", "--pr_target", "0.7"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(UsageError) as error:
        select_device(args, distributed.Context())
    command = str(error.value).split("run: ", 1)[1]
    assert command.startswith("torchrun --nproc_per_node=4 imagenet.py --gpus 0 1 2 3 ")
    assert parser.parse_args(shlex.split(command)[3:]) == args  # the same run, every argument


def test_global_batch_must_split_evenly(monkeypatch, tiny_data, tmp_path):
    from imagenet import main
    monkeypatch.setenv("WORLD_SIZE", "3")
    args = get_args_parser().parse_args(["--data_path", str(tiny_data), "--job_dir", str(tmp_path),
                                         "--train_batch_size", "8"])
    with pytest.raises(UsageError, match="global batch"):
        main(args)
