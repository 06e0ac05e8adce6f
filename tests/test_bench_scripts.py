"""The bench scripts' own behaviour (not their timings): the generated JPEG folder, the training-step
bench on the CPU, and their refusals of bad input (one line, exit 2, nothing written)."""
import os
import subprocess
import sys

from PIL import Image

from conftest import ROOT

NO_GPU = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def run(*argv, env=None):
    return subprocess.run([str(a) for a in argv], cwd=ROOT, capture_output=True, text=True, env=env or NO_GPU,
                          timeout=300)


def test_loaders_write_makes_the_jpeg_folder_a_training_run_reads(tmp_path):
    result = run(sys.executable, "bench/loaders.py", "--write", tmp_path / "jpegs", "--images", 6)
    assert result.returncode == 0, result.stderr
    for split in ("train", "val"):
        files = sorted((tmp_path / "jpegs" / split).glob("class_*/*.jpg"))
        assert len(files) == 6 and len({f.parent.name for f in files}) == 4
        assert {Image.open(f).size for f in files} == {(500, 375), (375, 500)}
    train, val = (sorted(p.read_bytes() for p in (tmp_path / "jpegs" / s).rglob("*.jpg")) for s in ("train", "val"))
    assert train != val  # each image has its own seed


def test_loaders_refuse_too_few_batches_to_time(tmp_path):
    result = run(sys.executable, "bench/loaders.py", "--images", 64, "--batch_size", 64)
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1
    assert "--images 64: at least 4 batches" in result.stderr


def test_train_step_runs_the_training_loop_with_bf16_and_channels_last():
    result = run(sys.executable, "bench/train_step.py", "--arch", "mobilenet_v1", "--batch", 2, "--img_size", 32,
                 "--threads", 1, "--steps", 1, "--amp", "bf16", "--channels_last")
    assert result.returncode == 0, result.stderr
    assert "amp bf16, channels_last" in result.stdout and "masked / dense" in result.stdout


def test_train_step_refuses_a_missing_gpu_and_fp16_on_the_cpu():
    for argv, message in ((["--device", "cuda"], "error: --device cuda: no CUDA device here"),
                          (["--amp", "fp16"], "error: --amp fp16 needs --device cuda (use --amp bf16 on the CPU)")):
        result = run(sys.executable, "bench/train_step.py", *argv)
        assert result.returncode == 2 and result.stderr.strip() == message, result.stderr


def test_gpu_check_refuses_an_unknown_step_before_writing(tmp_path):
    result = run("bash", "bench/gpu_check.sh", tmp_path / "out", "ddp", "nonsense")
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1 and "unknown step 'nonsense'" in result.stderr
    assert not (tmp_path / "out").exists()
