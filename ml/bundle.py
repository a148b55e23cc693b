"""Model bundles: a fitted model as a zip a production line can run without Kensa.

The zip holds one folder with
  model.onnx          the graph (ml.onnx_export): "images" -> "scores", "maps", as Kensa's own predictions run it
  preprocessing.json  how an image becomes "images": sizes, resize filter, normalisation, grey handling
  scoring.json        the operating threshold, the raw -> normalised mapping (threshold -> 0.5), the mask rule
  classes.json        the project's defect class names
  kensa_runner.py     a runner needing only onnxruntime, numpy and Pillow (the source is ml/bundle_runner.py)
  README.txt          how to run it
  manifest.json       format, version, family, metrics, times, and the SHA-256 of every other file

The preprocessing each family does lives in the family's code; `preprocessing_spec` writes it down for the runner,
and a test runs the runner in a virtualenv without torch to check both give the same scores.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from ml.bundle_runner import BUNDLE_FORMAT, MANIFEST
from ml.onnx_export import export_onnx
from ml.thresholds import Calibration

FORMAT_VERSION = 1
RUNNER_SOURCE = Path(__file__).with_name("bundle_runner.py")
RUNNER_NAME = "kensa_runner.py"
MODEL_NAME = "model.onnx"
PREPROCESSING_NAME = "preprocessing.json"
SCORING_NAME = "scoring.json"
CLASSES_NAME = "classes.json"
README_NAME = "README.txt"
# How the runner writes anomaly maps, as Kensa stores them (webapp.training.evaluation passes its own; this is the
# same encoding for callers outside the app): byte = 128 + floor(gain * asinh((raw - threshold) / scale)).
MAP_PNG = {"encoding": "asinh-z", "gain": 127 / math.asinh(1e4)}
DECODING = (
    "Files are decoded as Kensa decodes uploads for prediction: EXIF orientation applied; 16-bit grey stretched from "
    "the whole image's min..max to 8 bits; alpha dropped; every mode converted to 8-bit RGB; with max_side, a longer "
    "side above it is shrunk to it first (JPEG draft decoding, alpha and palette images reduced by a whole factor, "
    "then bicubic)."
)


@dataclass(frozen=True)
class BundleInfo:
    """What the app knows about a model beyond the model itself. `name` is the zip's top folder."""

    name: str
    version: dict  # {"number": 3, "id": "..."}
    created_at: str  # when the model was trained, ISO 8601
    metrics: dict = field(default_factory=dict)
    class_names: tuple[str, ...] = ()
    project: dict = field(default_factory=dict)
    map_png: dict = field(default_factory=lambda: dict(MAP_PNG))  # the stored maps' encoding
    decode_max_side: int | None = None  # uploads larger than this are shrunk before the model sees them


def preprocessing_spec(model, decode_max_side: int | None = None) -> dict:
    """How `model` turns an image file into its graph's "images" input, for the runner."""
    family, config = model.family, model.config
    decoding = {"text": DECODING, "max_side": decode_max_side}
    if family in ("patchcore", "gaussian"):
        pre = model.preprocessing
        return {
            "kind": "resize_normalise",
            "decoding": decoding,
            "size": [config.image_size, config.image_size],
            "filter": pre.interpolation,
            "resize": "Pillow's filter on 8-bit RGB; a grey image (three equal channels) is resized as one channel "
            "and repeated, which gives the same pixels",
            "normalise": "x / 255 per channel, then (x - mean) / std",
            "mean": list(pre.mean),
            "std": list(pre.std),
            "layout": "N x 3 x H x W float32",
        }
    if family == "autoencoder" or (family == "unet" and not config.native):
        return {
            "kind": "resize_unit",
            "decoding": decoding,
            "size": [config.image_size, config.image_size],
            "filter": "bilinear, antialiased (torch F.interpolate, align_corners=False, antialias=True)",
            "normalise": "x / 255 (the graph does anything further itself)",
            "layout": "N x 3 x H x W float32 in [0, 1]",
        }
    if family == "unet":
        return {
            "kind": "native",
            "decoding": decoding,
            "scale": config.scale,
            "max_side": config.max_side,
            "filter": "bilinear, antialiased, only when scale < 1 or the longer side exceeds max_side",
            "normalise": "x / 255, then x = (x - mean(x)) / (std(x) + epsilon) * std + mean over the image's own "
            "pixels (all channels; std with n - 1)",
            "standardise": {"mean": list(config.mean), "std": list(config.std), "epsilon": 1e-3},
            "pad_multiple": 32,
            "pad": "reflect at the bottom and right to multiples of 32; the map is cropped back",
            "layout": "N x 3 x H x W float32",
        }
    raise NotImplementedError(f"family {family!r} has no bundle preprocessing")


def scoring_spec(model, calibration: Calibration, map_png: dict = MAP_PNG) -> dict:
    """The call, the normalised score and the mask, as Kensa makes them from the graph's outputs."""
    if model.family == "unet":
        mask = {"rule": "map_above", "value": model.config.mask_threshold, "text": "map > value (probabilities)"}
    else:
        mask = {"rule": "map_at_least_threshold", "text": "map >= threshold (raw units)"}
    return {
        "threshold": calibration.threshold,
        "call": "defect when score >= threshold, else good",
        "normalisation": {
            "kind": "logistic",
            "scale": calibration.scale,
            "formula": "1 / (1 + exp(-clip((score - threshold) / scale, -60, 60)))",
            "text": "the threshold maps to 0.5; one scale above it reads 0.73, two read 0.88",
        },
        "map": "the graph's map, cropped to the unpadded input, resized bilinearly (align_corners=False) to the "
        "image's size",
        "mask": mask,
        "map_png": {
            **map_png,
            "text": "byte = 128 + floor(gain * asinh((raw - threshold) / scale)), clipped to 0..255",
        },
    }


def onnx_bytes(model) -> bytes:
    """The model's graph as Kensa's predictions run it (see ml.onnx_export)."""
    with tempfile.TemporaryDirectory() as folder:
        return export_onnx(model, Path(folder) / MODEL_NAME).read_bytes()


def _readme(model, info: BundleInfo, calibration: Calibration) -> str:
    return f"""Kensa model bundle: {info.name}
Family {model.family}, version {info.version.get("number", "?")}, trained {info.created_at}.
An image is called defective when its score >= {calibration.threshold:.6g}.

Run it (Python 3.9+):
    pip install onnxruntime numpy Pillow
    python {RUNNER_NAME} part.png
    python {RUNNER_NAME} parts/ --out results.json --maps maps/
    python {RUNNER_NAME} --verify

Every file's SHA-256 is in {MANIFEST}; the runner checks them before it scores anything.
{PREPROCESSING_NAME} and {SCORING_NAME} describe, for other runtimes, what the runner does around {MODEL_NAME}.
"""


def _dumps(document) -> bytes:
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def bundle_files(model, *, calibration: Calibration, info: BundleInfo, graph: bytes | None = None) -> dict[str, bytes]:
    """Every file of the bundle by name, the manifest included; `graph` is the ONNX model if already exported."""
    files = {
        MODEL_NAME: graph if graph is not None else onnx_bytes(model),
        PREPROCESSING_NAME: _dumps(preprocessing_spec(model, info.decode_max_side)),
        SCORING_NAME: _dumps(scoring_spec(model, calibration, info.map_png)),
        CLASSES_NAME: _dumps({"defect_classes": list(info.class_names)}),
        RUNNER_NAME: RUNNER_SOURCE.read_bytes(),
        README_NAME: _readme(model, info, calibration).encode("utf-8"),
    }
    manifest = {
        "format": BUNDLE_FORMAT,
        "format_version": FORMAT_VERSION,
        "name": info.name,
        "family": model.family,
        "version": info.version,
        "project": info.project,
        "created_at": info.created_at,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "threshold": calibration.threshold,
        "metrics": info.metrics,
        "class_names": list(info.class_names),
        "model": MODEL_NAME,
        "preprocessing": PREPROCESSING_NAME,
        "scoring": SCORING_NAME,
        "classes": CLASSES_NAME,
        "runner": RUNNER_NAME,
        "requires": ["onnxruntime", "numpy", "Pillow"],
        "files": {
            name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in files.items()
        },
    }
    return {**files, MANIFEST: _dumps(manifest)}


def bundle_write(
    model, destination: Path | str | BinaryIO, *, calibration: Calibration, info: BundleInfo, graph: bytes | None = None
) -> None:
    """Writes the bundle zip (one top folder, `info.name`) to a path or a binary file object."""
    files = bundle_files(model, calibration=calibration, info=info, graph=graph)
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(f"{info.name}/{name}", data)


def bundle_bytes(model, *, calibration: Calibration, info: BundleInfo, graph: bytes | None = None) -> bytes:
    buffer = io.BytesIO()
    bundle_write(model, buffer, calibration=calibration, info=info, graph=graph)
    return buffer.getvalue()
