"""Export a pruned model for inference.

    python -m sparse.export --arch mobilenet_v2 --checkpoint model_best.pt --N 4 \
        --output mobilenet_v2_N4.sparse.pt [--onnx mobilenet_v2_N4.onnx]

The sparse file holds the network with BatchNorm folded into the convs, pruned weights baked to
zero, and every pruned 1x1 conv packed in 1xN blocks; `load_sparse` rebuilds it for inference.
"""
import argparse
import logging
import sys
from pathlib import Path

import torch
from torch import nn

import models
from sparse.model import SparseConv1x1, bake_masks, pruned_layers, to_sparse_model
from sparse.pack import check_1xn
from utils import checkpoint as checkpoints
from utils.checkpoint import save_atomic

FORMAT = "1xN-sparse/1"
log = logging.getLogger(__name__)


def export_sparse(model: nn.Module, arch: str, n: int, path: str | Path, num_classes: int = 1000,
                  permutations: dict | None = None) -> nn.Module:
    """Saves the sparse inference network of a pruned `model`; returns that network.

    permutations: optional {layer: output-channel order} of filter rearrangement (the training
    checkpoint's `permutations`), stored as is so that channels can be related to the original
    order; the network does not need it.
    """
    layers = pruned_layers(model)
    sparse = to_sparse_model(model, n, layers)
    save_atomic({"format": FORMAT, "arch": arch, "variant": getattr(model, "variant", "authors"),
                 "num_classes": num_classes, "N": n, "sparse_layers": layers,
                 "state_dict": sparse.state_dict(), "permutations": permutations}, Path(path))
    return sparse


def load_sparse(path: str | Path) -> nn.Module:
    """The inference network saved by `export_sparse`, in eval mode. Every packed layer is checked
    (sparse.pack.check_1xn): a malformed file raises ValueError naming the layer."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (format={saved.get('format')!r})")
    # Same skeleton, same rewrite: the module tree matches; the packed tensors take the saved shapes.
    skeleton = models.get_model(saved["arch"], conv_type="DenseConv", num_classes=saved["num_classes"],
                                variant=saved.get("variant", "authors"))
    sparse = to_sparse_model(skeleton, saved["N"], saved["sparse_layers"])
    sparse.load_state_dict(saved["state_dict"], strict=True)
    for name, module in sparse.named_modules():
        if isinstance(module, SparseConv1x1):
            try:
                check_1xn(module.weight)
            except ValueError as error:
                raise ValueError(f"{path}: layer {name}: {error}") from None
    return sparse


def export_onnx(model: nn.Module, path: str | Path, image_size: int = 224) -> bool:
    """ONNX of the masked-dense model (zeros baked into the weights). False if `onnx` is absent."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        log.warning("ONNX export skipped: the 'onnx' package is not installed (pip install onnx)")
        return False
    dummy = torch.zeros(1, 3, image_size, image_size)
    # The TorchScript-based exporter: the dynamo one would also need onnxscript.
    torch.onnx.export(bake_masks(model), (dummy,), str(path), dynamo=False, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return True


def load_pruned(arch: str | None, path: str | Path) -> tuple[nn.Module, dict, int, dict]:
    """The masked model of a pruned checkpoint (ours or the authors'), strictly loaded; with its
    channel permutations ({} if none), number of classes, and the checkpoint itself."""
    saved = checkpoints.read_checkpoint(path, "--checkpoint")
    source = f"--checkpoint {path}"
    arch = arch or (saved.get("arch") if isinstance(saved, dict) else None)
    if arch is None:
        raise checkpoints.CheckpointError(f"{source}: names no arch; pass --arch")
    num_classes = checkpoints.num_classes_in(saved, source)
    model = models.get_model(arch, conv_type="DenseConv", num_classes=num_classes,
                             variant=checkpoints.variant_in(saved))
    checkpoints.load_pruned(model, saved, source)  # the masks come from the checkpoint
    return model.eval(), saved.get("permutations") or {}, num_classes, saved


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a 1xN-pruned MobileNet or ResNet for sparse inference")
    parser.add_argument("--checkpoint", required=True, help="pruned checkpoint (ours or the authors')")
    parser.add_argument("--arch", choices=models.list_models(), help="default: the checkpoint's")
    parser.add_argument("--N", type=int, help="block size the model was pruned with (default: the checkpoint's)")
    parser.add_argument("--output", required=True, help="where to write the sparse network")
    parser.add_argument("--onnx", help="also write the masked-dense model as ONNX here")
    parser.add_argument("--image_size", type=int, default=224, help="ONNX input size")
    return parser


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        model, permutations, num_classes, saved = load_pruned(args.arch, args.checkpoint)
    except checkpoints.CheckpointError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    n = args.N or saved.get("N")
    if not n or n < 1:
        print("error: --N: the checkpoint does not record its block size; pass --N", file=sys.stderr)
        return 2
    export_sparse(model, args.arch or saved["arch"], n, args.output, num_classes, permutations)
    log.info("wrote %s", args.output)
    if args.onnx and export_onnx(model, args.onnx, args.image_size):
        log.info("wrote %s", args.onnx)
    return 0


if __name__ == "__main__":
    sys.exit(main(get_args_parser().parse_args()))
