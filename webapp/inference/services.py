"""Running a model version on new images: trial detection, the HTTP API and batch jobs all come through here.

The version's operating threshold (a user's choice, else the calibrated one) decides the call, and the normalised
score maps that threshold to 0.5, so "confidence" reads the same for every family and after every threshold move.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from scipy import ndimage

from ml.registry import load_model
from ml.thresholds import Calibration
from webapp.images.intake.decoding import open_checked_display
from webapp.images.models import Image
from webapp.inference.models import Prediction
from webapp.projects.models import Project
from webapp.review.services import prediction_route_for_review

if TYPE_CHECKING:  # type hints only: inference does not import training at run time (tests/webapp/test_layering.py)
    from webapp.training.models import ModelVersion
from webapp.inference.model_files import artifact_local_dir
from webapp.inference.predictions import predicted_mask, prediction_store

NO_ACTIVE_MODEL = "This project has no trained model yet: train one first."
MODEL_CACHE_SIZE = 2
# An uploaded image is shrunk to this longer side before it becomes 8-bit RGB for the model: every family works at
# 512 px or less (the native U-Net at most 1024), and a full-size 8000 x 8000 input with its full-size float map
# took 2.5 GB per call. Maps and masks of such inputs are stored at this size; boxes are in the input's pixels.
PREDICT_MAX_SIDE = 2048

_models: OrderedDict[str, object] = OrderedDict()
_models_lock = threading.Lock()
_load_lock = threading.Lock()


def version_calibration(version: ModelVersion) -> Calibration:
    """The calibration in force: the calibrated scale with the operating threshold."""
    return Calibration(threshold=version.threshold, scale=float(version.calibration["scale"]))


def model_for_version(version: ModelVersion):
    """The loaded model, cached per process (a few versions at most: each can hold hundreds of MB). Loads run one
    at a time: the first requests after a start arrive together (gunicorn threads), and each loading its own copy
    would fetch the same files into the same cache folder at once."""
    key = str(version.public_id)
    cached = _cached_model(key)
    if cached is not None:
        return cached
    with _load_lock:
        cached = _cached_model(key)
        if cached is not None:
            return cached
        # CPU unless told (KENSA_PREDICT_DEVICE), whatever device it trained on: this runs beside training.
        model = load_model(artifact_local_dir(version), device=settings.KENSA_PREDICT_DEVICE)
        with _models_lock:
            _models[key] = model
            while len(_models) > MODEL_CACHE_SIZE:
                _models.popitem(last=False)
    return model


def _cached_model(key: str):
    with _models_lock:
        if key in _models:
            _models.move_to_end(key)
            return _models[key]
    return None


def active_version(*, project: Project) -> ModelVersion | None:
    return project.model_versions.filter(is_active=True).first()


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int  # exclusive
    y1: int  # exclusive
    area: int  # defect pixels in the region


def mask_boxes(mask: np.ndarray, *, min_area: int = 4) -> list[Box]:
    """One box per connected region of the mask (8-connectivity), largest first; specks below min_area dropped."""
    labelled, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    boxes = []
    for index, region in enumerate(ndimage.find_objects(labelled), start=1):
        if region is None:
            continue
        area = int((labelled[region] == index).sum())
        if area >= min_area:
            rows, cols = region
            boxes.append(Box(x0=cols.start, y0=rows.start, x1=cols.stop, y1=rows.stop, area=area))
    return sorted(boxes, key=lambda b: -b.area)


def boxes_scaled(boxes: list[Box], *, from_shape: tuple[int, int], to_size: tuple[int, int]) -> list[Box]:
    """Boxes found on an (h, w) = `from_shape` map, in the pixels of the (width, height) = `to_size` image it was
    shrunk from; each still covers its whole region."""
    sx, sy = to_size[0] / from_shape[1], to_size[1] / from_shape[0]
    if (sx, sy) == (1, 1):
        return boxes
    return [
        Box(
            x0=math.floor(b.x0 * sx),
            y0=math.floor(b.y0 * sy),
            x1=min(to_size[0], math.ceil(b.x1 * sx)),
            y1=min(to_size[1], math.ceil(b.y1 * sy)),
            area=round(b.area * sx * sy),
        )
        for b in boxes
    ]


@dataclass(frozen=True)
class InferenceResult:
    prediction: Prediction
    boxes: list[Box]
    review: bool = False  # sent to people by the project's review policy


def predict_arrays(
    *, version: ModelVersion, arrays: list[np.ndarray], purpose: str, images: list[Image | None] | None = None
) -> list[InferenceResult]:
    """Runs the version on decoded images and stores one Prediction (with map and mask PNGs) per image."""
    predictions = model_for_version(version).predict(arrays)
    return _results_store(version=version, predictions=predictions, purpose=purpose, images=images)


def _results_store(
    *,
    version: ModelVersion,
    predictions: list,
    purpose: str,
    images: list[Image | None] | None,
    input_size: tuple[int, int] | None = None,
    **fields,
) -> list[InferenceResult]:
    """`input_size` (width, height): the size of the image the model saw a shrunk copy of, for its boxes."""
    calibration = version_calibration(version)
    images = images or [None] * len(predictions)
    results = []
    for image, prediction in zip(images, predictions, strict=True):
        row = prediction_store(
            version=version,
            image=image,
            prediction=prediction,
            calibration=calibration,
            purpose=purpose,
            input_size=input_size,
            **fields,
        )
        boxes = mask_boxes(predicted_mask(prediction, calibration.threshold))
        if input_size is not None:
            boxes = boxes_scaled(boxes, from_shape=prediction.anomaly_map.shape[:2], to_size=input_size)
        # The one place trial, batch and API predictions pass through, so the review policy is applied here.
        review = prediction_route_for_review(prediction=row) is not None
        results.append(InferenceResult(prediction=row, boxes=boxes, review=review))
    return results


def predict_bytes(*, version: ModelVersion, data: bytes, purpose: str, name: str = "") -> InferenceResult:
    """One uploaded image, not (yet) part of the dataset: kept beside its prediction, so a person can review it
    or add it to the dataset later. Raises RejectedFile for unusable input."""
    info, picture = open_checked_display(
        data,
        max_side=PREDICT_MAX_SIDE,
        max_pixels=settings.KENSA_MAX_IMAGE_PIXELS,
        max_bytes=settings.KENSA_MAX_IMAGE_BYTES,
        max_decoded_bytes=settings.KENSA_MAX_DECODED_BYTES,
    )
    predictions = model_for_version(version).predict([np.asarray(picture)])
    del picture
    stored = _input_store(version=version, data=data, extension=info.extension)
    result = _results_store(
        version=version,
        predictions=predictions,
        purpose=purpose,
        images=None,
        input_size=(info.width, info.height),
        input_file=stored,
        input_name=name[:255],
    )[0]
    _input_keep(name=stored, data=data)
    return result


def _input_store(*, version: ModelVersion, data: bytes, extension: str) -> str:
    """Keeps the uploaded bytes under the version, named by their SHA-256. A name already there holds these very
    bytes (a camera sending the same part again), so it is reused rather than deleted and written again."""
    name = f"{version.artifact_prefix}/inputs/{hashlib.sha256(data).hexdigest()}{extension}"
    return name if default_storage.exists(name) else default_storage.save(name, ContentFile(data))


def _input_keep(*, name: str, data: bytes) -> None:
    """An input reused by name may have been deleted by retention (an older row with the same bytes expiring)
    between the check above and this row's insert: checked again now that the row points at it, and written back.
    Retention checks for such rows after it deletes (webapp/inference/retention.py), so one of the two sees it."""
    if not default_storage.exists(name):
        saved = default_storage.save(name, ContentFile(data))
        if saved != name:  # another request wrote it back first: the name holds these bytes again
            default_storage.delete(saved)
