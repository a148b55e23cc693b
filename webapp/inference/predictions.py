"""Storing a model's output on one image: the Prediction row with its anomaly map and mask PNGs. Every prediction
goes through here (a version's test-split evaluation in webapp.training, trials, the API, batches, stations)."""

from __future__ import annotations

import io
import json
import uuid
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from ml.thresholds import Calibration
from ml.types import Prediction as MlPrediction
from webapp.inference.detections import detections_of, mask_png_with_detections
from webapp.inference.models import Prediction
from webapp.storage import stored_file_write

if TYPE_CHECKING:  # type hints only: inference does not import training at run time (tests/webapp/test_layering.py)
    from webapp.training.models import ModelVersion

# The stored map's scale: byte = 128 + floor(MAP_GAIN * asinh(z)), z = (raw - threshold) / scale. asinh is linear
# within a scale of the threshold and logarithmic beyond, so the bytes below 128 still tell a normal area (z = -30)
# from a missed defect's spot (z = -1); the logistic score kept below 0.01 for every pixel 5 scales under the
# threshold, and the heatmap of every image called good came out blank. z = +-10,000 reaches the ends.
MAP_GAIN = 127 / np.arcsinh(1e4)
MAP_ENCODING = "asinh-z"


def anomaly_map_png(anomaly_map: np.ndarray, calibration: Calibration) -> bytes:
    """The map as an 8-bit PNG of threshold-relative scores (128 = the threshold: a pixel is at or above it exactly
    when its byte is), with the encoding and calibration in a text chunk so a reader can turn bytes back into raw
    scores: raw = threshold + scale * sinh((byte - 128 + 0.5) / gain)."""
    z = (anomaly_map.astype(np.float64) - calibration.threshold) / calibration.scale
    values = np.clip(128 + np.floor(MAP_GAIN * np.arcsinh(z)), 0, 255).astype(np.uint8)
    info = PngInfo()
    info.add_text("kensa-map", json.dumps({"encoding": MAP_ENCODING, "gain": MAP_GAIN, **calibration.to_dict()}))
    buffer = io.BytesIO()
    PILImage.fromarray(values, "L").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def predicted_mask(prediction: MlPrediction, threshold: float) -> np.ndarray:
    """The family's own mask (segmenters) or the pixels whose anomaly reaches the image threshold."""
    if prediction.mask is not None:
        return np.asarray(prediction.mask, dtype=bool)
    return np.asarray(prediction.anomaly_map) >= threshold


def prediction_store(
    *,
    version: ModelVersion,
    image,
    prediction: MlPrediction,
    calibration: Calibration,
    purpose: str,
    input_size: tuple[int, int] | None = None,
    **fields,
) -> Prediction:
    """Stores one prediction row with its map and mask PNGs under the version's run folder; `fields` are more
    columns of the row (the kept input of an upload). The mask PNG carries the detections (webapp.inference.
    detections), in pixels of the image as sent: `input_size` (width, height) when the model saw a shrunk copy."""
    threshold = calibration.threshold
    base = f"{version.artifact_prefix}/predictions/{purpose}/{image.sha256 if image else uuid.uuid4().hex}"
    map_name = stored_file_write(f"{base}_map.png", anomaly_map_png(prediction.anomaly_map, calibration))
    mask = predicted_mask(prediction, threshold)
    found = detections_of(prediction, mask, calibration, input_size=input_size)
    size = input_size or (mask.shape[1], mask.shape[0])
    mask_name = stored_file_write(f"{base}_mask.png", mask_png_with_detections(mask, found, size=size))
    return Prediction.objects.create(
        model_version=version,
        image=image,
        purpose=purpose,
        raw_score=float(prediction.score),
        normalised_score=float(calibration.normalise(prediction.score)),
        is_anomalous=bool(prediction.score >= threshold),
        anomaly_map=map_name,
        predicted_mask=mask_name,
        **fields,
    )
