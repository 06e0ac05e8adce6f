"""Every resume path: after --num_epochs 0, with another --num_epochs, with flags the checkpoint
fixes (an error naming both values) or records (taken from it); model_best.pt always written."""
import shutil

import pytest
import torch

from imagenet import cli, get_args_parser, main


def run(*argv):
    return main(get_args_parser().parse_args([str(a) for a in argv]))


def common(tiny_data, job_dir, *extra):
    return ["--data_path", tiny_data, "--job_dir", job_dir, "--img_size", 32, "--workers", 0, "--seed", 1,
            "--train_batch_size", 8, "--eval_batch_size", 8, "--warmup_epochs", 1, "--lr", 0.05, *extra]


def last(job_dir, name="model_last.pt"):
    return torch.load(job_dir / "checkpoint" / name, weights_only=True)


@pytest.fixture(scope="module")
def pruned_job(tiny_data, tmp_path_factory):
    """A --num_epochs 0 job of a non-default model: mobilenet_v1, N 2, rate 0.6, --rearrange; on the
    CPU like the runs it is resumed in and compared with (on a CUDA machine too)."""
    job = tmp_path_factory.mktemp("pruned") / "job"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        run(*common(tiny_data, job, "--num_epochs", 0, "--arch", "mobilenet_v1", "--N", 2, "--pr_target", 0.6,
                    "--rearrange"))
    return job


def copy_of(job, tmp_path):
    shutil.copytree(job, tmp_path / "job")
    return tmp_path / "job"


def test_resume_after_num_epochs_0_equals_one_run(tiny_data, tmp_path, pruned_job, cpu_only):
    """The --num_epochs 0 checkpoint has no optimizer state (KeyError 'param_groups' before); resuming
    it with --num_epochs 2, giving no model flag, fine-tunes the recorded model as one run would."""
    job = copy_of(pruned_job, tmp_path)
    run(*common(tiny_data, job, "--resume", "--num_epochs", 2))
    straight = tmp_path / "straight"
    run(*common(tiny_data, straight, "--num_epochs", 2, "--arch", "mobilenet_v1", "--N", 2, "--pr_target", 0.6,
                "--rearrange"))
    resumed, expected = last(job), last(straight)
    assert resumed["arch"] == "mobilenet_v1" and resumed["N"] == 2 and resumed["epoch"] == 2
    for key, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert (resumed["best_acc"], resumed["best_top1"]) == (expected["best_acc"], expected["best_top1"])
    assert last(job, "model_best.pt")["epoch"] == last(straight, "model_best.pt")["epoch"]


@pytest.mark.parametrize("flag,value,saved", [
    ("--arch", "mobilenet_v3_small", "--arch mobilenet_v1"),
    ("--conv_type", "UnstructureConv", "--conv_type BlockL1Conv"),
    ("--N", "8", "--N 2"),
    ("--N", "4", "--N 2"),  # the default value, given: still refused (it is not the checkpoint's)
    ("--pr_target", "0.3", "--pr_target 0.6"),
    ("--train_batch_size", "4", "--train_batch_size 8"),
    ("--optimizer", "adam", "--optimizer sgd"),
    ("--full", None, "no --full"),
])
def test_resume_refuses_flags_the_checkpoint_fixes(flag, value, saved, tiny_data, tmp_path, pruned_job, capsys):
    job = copy_of(pruned_job, tmp_path)
    before = {p: p.read_bytes() for p in job.rglob("*") if p.is_file()}
    given = [flag] if value is None else [flag, value]
    argv = [str(a) for a in common(tiny_data, job, "--resume", "--num_epochs", 1, *given)]
    assert cli(argv) == 2
    err = capsys.readouterr().err
    expected = f"--resume {job}/checkpoint/model_last.pt: saved with {saved}, but the command gives {' '.join(given)}"
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert {p: p.read_bytes() for p in job.rglob("*") if p.is_file()} == before


def test_flags_that_may_change_on_resume(tiny_data, tmp_path, pruned_job):
    job = copy_of(pruned_job, tmp_path)
    run(*common(tiny_data, job, "--resume", "--num_epochs", 1, "--lr", 0.01, "--label_smoothing", 0.1,
                "--eval_batch_size", 4, "--warmup_epochs", 0))
    run(*common(tiny_data, job, "--resume", "--num_epochs", 2, "--lr_type", "step"))  # another --num_epochs
    assert last(job)["epoch"] == 2


def test_evaluate_builds_the_recorded_model(tiny_data, tmp_path, pruned_job):
    """No --arch: the checkpoint says mobilenet_v1 (before, the default mobilenet_v2 failed to load it)."""
    result = run("--data_path", tiny_data, "--job_dir", tmp_path / "eval", "--img_size", 32, "--workers", 0,
                 "--evaluate", pruned_job / "checkpoint" / "model_best.pt")
    assert result["images"] == 12


def test_model_best_exists_when_every_evaluation_is_0_percent(tiny_data, tmp_path, monkeypatch):
    def nothing_right(model, loader, *args):
        return {"loss": 7.0, "top1": 0.0, "top5": 0.0, "images": 12}
    monkeypatch.setattr("utils.trainer.evaluate", nothing_right)
    job = tmp_path / "job"
    run(*common(tiny_data, job, "--num_epochs", 1, "--arch", "mobilenet_v1"))
    best = last(job, "model_best.pt")
    assert best["epoch"] == 1 and best["best_acc"] == 0.0
