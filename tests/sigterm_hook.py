"""imagenet.py under torchrun, with a pause that lets a test send SIGTERM at a known step.

    torchrun ... -m tests.sigterm_hook ARGS        (from the repository root)

Rank 0 creates $SIGTERM_HOOK_READY after optimizer step $SIGTERM_HOOK_STEP (counted over the
whole run) and waits there until its SIGTERM handler has run, so the signal lands mid-epoch,
after that step, whatever the machine's speed. Used by tests/test_distributed.py only.
"""
import os
import sys
import time
from pathlib import Path

import torch

import imagenet
from utils import trainer

# Holding the Run keeps its loaders' workers alive until the interpreter exits, where
# multiprocessing terminates them (SIGTERM from their parent): they must still exit then.
runs = []
real_init = trainer.Run.__init__


def init(self, *args, **kwargs):
    real_init(self, *args, **kwargs)
    runs.append(self)


steps = 0
real_step = torch.optim.SGD.step


def step(self, *args, **kwargs):
    global steps
    out = real_step(self, *args, **kwargs)
    steps += 1
    if os.environ["RANK"] == "0" and steps == int(os.environ["SIGTERM_HOOK_STEP"]):
        Path(os.environ["SIGTERM_HOOK_READY"]).touch()
        deadline = time.monotonic() + 120
        while not runs[0].stop_requested and time.monotonic() < deadline:
            time.sleep(0.01)
    return out


trainer.Run.__init__ = init
torch.optim.SGD.step = step

if __name__ == "__main__":
    sys.exit(imagenet.cli())
