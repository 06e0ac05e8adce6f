"""torchvision's weights: every arch torchvision has loads into our dense model with torchvision's
function, prunes and fine-tunes; `torchvision:NAME` is parsed offline (never downloaded in tests)."""
import json

import pytest
import torch
import torchvision

import models
from imagenet import cli, get_args_parser, main
from utils.checkpoint import load_pretrained, variant_in
from utils.torchvision_weights import ARCHS


def torchvision_state(arch, num_classes, seed=0):
    """torchvision's model (weights=None) with random BN statistics and affine, and Linear layers
    scaled so that the logits are O(1) (its V3 init gives logits of 1e-2, too small to test 1e-5)."""
    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    generator = torch.Generator().manual_seed(seed)
    rand = lambda n, low, high: torch.rand(n, generator=generator) * (high - low) + low  # noqa: E731
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(rand(n, -0.2, 0.2))
                module.running_var.copy_(rand(n, 0.5, 1.5))
                module.weight.copy_(rand(n, 0.25, 0.75))
                module.bias.copy_(rand(n, -0.2, 0.2))
            elif isinstance(module, torch.nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) / module.in_features ** 0.5)
                module.bias.copy_(rand(module.out_features, -0.2, 0.2))
    return model.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_torchvision_state_dict_gives_torchvisions_logits(arch):
    theirs = torchvision_state(arch, num_classes=10)
    state = theirs.state_dict()
    ours = models.get_model(arch, num_classes=10, variant=variant_in(state))
    load_pretrained(ours, state, "--pretrained_model tv.pth")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours.eval()(x), expected, atol=1e-5, rtol=0)
    assert expected.abs().max() > 0.1  # a test of something
    if arch.startswith("mobilenet_v3"):  # the block variant matters: SE after the activation
        assert variant_in(state) == "torchvision" and ours.variant == "torchvision"
        authors_order = models.get_model(arch, num_classes=10)
        renamed = {k: v for k, v in ours.state_dict().items()}
        missing, unexpected = authors_order.load_state_dict(renamed, strict=False)
        assert missing or unexpected  # the SE sits at another index: the keys differ


@pytest.mark.parametrize("arch", ARCHS)
def test_prune_and_fine_tune_from_torchvision_weights(arch, tiny_data, tmp_path):
    path = tmp_path / "tv.pth"
    torch.save(torchvision_state(arch, num_classes=3).state_dict(), path)
    job = tmp_path / "job"
    main(get_args_parser().parse_args([
        "--arch", arch, "--pretrained_model", str(path), "--data_path", str(tiny_data), "--job_dir", str(job),
        "--img_size", "32", "--workers", "0", "--num_epochs", "1", "--train_images", "6", "--val_images", "6",
        "--train_batch_size", "6", "--eval_batch_size", "6", "--N", "4", "--pr_target", "0.5", "--rearrange"]))
    phases = [json.loads(line)["phase"] for line in (job / "metrics.jsonl").read_text().splitlines()]
    assert {"dense", "pruned", "finetune"} <= set(phases)
    saved = torch.load(job / "checkpoint" / "model_last.pt", map_location="cpu", weights_only=True)
    assert saved["variant"] == ("torchvision" if arch.startswith("mobilenet_v3") else "authors")
    assert saved["num_classes"] == 3 and saved["epoch"] == 1
    if arch == "mobilenet_v3_small":  # our checkpoint of the torchvision variant evaluates as that variant
        result = main(get_args_parser().parse_args([
            "--arch", arch, "--evaluate", str(job / "checkpoint" / "model_last.pt"), "--data_path", str(tiny_data),
            "--job_dir", str(job), "--img_size", "32", "--workers", "0", "--val_images", "6"]))
        assert result["images"] == 6


def test_torchvision_spec_is_checked_offline(tmp_path, capsys):
    common = ["--job_dir", str(tmp_path / "job"), "--num_epochs", "0"]
    assert cli(["--arch", "resnet50", "--pretrained_model", "torchvision:IMAGENET1K_V7", *common]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --pretrained_model torchvision:IMAGENET1K_V7: expected one of")
    assert "torchvision:IMAGENET1K_V2" in err and len(err.splitlines()) == 1
    assert cli(["--arch", "mobilenet_v1", "--pretrained_model", "torchvision:IMAGENET1K_V1", *common]) == 2
    assert "torchvision has no weights for --arch mobilenet_v1" in capsys.readouterr().err
    assert not (tmp_path / "job").exists()


def test_torchvision_fetch_loads_weights_only_with_the_hash_checked(monkeypatch):
    """torch.hub's own default unpickles anything: the download must be read weights-only."""
    import torch.hub
    from utils import torchvision_weights
    calls = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url",
                        lambda url, **kwargs: calls.append((url, kwargs)) or {"fc.weight": torch.zeros(1)})
    import torchvision.models._api
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", torch.hub.load_state_dict_from_url)
    assert torchvision_weights.fetch("torchvision:IMAGENET1K_V1", "resnet18") == {"fc.weight": torch.zeros(1)}
    (url, kwargs), = calls
    assert url.endswith(".pth") and kwargs["weights_only"] is True and kwargs["check_hash"] is True
