"""The sparse network saved as TorchScript runs in a fresh process that imports only torch and
loads the kernels' library, and computes what the masked model does."""
import subprocess
import sys

import pytest
import torch

from sparse.deploy import get_args_parser, main, save_script, script_sparse
from sparse.export import export_sparse
from sparse.kernel import available_backends, library_path
from sparse.model import to_sparse_model
from test_sparse_model import pruned_model

pytestmark = pytest.mark.skipif(available_backends() == ("torch",), reason="no C++ kernel here")

RUN_ALONE = """
import sys, torch
assert not any(m.split('.')[0] in ('sparse', 'models', 'utils') for m in sys.modules)
torch.ops.load_library(sys.argv[1])
net = torch.jit.load(sys.argv[2])
inputs = torch.load(sys.argv[3], weights_only=True)
torch.save({k: net(x) for k, x in inputs.items()}, sys.argv[4])
assert not any(m.split('.')[0] in ('sparse', 'models', 'utils') for m in sys.modules)
"""


def run_alone(script_path, inputs, tmp_path):
    """The network's outputs on `inputs` ({name: tensor}), computed by a fresh interpreter whose
    working folder and sys.path hold nothing of this project."""
    torch.save(inputs, tmp_path / "inputs.pt")
    (tmp_path / "run.py").write_text(RUN_ALONE)
    subprocess.run([sys.executable, "-I", str(tmp_path / "run.py"), library_path(), str(script_path),
                    str(tmp_path / "inputs.pt"), str(tmp_path / "outputs.pt")], cwd=tmp_path, check=True)
    return torch.load(tmp_path / "outputs.pt", weights_only=True)


def test_scripted_network_runs_without_the_project(tmp_path):
    model = pruned_model("mobilenet_v2", 4)
    save_script(script_sparse(to_sparse_model(model, 4)), tmp_path / "net.ts")
    # Other sizes and batches than the trace's: the trace holds no fixed shape.
    inputs = {"one": torch.randn(1, 3, 224, 224), "batch": torch.randn(3, 3, 96, 128)}
    outputs = run_alone(tmp_path / "net.ts", inputs, tmp_path)
    with torch.no_grad():
        for name, x in inputs.items():
            torch.testing.assert_close(outputs[name], model(x), atol=1e-4, rtol=1e-4)


def test_deploy_cli_from_an_exported_file(tmp_path):
    model = pruned_model("mobilenet_v3_large", 8)
    export_sparse(model, "mobilenet_v3_large", 8, tmp_path / "m.sparse.pt", num_classes=100)
    assert main(get_args_parser().parse_args(["--sparse", str(tmp_path / "m.sparse.pt"),
                                              "--output", str(tmp_path / "m.ts")])) == 0
    x = torch.randn(2, 3, 64, 64)
    outputs = run_alone(tmp_path / "m.ts", {"x": x}, tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(outputs["x"], model(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_deploy_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, content):
    source = tmp_path / "in.sparse.pt"
    if content is not None:
        source.write_bytes(content)
    output = tmp_path / "out.ts"
    assert main(get_args_parser().parse_args(["--sparse", str(source), "--output", str(output)])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --sparse") and "\n" not in err
    assert not output.exists()
