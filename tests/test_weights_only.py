"""No file we load runs code: a pickle whose `__reduce__` calls os.system is refused in one line,
exit 2, and its command never runs; the authors' checkpoints and ours keep loading."""
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from imagenet import cli


class Payload:
    """Unpickling this calls os.system(command): what a hostile checkpoint does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture
def hostile(tmp_path):
    """A checkpoint-shaped file whose payload would create `marker`."""
    marker = tmp_path / "payload_ran"
    path = tmp_path / "downloaded.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "epoch": Payload(f"touch {marker}")}, path)
    return path, marker


def expect_refused(code, err, path, flag, marker):
    assert code == 2
    assert err.strip() == err.strip().splitlines()[0], err  # one line
    assert f"{flag} {path}: refused, it asks to load posix.system" in err or \
        f"{flag} {path}: refused, it asks to load os.system" in err, err
    assert not marker.exists()


@pytest.mark.parametrize("flag", ["--evaluate", "--pretrained_model"])
def test_hostile_checkpoint_is_refused(flag, hostile, tmp_path, tiny_data, capsys):
    path, marker = hostile
    code = cli(["--data_path", str(tiny_data), "--job_dir", str(tmp_path / "job"), "--workers", "0",
                "--img_size", "32", flag, str(path)])
    expect_refused(code, capsys.readouterr().err, path, flag, marker)
    assert not (tmp_path / "job").exists()


def test_hostile_model_last_is_refused_on_resume(hostile, tmp_path, tiny_data, capsys):
    path, marker = hostile
    job = tmp_path / "job"
    (job / "checkpoint").mkdir(parents=True)
    last = job / "checkpoint" / "model_last.pt"
    last.write_bytes(path.read_bytes())
    code = cli(["--data_path", str(tiny_data), "--job_dir", str(job), "--workers", "0", "--img_size", "32",
                "--resume"])
    expect_refused(code, capsys.readouterr().err, last, "--resume", marker)


def test_hostile_checkpoint_is_refused_by_the_exporter(hostile, tmp_path):
    path, marker = hostile
    out = tmp_path / "m.sparse.pt"
    result = subprocess.run([sys.executable, "-m", "sparse.export", "--arch", "mobilenet_v2", "--checkpoint", str(path),
                             "--output", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    expect_refused(result.returncode, result.stderr, path, "--checkpoint", marker)
    assert not out.exists()


def test_mask_plot_refuses_a_hostile_pretrained_file(hostile):
    from experiment.plot_mask import get_args_parser, main
    from utils.checkpoint import CheckpointError
    path, marker = hostile
    with pytest.raises(CheckpointError, match="refused, it asks to load"):
        main(get_args_parser().parse_args(["--pretrained", str(path), "--width_mult", "0.25"]))
    assert not marker.exists()


def test_our_checkpoint_holds_only_what_a_weights_only_load_accepts(tmp_path):
    """The RNG states (NumPy's included) and args survive a weights-only round trip."""
    import argparse
    import random

    import numpy as np

    from pathlib import Path

    from utils.checkpoint import plain_args, read_checkpoint, save_atomic
    from utils.trainer import restore_rng_states, rng_states
    args = argparse.Namespace(arch="mobilenet_v2", lr=0.1, lr_decay_step=None, gpus=[0], rearrange=True,
                              job_dir=Path("runs/x"))
    save_atomic({"rng": rng_states(), "args": plain_args(args)}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    loaded = read_checkpoint(tmp_path / "c.pt", "--resume")
    restore_rng_states(loaded["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    assert loaded["args"] == {**vars(args), "job_dir": "runs/x"}
