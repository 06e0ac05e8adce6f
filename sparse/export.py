"""Export a pruned model for inference.

    python -m sparse.export --arch mobilenet_v2 --checkpoint model_best.pt --N 4 \
        --output mobilenet_v2_N4.sparse.pt [--onnx mobilenet_v2_N4.onnx]

The sparse file holds the network with BatchNorm folded into the convs, pruned weights baked to
zero, and every pruned 1x1 conv packed in 1xN blocks; `load_sparse` rebuilds it for inference.
"""
import argparse
import logging
import os
from pathlib import Path

import torch
from torch import nn

import models
from sparse.model import bake_masks, pruned_layers, to_sparse_model

FORMAT = "1xN-sparse/1"
log = logging.getLogger(__name__)


def _atomic_save(obj, path: Path) -> None:
    """Write then rename, so a crash never leaves a half-written file under the final name."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_sparse(model: nn.Module, arch: str, n: int, path: str | Path, num_classes: int = 1000,
                  permutations: dict | None = None) -> nn.Module:
    """Saves the sparse inference network of a pruned `model`; returns that network.

    permutations: optional {layer: output-channel order} of filter rearrangement (the training
    checkpoint's `permutations`), stored as is so that channels can be related to the original
    order; the network does not need it.
    """
    layers = pruned_layers(model)
    sparse = to_sparse_model(model, n, layers)
    _atomic_save({"format": FORMAT, "arch": arch, "num_classes": num_classes, "N": n, "sparse_layers": layers,
                  "state_dict": sparse.state_dict(), "permutations": permutations}, Path(path))
    return sparse


def load_sparse(path: str | Path) -> nn.Module:
    """The inference network saved by `export_sparse`, in eval mode."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} file (format={saved.get('format')!r})")
    # Same skeleton, same rewrite: the module tree matches; the packed tensors take the saved shapes.
    skeleton = models.get_model(saved["arch"], conv_type="DenseConv", num_classes=saved["num_classes"])
    sparse = to_sparse_model(skeleton, saved["N"], saved["sparse_layers"])
    sparse.load_state_dict(saved["state_dict"], strict=True)
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


def load_pruned(arch: str, checkpoint: str | Path, num_classes: int | None = None) -> tuple[nn.Module, dict, int]:
    """The masked model from a training checkpoint ({'state_dict': ...}) or a raw state_dict,
    the checkpoint's channel permutations ({} if none) and its number of classes."""
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state_dict = saved.get("state_dict", saved)
    num_classes = num_classes or saved.get("num_classes", 1000)
    model = models.get_model(arch, conv_type="DenseConv", num_classes=num_classes)
    model.load_state_dict(state_dict, strict=True)  # the masks come from the checkpoint
    return model.eval(), saved.get("permutations", {}), num_classes


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a 1xN-pruned MobileNet for sparse inference")
    parser.add_argument("--arch", required=True, choices=models.list_models())
    parser.add_argument("--checkpoint", required=True, help="pruned model: checkpoint or state_dict")
    parser.add_argument("--N", type=int, required=True, help="block size the model was pruned with")
    parser.add_argument("--num_classes", type=int, help="default: the checkpoint's, else 1000")
    parser.add_argument("--output", required=True, help="where to write the sparse network")
    parser.add_argument("--onnx", help="also write the masked-dense model as ONNX here")
    parser.add_argument("--image_size", type=int, default=224, help="ONNX input size")
    return parser


def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    model, permutations, num_classes = load_pruned(args.arch, args.checkpoint, args.num_classes)
    export_sparse(model, args.arch, args.N, args.output, num_classes, permutations)
    log.info("wrote %s", args.output)
    if args.onnx and export_onnx(model, args.onnx, args.image_size):
        log.info("wrote %s", args.onnx)


if __name__ == "__main__":
    main(get_args_parser().parse_args())
