"""Smoke tests of the benchmark: it runs as a script, writes the documented records, and refuses
to time a kernel or network that computes the wrong thing."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import bench.sparse_conv as bench
from bench.sparse_conv import get_args_parser, main
from sparse.pack import unpack_1xn

REPO = Path(__file__).resolve().parents[1]


def test_layer_bench_writes_records(tmp_path):
    out = tmp_path / "bench.json"
    main(get_args_parser().parse_args(["--scope", "layers", "--N", "4", "--p", "0.5", "--threads", "1",
                                       "--rounds", "1", "--json", str(out)]))
    records = json.loads(out.read_text())
    assert len(records) == 19  # MobileNetV2's distinct pruned 1x1 shapes at 224 px
    assert set(records[0]) >= {"scope", "arch", "N", "p", "threads", "dense_ms", "sparse_ms", "speedup",
                               "baseline", "blas_ms", "cpu", "isa"}
    assert all(r["scope"] == "layers" and r["sparse_ms"] > 0 for r in records)


def test_layer_bench_refuses_a_wrong_kernel(monkeypatch):
    def off_by_a_little(x, packed, bias, activation="none", backend="auto"):
        return torch.nn.functional.conv2d(x, unpack_1xn(packed)[:, :, None, None], bias) + 1e-2

    monkeypatch.setattr(bench, "conv1x1_1xn", off_by_a_little)
    with pytest.raises(AssertionError):
        main(get_args_parser().parse_args(["--scope", "layers", "--N", "4", "--p", "0.5", "--threads", "1",
                                           "--rounds", "1"]))


MODEL_ARGS = ["--scope", "model", "--arch", "mobilenet_v2", "--N", "4", "--p", "0.5", "--threads", "1",
              "--batch", "1", "--image_size", "64", "--rounds", "1", "--no-compile"]


def test_model_bench_as_a_script_times_the_dense_runtimes(tmp_path):
    out = tmp_path / "bench.json"
    # From another folder, as `python bench/sparse_conv.py` is run: the script finds the project itself.
    subprocess.run([sys.executable, str(REPO / "bench" / "sparse_conv.py"), *MODEL_ARGS, "--json", str(out)],
                   cwd=tmp_path, check=True, capture_output=True)
    (record,) = json.loads(out.read_text())
    assert record["arch"] == "mobilenet_v2" and record["batch"] == 1 and record["sparse_ms"] > 0
    assert record["sparse_unfused_ms"] > 0  # V2's blocks are fused: the unfused network is timed beside
    runtimes = record["dense_runtimes_ms"]
    assert record["dense_ms"] == min(v for k, v in runtimes.items() if not k.endswith("p=0.5"))
    for runtime in ("onnxruntime", "openvino"):
        if runtime in record:  # installed: both the dense and the masked model ran
            name = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}[runtime]
            assert runtimes[f"{name} dense"] > 0 and runtimes[f"{name} masked p=0.5"] > 0


def test_model_bench_refuses_a_wrong_sparse_network(monkeypatch):
    from sparse.model import SparseConv1x1

    forward = SparseConv1x1.forward
    monkeypatch.setattr(SparseConv1x1, "forward", lambda self, x: forward(self, x) * 1.01)
    with pytest.raises(AssertionError):
        main(get_args_parser().parse_args(MODEL_ARGS))
