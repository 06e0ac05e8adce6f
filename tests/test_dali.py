"""--use_dali with DALI's CPU pipeline (no GPU here): one epoch, each val image counted once."""
import json

import pytest

from data import dali
from imagenet import UsageError, get_args_parser, main


def run(*argv):
    return main(get_args_parser().parse_args([str(a) for a in argv]))


def common(tiny_data, job_dir, *extra):
    return ["--data_path", tiny_data, "--job_dir", job_dir, "--img_size", 32, "--workers", 0, "--arch", "mobilenet_v1",
            "--num_classes", 3, "--train_batch_size", 8, "--eval_batch_size", 5, "--warmup_epochs", 1,
            "--lr", 0.01, "--N", 2, *extra]


@pytest.fixture
def needs_dali():
    """The README's test set-up installs requirements-dali.txt, so a missing DALI is a failure."""
    if not dali.available():
        pytest.fail(f"DALI is not installed ({dali.INSTALL})")


def test_dali_cpu_pipeline_trains_and_counts_every_val_image_once(needs_dali, tiny_data, tmp_path):
    job = tmp_path / "job"
    run(*common(tiny_data, job, "--use_dali", "--num_epochs", 1))
    records = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    evaluations = [r for r in records if r["phase"] in ("dense", "pruned", "finetune")]
    assert [r["phase"] for r in evaluations] == ["dense", "pruned", "finetune"]
    assert all(r["images"] == 12 for r in evaluations)  # batches of 5: the last one is partial
    assert [r["images"] for r in records if r["phase"] == "finetune_train"] == [24]


def test_dali_labels_follow_imagefolder(tiny_data):
    from torchvision.datasets import ImageFolder
    files, labels, classes = dali.image_list(tiny_data / "val")
    reference = ImageFolder(tiny_data / "val").samples
    assert classes == 3 and list(zip(files, labels)) == [(str(path), label) for path, label in reference]


def test_use_dali_errors_are_one_line(tiny_data, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="pass --data_path"):
        run("--job_dir", tmp_path, "--use_dali")
    monkeypatch.setattr(dali, "available", lambda: False)
    with pytest.raises(UsageError, match="pip install -r requirements-dali.txt"):
        run(*common(tiny_data, tmp_path, "--use_dali"))


def test_a_restarted_dali_loader_begins_again_at_its_first_epoch(needs_dali, tiny_data):
    """What DaliLoader.set_epoch's docstring says: DALI cannot be positioned at an epoch, so after a
    restart (a --resume) the first epoch's order and augmentation come again, whatever the epoch."""
    import torch

    def loader():
        args = get_args_parser().parse_args(["--data_path", str(tiny_data), "--img_size", "32", "--workers", "1",
                                             "--train_batch_size", "24"])
        return dali.build_loaders(args, need_train=True, rank=0, world_size=1, device=torch.device("cpu"))[0]

    first = loader()
    epochs = [torch.cat([images for images, _ in first]) for _ in range(2)]
    assert not torch.equal(epochs[0], epochs[1])
    restarted = loader()
    restarted.set_epoch(1)
    assert torch.equal(torch.cat([images for images, _ in restarted]), epochs[0])
