"""Model versions with stored test predictions made directly, without training: exact scores for the dashboard's
tests and the 10,000-prediction set of the slider benchmark."""

from __future__ import annotations

import io
import uuid

import numpy as np
from PIL import Image as PILImage

from webapp.images.models import Annotation, Image, Label, Split
from webapp.inference.models import Prediction, Purpose
from webapp.projects.models import DefectClass, Project
from webapp.storage import stored_file_write
from webapp.training.models import ModelVersion


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array.astype(np.uint8), "L").save(buffer, format="PNG")
    return buffer.getvalue()


def scored_version_create(
    *,
    project: Project,
    scores: list[float] | np.ndarray,
    labels: list[bool] | np.ndarray,
    classes: list[str | None] | None = None,
    threshold: float = 0.5,
    scale: float = 0.1,
    number: int = 1,
    with_maps: bool = False,
    is_active: bool = False,
) -> ModelVersion:
    """A version whose test split holds one image per score (label True = defect, optional defect class name),
    each with a test prediction of that raw score; maps are written only when asked (they cost time)."""
    version = ModelVersion.objects.create(
        project=project,
        number=number,
        family="gaussian",
        artifact_prefix=f"projects/{project.public_id}/fake-v{number}",
        metrics={"image_auroc": 0.9, "image_ap": 0.8, "pixel_auroc": None, "aupro": None, "n_test": len(scores)},
        calibration={"threshold": threshold, "scale": scale},
        is_active=is_active,
    )
    classes = classes or [None] * len(scores)
    tag = uuid.uuid4().hex[:8]
    images = Image.objects.bulk_create(
        Image(
            project=project,
            sha256=f"{tag}{number:04d}{i:052d}",
            file=f"projects/{project.public_id}/images/fake-{tag}-{i}.png",
            original_name=f"part-{i:05d}.png",
            format="PNG",
            mode="RGB",
            width=16,
            height=16,
            size_bytes=100,
            label=Label.DEFECT if is_defect else Label.GOOD,
            split=Split.TEST,
        )
        for i, is_defect in enumerate(labels)
    )
    by_name: dict[str, DefectClass] = {}
    annotations = []
    for image, name in zip(images, classes, strict=True):
        if name:
            if name not in by_name:
                by_name[name], _ = DefectClass.objects.get_or_create(
                    project=project, name=name, defaults={"colour": "#ff0000"}
                )
            annotations.append(Annotation(image=image, defect_class=by_name[name]))
    Annotation.objects.bulk_create(annotations)
    rows = []
    for image, score in zip(images, scores, strict=True):
        heat = mask = ""
        if with_maps:
            value = np.full((16, 16), 60, np.uint8)
            value[4:10, 4:10] = 220
            heat = stored_file_write(f"{version.artifact_prefix}/p/{image.sha256}_map.png", _png(value))
            mask = stored_file_write(f"{version.artifact_prefix}/p/{image.sha256}_mask.png", _png((value > 128) * 255))
        rows.append(
            Prediction(
                model_version=version,
                image=image,
                purpose=Purpose.TEST,
                raw_score=float(score),
                normalised_score=float(1 / (1 + np.exp(-(score - threshold) / scale))),
                is_anomalous=bool(score >= threshold),
                anomaly_map=heat,
                predicted_mask=mask,
            )
        )
    Prediction.objects.bulk_create(rows, batch_size=2000)
    return version
