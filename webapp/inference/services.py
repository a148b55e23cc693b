"""Running a model version on new images: trial detection, the HTTP API and batch jobs all come through here.

The version's operating threshold (a user's choice, else the calibrated one) decides the call, and the normalised
score maps that threshold to 0.5, so "confidence" reads the same for every family and after every threshold move.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from scipy import ndimage

from ml.registry import load_model
from ml.thresholds import Calibration
from webapp.images.intake.decoding import open_checked, to_display_rgb
from webapp.images.models import Image
from webapp.projects.models import Project
from webapp.review.services import prediction_route_for_review
from webapp.training.artifacts import artifact_local_dir
from webapp.training.evaluation import predicted_mask, prediction_store
from webapp.training.models import ModelVersion, Prediction

NO_ACTIVE_MODEL = "This project has no trained model yet: train one first."
MODEL_CACHE_SIZE = 2

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
        model = load_model(artifact_local_dir(version))
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
    return ModelVersion.objects.filter(project=project, is_active=True).first()


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
    *, version: ModelVersion, predictions: list, purpose: str, images: list[Image | None] | None, **fields
) -> list[InferenceResult]:
    calibration = version_calibration(version)
    images = images or [None] * len(predictions)
    results = []
    for image, prediction in zip(images, predictions, strict=True):
        row = prediction_store(
            version=version, image=image, prediction=prediction, calibration=calibration, purpose=purpose, **fields
        )
        boxes = mask_boxes(predicted_mask(prediction, calibration.threshold))
        # The one place trial, batch and API predictions pass through, so the review policy is applied here.
        review = prediction_route_for_review(prediction=row) is not None
        results.append(InferenceResult(prediction=row, boxes=boxes, review=review))
    return results


def predict_bytes(*, version: ModelVersion, data: bytes, purpose: str, name: str = "") -> InferenceResult:
    """One uploaded image, not (yet) part of the dataset: kept beside its prediction, so a person can review it
    or add it to the dataset later. Raises RejectedFile for unusable input."""
    info, picture = open_checked(
        data, max_pixels=settings.KENSA_MAX_IMAGE_PIXELS, max_bytes=settings.KENSA_MAX_IMAGE_BYTES
    )
    predictions = model_for_version(version).predict([np.asarray(to_display_rgb(picture))])
    stored = _input_store(version=version, data=data, extension=info.extension)
    return _results_store(
        version=version, predictions=predictions, purpose=purpose, images=None, input_file=stored, input_name=name[:255]
    )[0]


def _input_store(*, version: ModelVersion, data: bytes, extension: str) -> str:
    """Keeps the uploaded bytes under the version, named by their SHA-256. A name already there holds these very
    bytes (a camera sending the same part again), so it is reused rather than deleted and written again."""
    name = f"{version.artifact_prefix}/inputs/{hashlib.sha256(data).hexdigest()}{extension}"
    return name if default_storage.exists(name) else default_storage.save(name, ContentFile(data))
