"""Every bad input: a one-line error naming the flag or file, exit code 2, and the job dir untouched.

Each row here is a row of the README's table of bad inputs.
"""

import sys

import pytest
import torch

import models
from data.synthetic import make_image_folder
from imagenet import UsageError, cli, get_args_parser, select_device
from utils.distributed import Context
from utils.checkpoint import save_atomic


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def job_dir(tmp_path):
    """A job dir with earlier results in it, which no failed command may change."""
    job = tmp_path / "job"
    (job / "checkpoint").mkdir(parents=True)
    (job / "config.txt").write_text("arch: mobilenet_v2\n")
    (job / "metrics.jsonl").write_text('{"phase": "finetune", "epoch": 1}\n')
    (job / "checkpoint" / "model_best.pt").write_bytes(b"earlier best")
    return job


def files(tmp_path):
    """Bad files of every kind, made on demand."""
    made = {}
    made["text"] = tmp_path / "notes.pt"
    made["text"].write_text("not a checkpoint")
    good = tmp_path / "v1.pt"
    save_atomic({"state_dict": models.get_model("mobilenet_v1").state_dict()}, good)
    made["v1"] = good
    made["truncated"] = tmp_path / "truncated.pt"
    made["truncated"].write_bytes(good.read_bytes()[:5000])
    made["empty"] = tmp_path / "empty"
    made["empty"].mkdir()
    made["no_classes"] = tmp_path / "no_classes"
    (made["no_classes"] / "train").mkdir(parents=True)
    (made["no_classes"] / "val").mkdir()
    made["no_images"] = tmp_path / "no_images"
    for split in ("train", "val"):
        (made["no_images"] / split / "cat").mkdir(parents=True)
        (made["no_images"] / split / "cat" / "readme.txt").write_text("no image here")
    made["corrupt"] = make_image_folder(tmp_path / "corrupt", num_classes=2, train_per_class=2, val_per_class=2)
    (made["corrupt"] / "val" / "class_1" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    made["blocker"] = tmp_path / "a_file"
    made["blocker"].write_text("")
    return made


ROWS = [  # (id, argv builder, expected message)
    ("data_path missing", lambda f, d: ["--data_path", f["empty"] / "nope"], "--data_path {empty}/nope: no such folder"),
    ("data_path empty", lambda f, d: ["--data_path", f["empty"]], "no train/ (or ILSVRC2012_img_train/) folder"),
    ("no class folders", lambda f, d: ["--data_path", f["no_classes"]], "--data_path: Couldn't find any class folder"),
    ("no images", lambda f, d: ["--data_path", f["no_images"]], "--data_path: Found no valid file for the classes cat"),
    ("unknown arch", lambda f, d: ["--arch", "resnet101"], "argument --arch: invalid choice: 'resnet101'"),
    ("unknown conv_type", lambda f, d: ["--conv_type", "L2Conv"], "argument --conv_type: invalid choice: 'L2Conv'"),
    ("N < 1", lambda f, d: ["--N", "0"], "argument --N: expected int ≥ 1, got '0'"),
    ("pr_target ≥ 1", lambda f, d: ["--pr_target", "1"], "argument --pr_target: expected a pruning rate in [0, 1), got '1'"),
    ("pr_target < 0", lambda f, d: ["--pr_target", "-0.1"], "argument --pr_target: expected a pruning rate in [0, 1)"),
    ("negative epochs", lambda f, d: ["--num_epochs", "-2"], "argument --num_epochs: expected int ≥ 0, got '-2'"),
    ("zero batch", lambda f, d: ["--train_batch_size", "0"], "argument --train_batch_size: expected int ≥ 1"),
    ("evaluate missing", lambda f, d: ["--evaluate", f["empty"] / "x.pt"], "--evaluate {empty}/x.pt: no such file"),
    ("evaluate not a checkpoint", lambda f, d: ["--evaluate", f["text"]], "--evaluate {text}: not a readable PyTorch checkpoint"),
    ("evaluate truncated", lambda f, d: ["--evaluate", f["truncated"]], "--evaluate {truncated}: not a readable PyTorch checkpoint"),
    ("evaluate other arch", lambda f, d: ["--evaluate", f["v1"], "--arch", "mobilenet_v2"],
     "--evaluate {v1}: keys do not fit this --arch: 377 missing (first: features.1.conv.0.weight, "
     "features.1.conv.1.weight, features.1.conv.1.bias); 185 unexpected (first: conv1.0.weight, conv1.1.weight"),
    ("evaluate other class count", lambda f, d: ["--evaluate", f["v1"], "--arch", "mobilenet_v1", "--num_classes", "10"],
     "--num_classes 10: --evaluate {v1} has 1000 classes"),
    ("pretrained missing", lambda f, d: ["--pretrained_model", f["empty"] / "x.pt"], "--pretrained_model {empty}/x.pt: no such file"),
    ("pretrained truncated", lambda f, d: ["--pretrained_model", f["truncated"]], "--pretrained_model {truncated}: not a readable"),
    ("pretrained other arch", lambda f, d: ["--pretrained_model", f["v1"], "--arch", "mobilenet_v3_small"],
     "--pretrained_model {v1}: keys do not fit this --arch"),
    ("resume without checkpoint", lambda f, d: ["--resume"], "--resume: {job}/checkpoint/model_last.pt does not exist"),
    ("use_dali without DALI", lambda f, d: ["--use_dali", "--data_path", f["corrupt"]],
     "--use_dali: NVIDIA DALI is not installed; install it with: pip install -r requirements-dali.txt"),
    ("use_dali without data_path", lambda f, d: ["--use_dali"], "--use_dali reads image files: pass --data_path"),
    ("corrupt image", lambda f, d: ["--data_path", f["corrupt"], "--num_epochs", "0"], "unreadable image {corrupt}/val/class_1/1.png"),
    ("job dir under a file", lambda f, d: ["--job_dir", f["blocker"] / "job"], "--job_dir {blocker}/job: {blocker} is a file, not a folder"),
    ("data_path a file", lambda f, d: ["--data_path", f["blocker"]], "--data_path {blocker}: is a file, not a folder"),
    ("evaluate a folder", lambda f, d: ["--evaluate", f["empty"]], "--evaluate {empty}: is a folder, not a file"),
    ("lr ≤ 0", lambda f, d: ["--lr", "-1"], "argument --lr: expected float > 0, got '-1'"),
    ("lr not finite", lambda f, d: ["--lr", "inf"], "argument --lr: expected float > 0, got 'inf'"),
    ("momentum ≥ 1", lambda f, d: ["--momentum", "1"], "argument --momentum: expected float in [0, 1), got '1'"),
    ("weight_decay < 0", lambda f, d: ["--weight_decay", "-0.1"], "argument --weight_decay: expected float ≥ 0, got '-0.1'"),
    ("weight_decay nan", lambda f, d: ["--weight_decay", "nan"], "argument --weight_decay: expected float ≥ 0, got 'nan'"),
    ("label_smoothing ≥ 1", lambda f, d: ["--label_smoothing", "2"],
     "argument --label_smoothing: expected float in [0, 1), got '2'"),
    ("seed < 0", lambda f, d: ["--seed", "-1"], "argument --seed: expected int in [0, 4294967295], got '-1'"),
    ("negative gpu id", lambda f, d: ["--gpus", "-1"], "argument --gpus: expected int ≥ 0, got '-1'"),
    ("lr_decay_step < 1", lambda f, d: ["--lr_decay_step", "30", "0"], "argument --lr_decay_step: expected int ≥ 1, got '0'"),
    ("img_size not a number", lambda f, d: ["--img_size", "big"], "argument --img_size: expected int ≥ 8, got 'big'"),
]


@pytest.mark.parametrize("case,build,message", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(case, build, message, tmp_path, job_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "nvidia.dali", None)  # DALI missing, also where it is installed
    made = files(tmp_path)
    before = snapshot(job_dir)
    argv = ["--job_dir", str(job_dir), "--workers", "0", "--img_size", "32",
            *[str(a) for a in build(made, job_dir)]]
    try:
        code = cli(argv)
    except SystemExit as exit_:   # argparse's own errors
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2
    expected = message.format(**{k: v for k, v in made.items()}, job=job_dir)
    assert expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    after = snapshot(job_dir)
    assert {name: after.get(name) for name in before} == before           # nothing overwritten or lost
    if case != "corrupt image":      # found only while reading the data: the run's log is there too
        assert after == before


def test_missing_gpu_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(UsageError, match=r"--gpus 5: no such GPU \(this machine has 2\)"):
        select_device(get_args_parser().parse_args(["--gpus", "5"]), Context())


def test_unwritable_job_dir_is_named(tmp_path, monkeypatch):
    """The README's "job dir not writable" row (faked: the tests may run as root, who can write anywhere)."""
    import imagenet
    monkeypatch.setattr(imagenet.os, "access", lambda path, mode: False)
    args = get_args_parser().parse_args(["--job_dir", str(tmp_path / "job")])
    with pytest.raises(UsageError, match=f"--job_dir {tmp_path}/job: {tmp_path} is not a writable folder"):
        imagenet.check_job_dir(args)
