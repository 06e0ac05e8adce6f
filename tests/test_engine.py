"""The training loop reads the device only at log points: no host sync per step (issue 10, item 7)."""
import pytest
import torch

import models
from imagenet import get_args_parser
from utils import engine
from utils.engine import EpochProgress, NonFiniteLoss, train_one_epoch
from utils.pruning import prune_model
from utils.trainer import Run

# Every Python-level way to copy a tensor's value to the host (each waits for the device on CUDA).
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


class Batches(list):
    """A loader: a list of (images, target) on the device, with what train_one_epoch asks of one."""
    batch_size = 4

    def set_epoch(self, epoch, start=0):
        pass


def batches(count, device, poison_at=None):
    generator = torch.Generator().manual_seed(0)
    out = Batches()
    for i in range(count):
        images = torch.randn(4, 3, 32, 32, generator=generator)
        if i == poison_at:
            images[0, 0, 0, 0] = float("nan")
        out.append((images.to(device), torch.tensor([0, 1, 2, 0], device=device)))
    return out


def stepper(device, *flags):
    torch.manual_seed(0)
    model = models.get_model("mobilenet_v1", width_mult=0.25, num_classes=3)
    prune_model(model, 0.5, 4)  # masked convs in the step, as in fine-tuning
    args = get_args_parser().parse_args(["--warmup_epochs", "1", *flags])
    return Run(args, torch.device(device), model.to(device), [None] * 8, None, None).stepper(epochs=2)


@pytest.fixture
def host_reads(monkeypatch):
    """The names of the host reads made while the fixture is active, in order."""
    calls = []
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def spy(self, *args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, spy)
    return calls


@pytest.mark.parametrize("device", DEVICES)
def test_a_training_step_never_reads_the_device(device, host_reads):
    s = stepper(device, "--label_smoothing", "0.1")
    for images, target in batches(3, device):
        loss, correct = s.step(images, target)
    assert host_reads == []
    assert loss.device.type == device and correct.device.type == device and correct.shape == (2,)


@pytest.mark.parametrize("device", DEVICES)
def test_the_loop_reads_the_device_only_at_log_points(device, host_reads):
    def reads(steps, log_every):
        host_reads.clear()
        asked = []
        progress = EpochProgress(0)
        assert train_one_epoch(stepper(device), batches(steps, device), progress,
                               lambda: asked.append(progress.step) or False, log_every)
        return len(host_reads), asked, progress

    once, asked, progress = reads(steps=2, log_every=50)   # the end of the epoch is the one log point
    assert once > 0 and asked == [2]
    assert reads(steps=6, log_every=50)[:2] == (once, [6])  # more steps, no more reads
    three_times, asked, progress = reads(steps=6, log_every=2)
    assert three_times == 3 * once and asked == [2, 4, 6]
    # The sums read at the log points are those of every step.
    assert progress.sums["images"] == 24 and 0 <= progress.sums["correct1"] <= progress.sums["correct5"] <= 24
    assert progress.sums["loss"] > 0


def test_a_stop_takes_effect_at_the_next_log_point():
    progress = EpochProgress(0)
    assert not train_one_epoch(stepper("cpu"), batches(6, "cpu"), progress, lambda: True, log_every=4)
    assert progress.step == 4 and progress.sums["images"] == 16


def test_a_non_finite_loss_stops_at_the_log_point_naming_its_step(monkeypatch):
    seen = []
    real_agree = engine._agree
    monkeypatch.setattr(engine, "_agree", lambda *a: seen.append(progress.step) or real_agree(*a))
    progress = EpochProgress(0)
    with pytest.raises(NonFiniteLoss, match=r"loss is nan at epoch 0, step 2: "):
        train_one_epoch(stepper("cpu"), batches(6, "cpu", poison_at=2), progress, log_every=4)
    assert seen == [4]  # found where the host first reads the device, not at step 2 itself
