"""The exported 1xN sparse network computes the masked model's logits, for every architecture."""
import re
import subprocess
import sys

import pytest
import torch
from torch import nn

import models
from conftest import ROOT, reference
from models.blocks import HardSigmoid, HardSwish
from sparse.export import export_onnx, export_sparse, get_args_parser, load_sparse, main
from sparse.model import (DepthwiseConv, PooledLinear, SparseConv1x1, StemConv, activation_kind, bake_masks,
                          fold_batchnorm, is_depthwise, to_sparse_model)
from utils.pruning import masked_convs, prune_model


def pruned_model(arch, n, rate=0.5, seed=0):
    """A pruned model in eval mode with random BatchNorm statistics (so folding mistakes show)."""
    torch.manual_seed(seed)
    model = models.get_model(arch, num_classes=100).eval()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
    prune_model(model, rate, n, full=True)
    return model


@pytest.mark.parametrize("n", (4, 16))  # 16: partial blocks in V3 and in the 100-class classifier
@pytest.mark.parametrize("arch", [arch for arch in models.list_models() if arch.startswith("mobilenet")])  # ResNets: test_resnet_sparse.py
def test_sparse_network_matches_masked_model(arch, n):
    model = pruned_model(arch, n)
    sparse = to_sparse_model(model, n)
    assert sum(isinstance(m, SparseConv1x1) for m in sparse.modules()) == len(masked_convs(model))
    assert sum(isinstance(m, DepthwiseConv) for m in sparse.modules()) == sum(map(is_depthwise, model.modules())) > 0
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), model(x), atol=1e-4, rtol=1e-4)


def test_export_round_trip(tmp_path):
    model = pruned_model("mobilenet_v3_small", 8)
    permutations = {"features.2.conv.0": torch.randperm(72)}
    export_sparse(model, "mobilenet_v3_small", 8, tmp_path / "m.pt", num_classes=100, permutations=permutations)
    loaded = load_sparse(tmp_path / "m.pt")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-4, rtol=1e-4)
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert torch.equal(saved["permutations"]["features.2.conv.0"], permutations["features.2.conv.0"])


def corrupt(tensor, how):
    """A copy of a packed layer's row_ptr or col_idx, broken one way."""
    bad = tensor.clone()
    if how == "col_idx past C_in":
        bad[-1] = 10**6
    elif how == "negative col_idx":
        bad[0] = -1
    elif how == "col_idx not increasing":
        bad[1] = bad[0]  # a group's second block repeats its first column
    elif how == "row_ptr decreasing":
        bad[1] = bad[2] + 1
    return bad


@pytest.mark.parametrize("how,part,message", [
    ("col_idx past C_in", "col_idx", "col_idx must lie in"),
    ("negative col_idx", "col_idx", "col_idx must lie in"),
    ("col_idx not increasing", "col_idx", "col_idx must increase within each row group"),
    ("row_ptr decreasing", "row_ptr", "row_ptr must rise from 0"),
])
def test_a_malformed_sparse_file_is_refused_when_loaded(tmp_path, how, part, message):
    """A .sparse.pt whose packed indices are out of range or out of order (a corrupt or hostile
    file) is refused by load_sparse, naming the file and the layer, before any kernel reads it;
    the sparse.deploy CLI then prints one line and exits 2, writing nothing."""
    model = pruned_model("mobilenet_v3_small", 4)
    export_sparse(model, "mobilenet_v3_small", 4, tmp_path / "m.pt", num_classes=100)
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    # A layer whose first group holds at least two blocks, so that every corruption applies.
    prefix = next(k[: -len("row_ptr")] for k, v in saved["state_dict"].items()
                  if k.endswith("row_ptr") and v[1] >= 2 and v[2] > v[1])
    saved["state_dict"][prefix + part] = corrupt(saved["state_dict"][prefix + part], how)
    torch.save(saved, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=f"bad.pt: layer {re.escape(prefix[:-1])}: {message}"):
        load_sparse(tmp_path / "bad.pt")
    result = subprocess.run([sys.executable, "-m", "sparse.deploy", "--sparse", str(tmp_path / "bad.pt"),
                             "--output", str(tmp_path / "bad.ts")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert not (tmp_path / "bad.ts").exists()


def test_cli_export_of_authors_checkpoint_gives_reference_logits(tmp_path, authors_pruned):
    """Their pruned V2 (dense un-zeroed weights, float masks), exported by the CLI and reloaded."""
    main(get_args_parser().parse_args([
        "--arch", "mobilenet_v2", "--checkpoint", str(authors_pruned),
        "--N", "4", "--output", str(tmp_path / "v2.pt")]))
    io = torch.load(reference("mobilenet_v2_N4_rearrange.io.pth"), weights_only=True)
    with torch.no_grad():
        logits = load_sparse(tmp_path / "v2.pt")(io["input"])
    torch.testing.assert_close(logits, io["logits"], atol=1e-4, rtol=1e-4)


def test_depthwise_activation_fused_except_behind_squeeze_excite():
    """V3-large: dw-BN-SE-act keeps its activation (as PyTorch's one-op module); dw-BN-act and
    dw-BN-Identity-act fuse it. The Identity placeholders are not called."""
    sparse = to_sparse_model(pruned_model("mobilenet_v3_large", 4), 4)
    plain, with_se, no_se = sparse.features[1].conv, sparse.features[13].conv, sparse.features[7].conv
    assert plain[0].activation == "relu" and isinstance(plain[2], nn.Identity)
    assert with_se[3].activation == "none" and type(with_se[6]) is nn.Hardswish
    assert no_se[3].activation == "hardswish" and isinstance(no_se[6], nn.Identity)
    calls = []
    for module in sparse.modules():
        if isinstance(module, nn.Identity):
            module.register_forward_hook(lambda *args: calls.append(1))
    with torch.no_grad():
        sparse(torch.randn(1, 3, 32, 32))
    assert not calls


def test_activation_kind_judges_by_output():
    assert activation_kind(nn.ReLU(inplace=True)) == "relu"
    assert activation_kind(nn.ReLU6()) == "relu6"
    assert activation_kind(nn.Hardswish()) == "hardswish"
    assert activation_kind(HardSwish()) == "hardswish"
    for other in (HardSigmoid(), nn.Identity(), nn.Dropout(0.2).eval(), nn.BatchNorm2d(161).eval()):
        assert activation_kind(other) is None


def test_onnx_export_of_masked_model(tmp_path):
    onnx = pytest.importorskip("onnx")
    model = pruned_model("mobilenet_v2", 4)
    assert export_onnx(model, tmp_path / "m.onnx", image_size=64)
    onnx.checker.check_model(str(tmp_path / "m.onnx"))
    ort = pytest.importorskip("onnxruntime")
    x = torch.randn(2, 3, 64, 64)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(logits), model(x), atol=1e-4, rtol=1e-4)


def test_dense_twins_and_unpruned_layers_stay_dense():
    model = pruned_model("mobilenet_v3_large", 4)
    torch.manual_seed(1)
    partly = models.get_model("mobilenet_v2", num_classes=10).eval()
    prune_model(partly, 0.5, 4, full=False)  # the classifier keeps rate 0
    sparse = to_sparse_model(partly, 4)
    # Unpruned, the classifier stays dense: a matrix-vector product on the pooled features.
    assert isinstance(sparse.classifier[1], PooledLinear)
    assert isinstance(sparse.features[0][0], StemConv)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(fold_batchnorm(model)(x), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(bake_masks(model)(x), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sparse(x), partly(x), atol=1e-4, rtol=1e-4)


def test_export_cli_on_the_authors_checkpoint_and_ours(tmp_path, capsys, authors_pruned):
    """The export reads any pruned checkpoint strictly; the sparse network gives its logits."""
    from conftest import load_reference
    from sparse import export
    io = load_reference("mobilenet_v2_N4_rearrange.io.pth")
    out = tmp_path / "v2.sparse.pt"
    argv = ["--arch", "mobilenet_v2", "--N", "4", "--checkpoint", str(authors_pruned),
            "--output", str(out)]
    assert export.main(export.get_args_parser().parse_args(argv)) == 0
    with torch.no_grad():
        logits = export.load_sparse(out)(io["input"])
    torch.testing.assert_close(logits, io["logits"], atol=1e-3, rtol=1e-3)

    no_arch = ["--checkpoint", str(authors_pruned), "--output", str(out)]
    assert export.main(export.get_args_parser().parse_args(no_arch)) == 2
    assert "names no arch; pass --arch" in capsys.readouterr().err


def test_set_backend_moves_every_kernel_layer_and_keeps_the_function():
    from sparse.kernel import available_backends
    from sparse.model import set_backend

    model = pruned_model("mobilenet_v3_small", 4)
    sparse = to_sparse_model(model, 4)
    x = torch.randn(1, 3, 64, 64)
    for backend in available_backends():
        set_backend(sparse, backend)
        assert {m.backend for m in sparse.modules() if isinstance(m, (SparseConv1x1, DepthwiseConv))} == {backend}
        with torch.no_grad():
            torch.testing.assert_close(sparse(x), model(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="backend must be one of"):
        set_backend(sparse, "sse")
