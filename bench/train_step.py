"""Masked vs dense training step (the cost of the 1×N masks during fine-tuning), CPU or GPU.

    python bench/train_step.py [--arch mobilenet_v2] [--batch 32] [--img_size 224] [--threads 2]
    python bench/train_step.py --device cuda --batch 256 --amp fp16 --channels_last

The same model is timed with `DenseConv` layers (no mask applied: plain conv) and with pruned
`BlockL1Conv` layers (forward uses mask ⊙ weight), alternating steps in one process; prints the
medians, their ratio and images per second. Each step is the training loop's own
(`utils.engine.Stepper`: autocast, GradScaler for fp16, channels_last input); on CUDA the clock
waits for the device after each step, and the data are random tensors already on the device, so
this is the model's rate, without any loader. The prune + rearrange time of a whole model is
`bench/bench_rearrange.py`.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models import get_model  # noqa: E402
from utils.engine import Stepper  # noqa: E402
from utils.pruning import DenseConv, masked_convs, prune_model  # noqa: E402


class PlainConv(DenseConv):
    """The dense baseline: a conv with no mask multiplication at all."""

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def make_stepper(arch, masked, args, device):
    model = get_model(arch, conv_type="BlockL1Conv")
    if masked:
        prune_model(model, 0.5, 4)
    else:
        for name, conv in masked_convs(model):
            conv.__class__ = PlainConv
    model = model.to(device).train()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9,
                                weight_decay=4e-5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler(device.type, enabled=args.amp == "fp16")
    return Stepper(model, torch.nn.CrossEntropyLoss(), optimizer, scheduler, device, args.amp, scaler,
                   args.channels_last)


def timed_step(stepper, images, target):
    start = time.perf_counter()
    stepper.step(images, target)
    if stepper.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="mobilenet_v2")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--img_size", type=int, default=224)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None,
                        help="autocast as imagenet.py --amp (fp16 adds the gradient scaler; CUDA only)")
    parser.add_argument("--channels_last", action="store_true", help="channels_last model and input")
    parser.add_argument("--cudnn_benchmark", action="store_true", help="let cuDNN time its algorithms first")
    args = parser.parse_args()
    problem = ("--device cuda: no CUDA device here" if args.device == "cuda" and not torch.cuda.is_available()
               else "--amp fp16 needs --device cuda (use --amp bf16 on the CPU)" if args.amp == "fp16" and args.device != "cuda"
               else None)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    images = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    target = torch.randint(0, 1000, (args.batch,), device=device)
    steppers = {"dense": make_stepper(args.arch, False, args, device),
                "masked": make_stepper(args.arch, True, args, device)}
    times = {name: [] for name in steppers}
    for i in range(args.steps + 3):  # alternate; the first three rounds are warm-up (cuDNN's timing too)
        for name, stepper in steppers.items():
            elapsed = timed_step(stepper, images, target)
            if i >= 3:
                times[name].append(elapsed)
    dense, masked = (statistics.median(times[name]) for name in ("dense", "masked"))
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(f"{args.arch}, batch {args.batch}, {args.img_size} px, {where}, amp {args.amp or 'off'}, "
          f"{'channels_last' if args.channels_last else 'NCHW'}, cudnn.benchmark {args.cudnn_benchmark}, median of {args.steps} steps")
    print(f"dense step  {1000 * dense:8.1f} ms  {args.batch / dense:8.0f} img/s\n"
          f"masked step {1000 * masked:8.1f} ms  {args.batch / masked:8.0f} img/s\n"
          f"masked / dense {masked / dense:.3f}")


if __name__ == "__main__":
    main()
