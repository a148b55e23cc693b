"""Reads for the model dashboard: a version's scored test images, the results gallery, trial predictions."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from django.core.paginator import Page, Paginator
from django.db.models import Count, Prefetch, Q, QuerySet, Sum

from webapp.dashboard.operating_points import OperatingPoint, ScoredImages, operating_point
from webapp.images.models import Annotation, Image, Label
from webapp.inference.models import Prediction, Purpose
from webapp.projects.models import Project
from webapp.training.models import ModelVersion

GALLERY_PAGE_SIZE = 48
TRIAL_PAGE_SIZE = 24
SCORED_CACHE_SIZE = 16

_scored_cache: OrderedDict[tuple, ScoredImages] = OrderedDict()
_scored_cache_lock = threading.Lock()


class Outcome:
    """Where a test image falls at a threshold: truth (defect or good) against the call."""

    TP = "tp"
    FP = "fp"
    FN = "fn"
    TN = "tn"
    TITLES = {TP: "Caught defects (TP)", FP: "False alarms (FP)", FN: "Escapes (FN)", TN: "Passed good (TN)"}

    @staticmethod
    def of(*, is_defect: bool, score: float, threshold: float) -> str:
        called = score >= threshold
        if is_defect:
            return Outcome.TP if called else Outcome.FN
        return Outcome.FP if called else Outcome.TN


def _test_predictions(version: ModelVersion) -> QuerySet[Prediction]:
    """Test predictions of images that still carry a good / defect label (a relabelled image counts as it is now)."""
    return Prediction.objects.filter(
        model_version=version, purpose=Purpose.TEST, image__label__in=(Label.GOOD, Label.DEFECT)
    )


def _scored_fingerprint(version: ModelVersion) -> tuple:
    """Changes whenever the scored set could: test predictions are written once, an image's label change bumps
    its annotation_version, and a deleted image takes its prediction with it (the count drops)."""
    totals = Prediction.objects.filter(model_version=version, purpose=Purpose.TEST).aggregate(
        n=Count("id"), labels=Sum("image__annotation_version")
    )
    return (version.public_id, totals["n"], totals["labels"])  # a UUID: row ids can be reused


def _scored_images_load(version: ModelVersion) -> ScoredImages:
    rows = list(_test_predictions(version).values_list("raw_score", "image__label"))
    if not rows:
        return ScoredImages(scores=np.zeros(0), labels=np.zeros(0, dtype=bool))
    scores, labels = zip(*rows, strict=True)
    return ScoredImages(
        scores=np.fromiter(scores, dtype=np.float64, count=len(rows)),
        labels=np.fromiter((label == Label.DEFECT for label in labels), dtype=bool, count=len(rows)),
    )


def scored_images(*, version: ModelVersion) -> ScoredImages:
    """Scores and truths of the version's test split (the slider's hot path): one aggregate query to check the
    per-process cache, and on a miss one values_list query straight into numpy."""
    key = _scored_fingerprint(version)
    with _scored_cache_lock:
        if key in _scored_cache:
            _scored_cache.move_to_end(key)
            return _scored_cache[key]
    scored = _scored_images_load(version)
    with _scored_cache_lock:
        _scored_cache[key] = scored
        while len(_scored_cache) > SCORED_CACHE_SIZE:
            _scored_cache.popitem(last=False)
    return scored


@dataclass(frozen=True)
class GalleryItem:
    prediction: Prediction
    outcome: str
    defect_classes: list[str]


def gallery_page(
    *, version: ModelVersion, threshold: float, outcome: str = "", defect_class: str = "", page: str | int = 1
) -> Page:
    """Test predictions, highest score first, optionally only one outcome at `threshold` or one defect class.
    The page's object_list holds GalleryItems."""
    predictions = _test_predictions(version)
    is_defect, called = Q(image__label=Label.DEFECT), Q(raw_score__gte=threshold)
    by_outcome = {
        Outcome.TP: is_defect & called,
        Outcome.FP: ~is_defect & called,
        Outcome.FN: is_defect & ~called,
        Outcome.TN: ~is_defect & ~called,
    }
    if outcome in by_outcome:
        predictions = predictions.filter(by_outcome[outcome])
    if defect_class.isdigit():
        predictions = predictions.filter(image__annotations__defect_class_id=int(defect_class)).distinct()
    predictions = predictions.select_related("image").prefetch_related(
        Prefetch("image__annotations", queryset=Annotation.objects.select_related("defect_class"))
    )
    result = Paginator(predictions.order_by("-raw_score", "id"), GALLERY_PAGE_SIZE).get_page(page)
    result.object_list = [
        GalleryItem(
            prediction=p,
            outcome=Outcome.of(is_defect=p.image.label == Label.DEFECT, score=p.raw_score, threshold=threshold),
            defect_classes=sorted(a.defect_class.name for a in p.image.annotations.all()),
        )
        for p in result.object_list
    ]
    return result


def trial_predictions(*, project: Project, page: str | int = 1) -> Page:
    """The project's trial detections, newest first."""
    rows = (
        Prediction.objects.filter(model_version__project=project, purpose=Purpose.TRIAL)
        .select_related("model_version", "image", "review_item")
        .order_by("-created_at", "-id")
    )
    return Paginator(rows, TRIAL_PAGE_SIZE).get_page(page)


def latest_prediction_of(*, image: Image) -> Prediction | None:
    """The newest prediction made on a dataset image (a test run, the API, a batch, or a trial added to it)."""
    return Prediction.objects.filter(image=image).select_related("model_version").order_by("-created_at", "-id").first()


def prediction_in_project(*, project: Project, prediction_id: int) -> Prediction | None:
    return (
        Prediction.objects.select_related("model_version", "image")
        .filter(id=prediction_id, model_version__project=project)
        .first()
    )


def versions_of(*, project: Project) -> QuerySet[ModelVersion]:
    return ModelVersion.objects.filter(project=project).select_related("run").order_by("-number")


def operating_point_metrics(point: OperatingPoint) -> dict:
    """The figures of a version's metrics that depend on the threshold, as stored in ModelVersion.metrics."""
    c = point.confusion
    return {
        "threshold": point.threshold,
        "precision": point.precision,
        "recall": point.recall,
        "f1": point.f1,
        "accuracy": point.accuracy,
        "confusion": {"tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn},
    }


def version_metrics(*, version: ModelVersion) -> dict:
    """The version's metrics with every figure that depends on the threshold computed at its operating threshold
    from its stored test predictions (as the dashboard's panel shows them there). Without predictions, figures
    stored at another threshold are left out rather than shown beside this one."""
    metrics = dict(version.metrics)
    scored = scored_images(version=version)
    if len(scored):
        metrics.update(operating_point_metrics(operating_point(scored, version.threshold)))
    elif metrics.get("threshold") != version.threshold:
        metrics.update(dict.fromkeys(("precision", "recall", "f1", "accuracy", "confusion"), None))
        metrics["threshold"] = version.threshold
    return metrics


def dashboard_version(*, project: Project) -> ModelVersion | None:
    """The version the Model tab opens on: the active one, else the newest."""
    return versions_of(project=project).order_by("-is_active", "-number").first()
