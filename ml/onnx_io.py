"""Exporting a family's scoring graph to ONNX, shared by the families that own a `to_onnx` method.

A scorer is an nn.Module mapping a preprocessed batch (N x C x S x S float32) to (scores N, maps N x S x S).
The TorchScript-based exporter is used (`dynamo=False`): the dynamo exporter needs onnxscript, which is not a
dependency.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

INPUT_NAME = "images"
OUTPUT_NAMES = ("scores", "maps")
OPSET = 17


def export_scorer(scorer: nn.Module, path: Path, *, channels: int, size: int) -> None:
    """Writes `scorer` to `path` as ONNX with a dynamic batch axis; input "images", outputs "scores" and "maps"."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = scorer.training
    scorer.eval()
    example = torch.rand(2, channels, size, size)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints in shapes are expected here
            torch.onnx.export(
                scorer,
                (example,),
                str(path),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={INPUT_NAME: {0: "batch"}, "scores": {0: "batch"}, "maps": {0: "batch"}},
                opset_version=OPSET,
            )
    finally:
        scorer.train(was_training)
