"""The sparse inference ResNet (sparse/resnet.py): pruned 3×3 convs as im2col rows on the 1×N kernel,
strided 1×1 convs by subsampling, BN folded; equal to the masked model, and exported like a MobileNet."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from conftest import ROOT
import models
from sparse.export import export_sparse, load_sparse
from sparse.kernel import available_backends
from sparse.model import SparseConv1x1, pruned_layers, to_sparse_model
from sparse.resnet import SparseConvKxK
from utils.pruning import masked_convs, prune_model
from utils.rearrange import apply_permutations_, rearrangement_orders


def pruned_resnet(arch, n, full=True, width_mult=0.25, num_classes=100, seed=0):
    torch.manual_seed(seed)
    model = models.get_model(arch, num_classes=num_classes, width_mult=width_mult).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # random statistics: folding mistakes show
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    orders = rearrangement_orders(model)
    prune_model(model, 0.5, n, full=full, orders=orders)
    apply_permutations_(model, orders)
    return model


@pytest.mark.parametrize("backend", [b for b in available_backends() if b != "torch"][:1] + ["torch"])
@pytest.mark.parametrize("arch,n", [("resnet50", 4), ("resnet18", 3)])  # 3: partial blocks (16 % 3)
def test_sparse_resnet_equals_the_masked_model(arch, n, backend, monkeypatch):
    if backend == "torch":  # the fallback path too (machines without a compiler)
        monkeypatch.setattr("sparse.kernel.available_backends", lambda: ("torch",))
    model = pruned_resnet(arch, n)
    sparse = to_sparse_model(model, n)
    assert sum(isinstance(m, SparseConv1x1) for m in sparse.modules()) == len(masked_convs(model))
    assert {m.kernel_size for m in sparse.modules() if isinstance(m, SparseConvKxK)} == {1, 3}
    assert any(isinstance(m, SparseConvKxK) and m.kernel_size == 1 and m.stride == 2 for m in sparse.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), model(x), atol=1e-4, rtol=0)


def test_fc_without_full_stays_dense():
    model = pruned_resnet("resnet18", 4, full=False)
    assert "fc" not in pruned_layers(model) and len(pruned_layers(model)) == len(masked_convs(model)) - 1
    sparse = to_sparse_model(model, 4)
    assert isinstance(sparse.fc, nn.Conv2d)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), model(x), atol=1e-4, rtol=0)


def test_resnet50_export_round_trip(tmp_path):
    model = pruned_resnet("resnet50", 4, width_mult=1.0, num_classes=10)
    export_sparse(model, "resnet50", 4, tmp_path / "r50.pt", num_classes=10)
    loaded = load_sparse(tmp_path / "r50.pt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=0)
    saved = torch.load(tmp_path / "r50.pt", weights_only=True)
    assert len(saved["sparse_layers"]) == 53 and saved["arch"] == "resnet50"


def test_dense_twin_folds_batchnorm():
    from sparse.model import fold_batchnorm
    model = pruned_resnet("resnet18", 4)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, (SparseConv1x1, nn.BatchNorm2d)) for m in folded.modules())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=0)


def test_bench_has_a_resnet50_model_row(tmp_path):
    """Smoke run of the model rows against every dense runtime (no timing asserted): the bench
    checks the sparse network against the masked one before timing it. A subprocess, as the
    bench is run: OpenVINO's thread pool in the test process would outlive the test."""
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, str(ROOT / "bench" / "sparse_conv.py"), "--scope", "model", "--arch", "resnet50",
                    "--N", "4", "--p", "0.5", "--threads", "1", "--batch", "1", "--image_size", "32", "--rounds", "1",
                    "--no-compile", "--json", str(out)], cwd=tmp_path, check=True, capture_output=True)
    records = json.loads(out.read_text())
    assert [(r["arch"], r["N"], r["p"]) for r in records] == [("resnet50", 4, 0.5)]
    assert records[0]["sparse_ms"] > 0 and records[0]["dense_ms"] > 0
    assert {"ONNX Runtime dense", "OpenVINO dense"} <= set(records[0]["dense_runtimes_ms"])


def test_onnx_export_of_a_masked_resnet(tmp_path):
    import onnxruntime
    from sparse.export import export_onnx
    model = pruned_resnet("resnet18", 4)
    assert export_onnx(model, tmp_path / "r18.onnx", image_size=64)
    session = onnxruntime.InferenceSession(str(tmp_path / "r18.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 64, 64)
    (logits,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), atol=1e-4, rtol=0)
