"""Gradual pruning: the cubic ramp's rates, exact per-update and final sparsities, masks that only
grow, the ramp in metrics.jsonl, and a resume in the middle of the ramp that equals a straight run."""
import json

import pytest
import torch

import models
from test_faults import run_with_fault
from utils.gradual import GradualPruner, cubic_rate, prunable_sparsity, update_steps
from utils.pruning import _blocks, is_classifier, masked_convs, num_pruned, prune_model
from utils.trainer import build_optimizer
from test_training import train_args


def test_cubic_rate_formula():
    assert cubic_rate(0, 0.8, 10, 30) == 0.0 and cubic_rate(10, 0.8, 10, 30) == 0.0
    assert cubic_rate(20, 0.8, 10, 30) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert cubic_rate(25, 0.8, 10, 30) == pytest.approx(0.8 * (1 - 0.25 ** 3))
    assert cubic_rate(30, 0.8, 10, 30) == 0.8 and cubic_rate(99, 0.8, 10, 30) == 0.8
    assert cubic_rate(5, 0.5, 5, 5) == 0.5   # start = end: one-shot at that step
    assert update_steps(3, 12, 4) == [3, 7, 11, 12]
    assert update_steps(0, 0, 10) == [0]


def pruned_blocks(conv, N):
    """Number of fully pruned 1×N blocks of a conv (mask over its natural channel order)."""
    return int((_blocks(conv.mask, N).sum(-1) == 0).sum())


def pruned_units(conv, N, conv_type):
    """(pruned, total) in the unit each criterion prunes: 1×N blocks, single weights or filters."""
    if conv_type == "UnstructureConv":
        return int((conv.mask == 0).sum()), conv.mask.numel()
    if conv_type == "StructureConv":
        return int((conv.mask.flatten(1).sum(1) == 0).sum()), conv.mask.shape[0]
    blocks = _blocks(conv.mask, N)
    return pruned_blocks(conv, N), blocks.shape[0] * blocks.shape[1]


@pytest.mark.parametrize("conv_type", ["BlockL1Conv", "BlockRandomConv", "UnstructureConv", "StructureConv"])
def test_per_update_sparsity_is_exact_and_masks_only_grow(conv_type):
    torch.manual_seed(0)
    N, final, start, end, every = 4, 0.7, 2, 14, 3
    model = models.get_model("mobilenet_v2", conv_type=conv_type, width_mult=0.25, num_classes=4)
    reference = models.get_model("mobilenet_v2", conv_type=conv_type, width_mult=0.25, num_classes=4)
    reference.load_state_dict(model.state_dict())
    for _, conv in masked_convs(model):
        conv.bias.requires_grad_(False)
    optimizer = build_optimizer(model, train_args(weight_decay=1e-3))
    updates = []
    pruner = GradualPruner(model, final, N, start, end, every, seed=7,
                           on_update=lambda step, rate: updates.append((step, rate)))
    previous = {name: conv.mask.clone() for name, conv in masked_convs(model)}
    images, labels = torch.randn(8, 3, 32, 32), torch.arange(8) % 4
    for step in range(end + 3):
        rate = pruner.before_step(step, optimizer)
        for name, conv in masked_convs(model):
            if rate is not None and not is_classifier(name):   # exactly floor(#units · s_t) units pruned
                pruned, units = pruned_units(conv, N, conv_type)
                assert pruned == num_pruned(units, rate), (name, step)
            assert not (conv.mask > previous[name]).any(), f"{name}: a pruned weight came back at step {step}"
            previous[name] = conv.mask.clone()
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for name, conv in masked_convs(model):   # momentum was cleared: pruned weights stay exactly zero
            assert (conv.weight[conv.mask == 0] == 0).all(), (name, step)
    assert updates == [(s, cubic_rate(s, final, start, end)) for s in update_steps(start, end, every)]
    assert [round(r, 4) for _, r in updates] == [0.0, 0.4047, 0.6125, 0.6891, 0.7]  # 0.7·(1 − (1 − k/4)³)
    assert prunable_sparsity(model) == pytest.approx(prunable_sparsity(_pruned(reference, final, N)), abs=0)
    if conv_type == "BlockRandomConv":  # the same seeded draw as one-shot pruning
        for (name, conv), (_, ref) in zip(masked_convs(model), masked_convs(reference)):
            assert torch.equal(conv.mask, ref.mask), name


def _pruned(model, rate, N):
    prune_model(model, rate, N, generator=torch.Generator().manual_seed(7))
    return model


STEPS_PER_EPOCH = 6  # 24 tiny training images, batch 4


def cubic_argv(tiny_data, job_dir, *extra):
    return ["--data_path", str(tiny_data), "--job_dir", str(job_dir), "--img_size", "32", "--workers", "0",
            "--arch", "mobilenet_v2", "--train_batch_size", "4", "--eval_batch_size", "8", "--warmup_epochs", "0",
            "--num_classes", "3", "--num_epochs", "2", "--lr", "0.01", "--seed", "3", "--pretrain_epochs", "1",
            "--N", "4", "--pr_target", "0.6", "--rearrange", "--prune_schedule", "cubic",
            "--prune_start_epoch", "0.5", "--prune_end_epoch", "1.5", "--prune_every", "2",
            "--distill", "--kd_alpha", "0.7", "--kd_temperature", "3", *extra]


def records(job_dir):
    return [json.loads(line) for line in (job_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def straight(tiny_data, tmp_path_factory):
    job_dir = tmp_path_factory.mktemp("cubic_straight")
    result = run_with_fault(cubic_argv(tiny_data, job_dir), {})
    assert result.returncode == 0, result.stderr
    return job_dir


def test_ramp_is_logged_and_ends_at_the_exact_rate(straight):
    ramp = [r for r in records(straight) if r["phase"] == "prune_update"]
    start, end = STEPS_PER_EPOCH // 2, STEPS_PER_EPOCH * 3 // 2
    assert [r["rate"] for r in ramp] == [cubic_rate(s, 0.6, start, end) for s in update_steps(start, end, 2)]
    assert ramp[-1]["rate"] == 0.6 and ramp[-1]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert [r["phase"] for r in records(straight)].count("pruned") == 0   # nothing is pruned before fine-tuning
    assert list((straight / "run").glob("events.out.tfevents.*"))
    final = torch.load(straight / "checkpoint" / "model_last.pt", weights_only=True)
    assert final["permutations"] and final["best_metric"] == "top1"
    model = models.get_model("mobilenet_v2", num_classes=3)
    model.load_state_dict(final["state_dict"])
    for name, conv in masked_convs(model):   # rearranged: blocks are contiguous, exactly floor(#blocks · 0.6)
        if not is_classifier(name):
            blocks = _blocks(conv.mask, 4).shape[0] * _blocks(conv.mask, 4).shape[1]
            assert pruned_blocks(conv, 4) == num_pruned(blocks, 0.6), name
    train = [r for r in records(straight) if r["phase"] == "finetune_train"]
    assert all(r["teacher_seconds"] > 0 for r in train)   # the teacher's cost is recorded


def test_resume_in_the_middle_of_the_ramp_is_exact(tiny_data, tmp_path, straight):
    stop_at = STEPS_PER_EPOCH + STEPS_PER_EPOCH // 2 + 2   # pre-training epoch, then fine-tuning step 5 of the ramp
    result = run_with_fault(cubic_argv(tiny_data, tmp_path, "--print_freq", "1"),  # stop at the next step
                            {"step": f"if steps == {stop_at}: os.kill(os.getpid(), signal.SIGTERM)"})
    assert result.returncode == 0, result.stderr
    saved = torch.load(tmp_path / "checkpoint" / "model_last.pt", weights_only=True)
    assert saved["epoch"] == 0 and saved["progress"]["step"] == 5
    result = run_with_fault(cubic_argv(tiny_data, tmp_path, "--resume"), {})
    assert result.returncode == 0, result.stderr
    resumed = torch.load(tmp_path / "checkpoint" / "model_last.pt", weights_only=True)["state_dict"]
    expected = torch.load(straight / "checkpoint" / "model_last.pt", weights_only=True)["state_dict"]
    for key, value in expected.items():
        assert torch.equal(resumed[key], value), key
