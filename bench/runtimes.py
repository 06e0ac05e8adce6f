"""The dense runtimes CPU users deploy with, as callables for bench/sparse_conv.py: ONNX Runtime
(CPU execution provider, all graph optimisations) and OpenVINO (CPU, latency hint, f32), each
running a model exported to ONNX with a given thread count. A runtime that is not installed is
skipped with a warning."""
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

log = logging.getLogger("bench.runtimes")


def export_onnx(model: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """The eval-mode `model` as ONNX (the TorchScript exporter; dynamo's needs onnxscript)."""
    torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, input_names=["image"], output_names=["logits"])
    return path


def onnxruntime_session(onnx_path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray] | None:
    try:
        import onnxruntime as ort
    except ImportError:
        log.warning("onnxruntime not installed: its baseline is skipped")
        return None
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"image": x})[0]


def openvino_model(onnx_path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray] | None:
    try:
        import openvino as ov
    except ImportError:
        log.warning("openvino not installed: its baseline is skipped (pip install openvino)")
        return None
    compiled = ov.Core().compile_model(str(onnx_path), "CPU", {
        "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()
    return lambda x: request.infer({0: x})[0]


RUNTIMES = {"ONNX Runtime": onnxruntime_session, "OpenVINO": openvino_model}


def versions() -> dict[str, str]:
    found = {}
    for name, module in (("onnxruntime", "onnxruntime"), ("openvino", "openvino")):
        try:
            found[name] = __import__(module).__version__
        except ImportError:
            pass
    return found
