"""ONNX export. `export_onnx` is the one entry point; each family owns its `to_onnx(path)` method.

An exported graph maps a preprocessed batch "images" (N x 3 x S x S float32, already resized and normalised with
the model's preprocessing from config.json) to "scores" (N) and "maps" (N x S x S), in the family's raw units.
The TorchScript exporter is used (`dynamo=False`): the dynamo exporter needs onnxscript, not a dependency.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

OPSET = 17


def export_onnx(model: nn.Module, path: Path | str) -> Path:
    """Writes `model` to `path` as ONNX through the family's own `to_onnx`; returns the path."""
    to_onnx = getattr(model, "to_onnx", None)
    if to_onnx is None:
        raise NotImplementedError(f"family {getattr(model, 'family', type(model).__name__)!r} has no ONNX export")
    path = Path(path)
    to_onnx(path)
    return path


def export_module(module: nn.Module, path: Path | str, *, image_size: int, batch: int = 2) -> None:
    """Traces `module.forward(images) -> (scores, maps)` with a dynamic batch axis and writes it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    example = torch.randn(batch, 3, image_size, image_size)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python branches on fitted buffers are expected
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            input_names=["images"],
            output_names=["scores", "maps"],
            dynamic_axes={"images": {0: "batch"}, "scores": {0: "batch"}, "maps": {0: "batch"}},
            opset_version=OPSET,
        )
