"""ONNX export. `export_onnx` is the one entry point; each family owns its `to_onnx(path)` method.

An exported graph maps a preprocessed batch "images" (N x 3 x S x S float32, already resized and normalised with
the model's preprocessing from config.json) to "scores" (N) and "maps" (N x S x S), in the family's raw units.
The TorchScript exporter is used (`dynamo=False`): the dynamo exporter needs onnxscript, not a dependency.
A family whose predictions run through an onnxruntime graph with a rewrite (PatchCore's int8 bank search) is
exported with that same rewrite, so the file computes exactly what Kensa's own predictions computed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from ml.runtime import _EXPORT_LOCK

OPSET = 17


def export_onnx(model: nn.Module, path: Path | str) -> Path:
    """Writes `model` to `path` as ONNX through the family's own `to_onnx`, then applies the rewrite its
    prediction graph gets (`model.runtime.rewrite`, if any); returns the path."""
    to_onnx = getattr(model, "to_onnx", None)
    if to_onnx is None:
        raise NotImplementedError(f"family {getattr(model, 'family', type(model).__name__)!r} has no ONNX export")
    path = Path(path)
    # torch.onnx.export keeps its state in globals: one export at a time in the process, prediction graphs included.
    with _EXPORT_LOCK:
        to_onnx(path)
    rewrite = getattr(getattr(model, "runtime", None), "rewrite", None)
    if rewrite is not None:
        path.write_bytes(rewrite(path.read_bytes()))
    return path


def exportable(family: str) -> bool:
    """Whether models of `family` can be exported (every registered family has `to_onnx`)."""
    from ml.registry import family_class

    return callable(getattr(family_class(family), "to_onnx", None))


def export_module(module: nn.Module, path: Path | str, *, image_size: int, batch: int = 2) -> None:
    """Traces `module.forward(images) -> (scores, maps)` with a dynamic batch axis and writes it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module.eval()
    # On the module's own device: a model trained or loaded on a GPU exports the same graph.
    device = next(module.buffers(), next(module.parameters(), torch.zeros(0))).device
    example = torch.randn(batch, 3, image_size, image_size, device=device)
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
