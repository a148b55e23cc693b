"""What the API answers: plain dicts built from rows, one function per shape. The OpenAPI schema describes these
same shapes (webapp/api/openapi.py); a test keeps the two in step."""

from __future__ import annotations

import base64

from django.core.files.storage import default_storage
from django.http import HttpRequest
from django.urls import reverse

from webapp.api.models import BatchJob, JobStatus
from webapp.dashboard.selectors import version_metrics
from webapp.inference.detections import stored_detections
from webapp.inference.models import Prediction
from webapp.projects.models import Project
from webapp.training.models import ModelVersion

# The metrics a program needs to judge a version; the full set is on the version's page.
METRIC_SUMMARY_KEYS = ("image_auroc", "image_ap", "f1", "precision", "recall", "accuracy", "pixel_auroc", "aupro")


def _url(request: HttpRequest, name: str, **kwargs) -> str:
    return request.build_absolute_uri(reverse(name, kwargs=kwargs))


def project_payload(request: HttpRequest, project: Project, active: ModelVersion | None) -> dict:
    return {
        "id": str(project.public_id),
        "name": project.name,
        "active_version": active.number if active else None,
        "versions_url": _url(request, "api_versions", project_id=project.public_id),
        "predict_url": _url(request, "api_predict", project_id=project.public_id),
    }


def version_payload(version: ModelVersion) -> dict:
    """Every figure that depends on the threshold is computed at `threshold`, the version's operating one."""
    metrics = version_metrics(version=version)
    return {
        "id": str(version.public_id),
        "number": version.number,
        "family": version.family,
        "is_active": version.is_active,
        "threshold": version.threshold,
        "metrics": {key: metrics.get(key) for key in METRIC_SUMMARY_KEYS},
        "created_at": version.created_at.isoformat(),
    }


def _png_base64(name: str) -> str:
    with default_storage.open(name, "rb") as handle:
        return base64.b64encode(handle.read()).decode("ascii")


def prediction_payload(
    request: HttpRequest, prediction: Prediction, *, boxes: list[dict], threshold: float, include_maps: bool
) -> dict:
    """`threshold` is the raw threshold the call was made with (the version's at prediction time)."""
    version = prediction.model_version
    project_id = version.project.public_id
    payload = {
        "prediction_id": prediction.id,
        "name": prediction.input_name,
        "is_anomalous": prediction.is_anomalous,
        "score": prediction.raw_score,
        "normalised_score": prediction.normalised_score,
        "threshold": threshold,
        "model_version": {"id": str(version.public_id), "number": version.number, "family": version.family},
        "anomaly_map": _url(request, "api_prediction_map", project_id=project_id, prediction_id=prediction.id),
        "mask": _url(request, "api_prediction_mask", project_id=project_id, prediction_id=prediction.id),
        "boxes": boxes,
        "detections": stored_detections(prediction)["detections"],
        "review": hasattr(prediction, "review_item"),  # the project's review policy sent it to people
    }
    if include_maps:
        payload["anomaly_map_png_base64"] = _png_base64(prediction.anomaly_map.name)
        payload["mask_png_base64"] = _png_base64(prediction.predicted_mask.name)
    return payload


def job_payload(request: HttpRequest, job: BatchJob, *, include_maps: bool) -> dict:
    finished = job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)
    payload = {
        "id": str(job.public_id),
        "status": job.status,
        "total": job.total,
        "done": job.done,
        "progress": round(job.progress, 4),
        "error": job.error,
        "created_at": job.created_at.isoformat(),
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "url": _url(request, "api_batch_detail", project_id=job.project.public_id, job_id=job.public_id),
        "results": None,
    }
    if finished:
        threshold = job.threshold if job.threshold is not None else job.model_version.threshold
        results = []
        for item in job.items.select_related("prediction__model_version__project"):
            entry = {"position": item.position, "name": item.input_name, "error": item.error or None}
            if item.prediction is not None:
                entry["prediction"] = prediction_payload(
                    request, item.prediction, boxes=item.boxes, threshold=threshold, include_maps=include_maps
                )
            else:
                entry["prediction"] = None
            results.append(entry)
        payload["results"] = results
    return payload
