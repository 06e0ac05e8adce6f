"""imagenet.py end to end on the tiny generated data: train → resume → evaluate, and the CLI's errors."""
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, reference
from imagenet import get_args_parser, main


def run(*argv):
    return main(get_args_parser().parse_args([str(a) for a in argv]))


def cli(*argv):
    return subprocess.run([sys.executable, str(ROOT / "imagenet.py"), *map(str, argv)],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def metrics(job_dir):
    return [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]


def common(tiny_data, job_dir, *extra):
    return ["--data_path", tiny_data, "--job_dir", job_dir, "--img_size", 32, "--workers", 0,
            "--train_batch_size", 8, "--eval_batch_size", 8, "--warmup_epochs", 1, "--lr", 0.05, *extra]


def test_train_resume_evaluate(tiny_data, tmp_path, cpu_only):  # bit-exact resume: a CPU promise
    job = tmp_path / "job"
    run(*common(tiny_data, job, "--num_epochs", 1, "--N", 2, "--pr_target", 0.6))
    assert {"config.txt", "config.json", "metrics.jsonl", "sparsity.txt", "run", "checkpoint"} <= {
        p.name for p in job.iterdir()}
    assert list(job.glob("logger*.log")) and list((job / "run").glob("events.out.tfevents.*"))
    records = metrics(job)
    assert [r["phase"] for r in records if r["phase"] in ("dense", "pruned", "finetune")] == \
        ["dense", "pruned", "finetune"]
    assert all(r["images"] == 12 for r in records if r["phase"] in ("dense", "pruned", "finetune"))
    last = torch.load(job / "checkpoint" / "model_last.pt", weights_only=True)
    assert last["epoch"] == 1 and last["num_classes"] == 1000 and set(last) >= {"state_dict", "best_acc", "optimizer"}

    run(*common(tiny_data, job, "--num_epochs", 2, "--N", 2, "--pr_target", 0.6, "--resume"))
    assert [r["epoch"] for r in metrics(job) if r["phase"] == "finetune"] == [1, 2]

    uninterrupted = tmp_path / "straight"
    run(*common(tiny_data, uninterrupted, "--num_epochs", 2, "--N", 2, "--pr_target", 0.6))
    resumed = torch.load(job / "checkpoint" / "model_last.pt", weights_only=True)["state_dict"]
    straight = torch.load(uninterrupted / "checkpoint" / "model_last.pt", weights_only=True)["state_dict"]
    for key in straight:
        assert torch.equal(resumed[key], straight[key]), key

    result = run("--data_path", tiny_data, "--job_dir", job, "--img_size", 32, "--workers", 0,
                 "--evaluate", job / "checkpoint" / "model_best.pt")
    assert metrics(job)[-1]["phase"] == "evaluate" and result["images"] == 12


def test_prune_only_saves_the_pruned_model(tiny_data, tmp_path):
    job = tmp_path / "job"
    run(*common(tiny_data, job, "--num_epochs", 0, "--arch", "mobilenet_v3_small", "--conv_type", "StructureConv"))
    checkpoint = torch.load(job / "checkpoint" / "model_best.pt", weights_only=True)
    mask = checkpoint["state_dict"]["features.2.conv.0.mask"]
    assert checkpoint["epoch"] == 0 and mask.flatten(1).all(1).float().mean() == 0.5
    pruned = [r for r in metrics(job) if r["phase"] == "pruned"]
    assert len(pruned) == 1 and set(pruned[0]) >= {"loss", "top1", "top5", "images", "epoch"}


def test_evaluate_the_authors_pruned_checkpoint(tiny_data, tmp_path, authors_pruned):
    result = run("--data_path", tiny_data, "--job_dir", tmp_path, "--img_size", 32, "--workers", 0,
                 "--arch", "mobilenet_v2", "--pruned_model", authors_pruned)
    assert result["images"] == 12 and torch.isfinite(torch.tensor(result["loss"]))
    assert not (tmp_path / "checkpoint" / "model_last.pt").exists()


def test_embedded_default_data_runs_without_data_path(tmp_path):
    job = tmp_path / "job"
    run("--job_dir", job, "--workers", 0, "--num_epochs", 1, "--train_images", 64, "--val_images", 32,
        "--train_batch_size", 32, "--arch", "mobilenet_v1", "--pretrain_epochs", 1, "--warmup_epochs", 0)
    phases = [r["phase"] for r in metrics(job)]
    assert phases[:2] == ["pretrain_train", "pretrain"] and "finetune" in phases
    assert torch.load(job / "checkpoint" / "model_last.pt", weights_only=True)["num_classes"] == 10
    assert (job / "checkpoint" / "dense.pt").exists()


def test_help_documents_every_flag_and_both_spellings():
    text = cli("--help").stdout
    for flag in ("--pretrain_model", "--pretrained_model", "--pruned_model", "--evaluate", "--lr_type",
                 "--lr_policy", "--N", "--rearrange", "--full", "--use_dali", "--gpus", "(default: 0.5)"):
        assert flag in text


def test_existing_checkpoint_is_never_overwritten_without_resume(tiny_data, tmp_path):
    job = tmp_path / "job"
    (job / "checkpoint").mkdir(parents=True)
    (job / "checkpoint" / "model_last.pt").write_bytes(b"precious")
    result = cli(*common(tiny_data, job, "--num_epochs", 0))
    assert result.returncode == 2 and "pass --resume" in result.stderr
    assert (job / "checkpoint" / "model_last.pt").read_bytes() == b"precious"


def test_too_few_classes_is_an_error(tiny_data, tmp_path):
    result = cli(*common(tiny_data, tmp_path / "job", "--num_classes", 2))
    assert result.returncode == 2 and "3 classes, but the model has 2" in result.stderr


def test_gpus_without_cuda_warns_and_uses_the_cpu(tiny_data, tmp_path, cpu_only):
    with pytest.warns(UserWarning, match="no CUDA device") as warned:
        run(*common(tiny_data, tmp_path / "job", "--gpus", 0, "--num_epochs", 0, "--arch", "mobilenet_v1"))
    assert sum("no CUDA device" in str(w.message) for w in warned) == 1
    assert "on cpu" in next((tmp_path / "job").glob("logger*.log")).read_text()


# cpu_only: equal to 1e-4 over differently ordered sums, which CUDA's TF32 convolutions do not promise.
def test_rearranged_pruning_gives_the_authors_pruned_loss(tiny_data, tmp_path, authors_pruned, cpu_only):
    """--rearrange --num_epochs 0 on their golden V2 writes the loss their pruned model has on the same data."""
    ours = tmp_path / "ours"
    run(*common(tiny_data, ours, "--num_epochs", 0, "--rearrange", "--N", 4, "--pr_target", 0.5,
                "--pretrained_model", reference("mobilenet_v2_N4_rearrange.pretrained.pth")))
    theirs = run("--data_path", tiny_data, "--job_dir", tmp_path / "theirs", "--img_size", 32, "--workers", 0,
                 "--evaluate", authors_pruned)
    pruned = next(r for r in metrics(ours) if r["phase"] == "pruned")
    assert abs(pruned["loss"] - theirs["loss"]) < 1e-4 and pruned["top1"] == theirs["top1"]
    checkpoint = torch.load(ours / "checkpoint" / "model_best.pt", weights_only=True)
    assert "features.2.conv.0" in checkpoint["permutations"]
    again = run("--data_path", tiny_data, "--job_dir", ours, "--img_size", 32, "--workers", 0,
                "--evaluate", ours / "checkpoint" / "model_best.pt")
    assert abs(again["loss"] - theirs["loss"]) < 1e-4


@pytest.mark.parametrize("arch", ["mobilenet_v1", "mobilenet_v3_small", "mobilenet_v3_large"])
def test_rearranged_pruning_equals_the_authors_mask_only_rearrangement(arch, tiny_data, tmp_path, cpu_only):
    """Their --rearrange moves no weight: blocks over the ℓ1 order, mask mapped back. Ours moves the
    weights; the pruned loss on the same data must be the same."""
    import models
    from conftest import layout
    from utils.checkpoint import save_atomic
    from utils.pruning import filter_order, masked_convs, prune_model
    torch.manual_seed(0)
    dense = models.get_model(arch)
    save_atomic(dense.state_dict(), tmp_path / "dense.pt")
    authors_layers = {m["module"] for m in layout(arch)["masked_modules"] if m["rearranged_by_authors"]}
    orders = {name: filter_order(conv.weight) for name, conv in masked_convs(dense) if name in authors_layers}
    prune_model(dense, 0.5, 4, orders=orders)
    save_atomic({"state_dict": dense.state_dict()}, tmp_path / "mask_only.pt")
    theirs = run("--data_path", tiny_data, "--job_dir", tmp_path / "theirs", "--img_size", 32, "--workers", 0,
                 "--arch", arch, "--evaluate", tmp_path / "mask_only.pt")
    ours = tmp_path / "ours"
    run(*common(tiny_data, ours, "--num_epochs", 0, "--rearrange", "--N", 4, "--arch", arch,
                "--pretrained_model", tmp_path / "dense.pt"))
    pruned = next(r for r in metrics(ours) if r["phase"] == "pruned")
    assert abs(pruned["loss"] - theirs["loss"]) < 1e-4
    assert torch.load(ours / "checkpoint" / "model_last.pt", weights_only=True)["permutations"]


def original_readme_commands():
    """The `python imagenet.py` commands of the authors' README, as argument lists."""
    import re
    import shlex
    text = reference("original_readme_commands.md").read_text()
    blocks = [b for b in re.findall(r"```\n(.*?)```", text, re.S) if b.lstrip().startswith("python imagenet.py")]
    commands = []
    for block in blocks:
        block = re.sub(r"\(or [^)]*\)", "", block).replace("\\\n", " ")
        commands.append(shlex.split(block)[2:])
    return commands


def test_every_command_of_the_original_readme_parses(tiny_data, tmp_path):
    train, evaluate = original_readme_commands()
    assert "--pretrained_model" in train and "--evaluate" in evaluate
    fill = {"[DATA_PATH]": str(tiny_data), "[PRETRAIN_MODEL_PATH]": "dense.pth", "[PRUNED_MODEL_PATH]": "pruned.pth"}
    args = get_args_parser().parse_args([fill.get(a, a) for a in train])
    assert (args.gpus, args.arch, args.N, args.pr_target, args.rearrange, args.pretrained_model) == \
        ([0], "mobilenet_v1", 4, 0.5, True, "dense.pth")
    args = get_args_parser().parse_args([fill.get(a, a) for a in evaluate])
    assert args.evaluate == "pruned.pth" and args.eval_batch_size == 256


def test_the_original_evaluate_command_runs(tiny_data, tmp_path, monkeypatch, authors_pruned):
    """Unchanged but for real paths (and a small --img_size so the CPU test stays fast)."""
    _, evaluate = original_readme_commands()
    monkeypatch.chdir(tmp_path)                     # its --job_dir ./experiment/ lands here
    fill = {"[DATA_PATH]": str(tiny_data), "[PRUNED_MODEL_PATH]": str(authors_pruned),
            "mobilenet_v1": "mobilenet_v2"}
    result = run(*[fill.get(a, a) for a in evaluate], "--img_size", 32, "--workers", 0)
    assert result["images"] == 12
    assert (tmp_path / "experiment" / "metrics.jsonl").exists()
