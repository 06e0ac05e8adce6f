"""The sparse network as one TorchScript file that runs without this project: our kernels are
dispatcher ops (conv1xn::conv1x1_1xn, conv1xn::depthwise_conv, see sparse/csrc/conv1xn_binding.cpp),
so tracing records them like any ATen op, and a plain torch install runs the file after loading
the kernels' shared library:

    import torch
    torch.ops.load_library("conv1xn.so")          # sparse.kernel.library_path() where it was built
    net = torch.jit.load("mobilenet_v2_N4.sparse.ts")
    logits = net(images)                          # float32 NCHW, any batch size

    python -m sparse.deploy --sparse mobilenet_v2_N4.sparse.pt --output mobilenet_v2_N4.sparse.ts

Freezing inlines the weights and removes the module calls: also the fastest way to run the
network from Python (about 1.5 ms less per MobileNetV2 than the nn.Module, see README).
The library is built for the CPU it runs on: copy it with the file to machines of the same
architecture (x86-64; the ISA is still chosen at run time).
"""
import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from sparse.kernel import available_backends, library_path

log = logging.getLogger(__name__)


@torch.no_grad()
def script_sparse(sparse: nn.Module, image_size: int = 224) -> torch.jit.ScriptModule:
    """`sparse` (a to_sparse_model network) traced and frozen. The trace holds no Python: it
    needs the C++ kernels (the PyTorch fallback would trace into dense convs, so it is refused)."""
    if available_backends() == ("torch",):
        raise RuntimeError("the C++ kernel is unavailable here: a traced network would not use it")
    example = torch.zeros(1, 3, image_size, image_size)
    # The MobileNets' forward has no data-dependent control flow: the trace is valid for any input
    # size and batch (checked by tests/test_sparse_deploy.py).
    return torch.jit.freeze(torch.jit.trace(sparse.eval(), example, check_trace=False))


def save_script(script: torch.jit.ScriptModule, path: str | Path) -> None:
    """Written to a temporary file and renamed, as our checkpoints are: never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.jit.save(script, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Save a sparse network (.sparse.pt) as a TorchScript file")
    parser.add_argument("--sparse", required=True, help="the network written by python -m sparse.export")
    parser.add_argument("--output", required=True, help="where to write the TorchScript file")
    return parser


def main(args: argparse.Namespace) -> int:
    from sparse.export import load_sparse  # the model registry is needed here, not by script_sparse

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not Path(args.sparse).is_file():
        print(f"error: --sparse {args.sparse}: no such file", file=sys.stderr)
        return 2
    try:
        sparse = load_sparse(args.sparse)
    except Exception as error:  # not a .sparse.pt: unpickling refused, wrong format, mismatched tensors
        print(f"error: --sparse {args.sparse}: not a sparse network ({str(error).splitlines()[0]})", file=sys.stderr)
        return 2
    save_script(script_sparse(sparse), args.output)
    log.info("wrote %s; it runs after torch.ops.load_library(%r)", args.output, library_path())
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
