"""Writes from the model dashboard: the operating threshold, trial detection, and trial images into the dataset."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError

from webapp.dashboard.selectors import version_metrics
from webapp.images.intake.decoding import RejectedFile
from webapp.images.intake.ingest import (
    ADDED,
    DUPLICATE,
    IncomingFile,
    images_ingest,
    is_archive,
    upload_archive_open,
)
from webapp.images.intake.layout import PlannedImage
from webapp.images.models import Image, Label, Source
from webapp.inference.models import Prediction, Purpose
from webapp.inference.services import InferenceResult, predict_bytes
from webapp.projects.access import Action, project_for
from webapp.storage import stored_file_read
from webapp.training.models import ModelVersion

BAD_THRESHOLD = "The threshold must be a finite number."
TOO_MANY_TRIAL_FILES = "Try at most {limit} images at a time; this upload holds {count}."
NO_TRIAL_FILES = "Choose one or more images (or a zip of images) to try."
TRIAL_FILE_TOO_LARGE = "The file is {size:,} bytes, more than the limit of {limit:,} bytes."
BAD_TRIAL_LABEL = "Add it as good or defect."
NOT_A_TRIAL = "Only trial images can be added to the dataset from here."
ALREADY_ADDED = "This image is already in the dataset."
DUPLICATE_ADDED = "The same image was already in the dataset ({name}); its label was left as it was."
MAX_TRIAL_FILES = 50


def model_version_threshold_save(
    *, version: ModelVersion, threshold: float | None, user: AbstractBaseUser
) -> ModelVersion:
    """Makes `threshold` (raw score) the version's operating point for every later prediction; None goes back to
    the calibrated threshold. Needs the right to train: the threshold decides what the line rejects."""
    from webapp.audit.models import AuditAction
    from webapp.audit.services import audit_record

    project_for(user, version.project.public_id, Action.TRAIN)
    if threshold is not None and not math.isfinite(threshold):
        raise ValidationError(BAD_THRESHOLD)
    audit_record(
        project=version.project_id,
        user=user,
        action=AuditAction.THRESHOLD,
        target=f"version {version.number}",
        before=_threshold_state(version.operating_threshold, version),
        after=_threshold_state(threshold, version),
    )
    version.operating_threshold = threshold
    # The stored figures that depend on the threshold follow it, so whatever reads them (the overview, the API,
    # an exported bundle) never shows an F1 measured at another threshold beside this one.
    version.metrics = version_metrics(version=version)
    ModelVersion.objects.filter(id=version.id).update(operating_threshold=threshold, metrics=version.metrics)
    return version


def _threshold_state(chosen: float | None, version: ModelVersion) -> dict:
    """The raw threshold in force and where it comes from, for the audit log."""
    if chosen is not None:
        return {"threshold": chosen, "from": "chosen"}
    return {"threshold": version.calibration.get("threshold"), "from": "calibration"}


@dataclass(frozen=True)
class TrialResult:
    name: str
    result: InferenceResult | None = None
    problem: str = ""  # why the file was not tried


def _trial_files(uploads) -> list[tuple[str, object]]:
    """(name, bytes or RejectedFile) per image, zips opened member by member."""
    files: list[tuple[str, object]] = []
    for upload in uploads:
        if not is_archive(upload.name):
            if upload.size is not None and upload.size > settings.KENSA_MAX_IMAGE_BYTES:
                problem = TRIAL_FILE_TOO_LARGE.format(size=upload.size, limit=settings.KENSA_MAX_IMAGE_BYTES)
                files.append((upload.name, RejectedFile(problem)))
            else:
                upload.seek(0)
                files.append((upload.name, upload.read()))
            continue
        try:
            archive = upload_archive_open(upload, max_members=MAX_TRIAL_FILES)
        except RejectedFile as exc:
            files.append((upload.name, exc))
            continue
        try:
            for member in archive.members:
                if member.problem:
                    files.append((f"{upload.name}:{member.path}", RejectedFile(member.problem)))
                    continue
                try:
                    files.append((f"{upload.name}:{member.path}", archive.read(member.path)))
                except RejectedFile as exc:
                    files.append((f"{upload.name}:{member.path}", exc))
        finally:
            archive.close()
    return files


def trial_run(*, version: ModelVersion, uploads) -> list[TrialResult]:
    """Runs the version on uploaded images and zips of images; every file gets a result or the reason it was
    not tried. The predictions are stored (purpose trial) with their inputs, so any can be added to the dataset."""
    files = _trial_files(uploads)
    if not files:
        raise ValidationError(NO_TRIAL_FILES)
    if len(files) > MAX_TRIAL_FILES:
        raise ValidationError(TOO_MANY_TRIAL_FILES.format(limit=MAX_TRIAL_FILES, count=len(files)))
    results = []
    for name, data in files:
        if isinstance(data, RejectedFile):
            results.append(TrialResult(name=name, problem=str(data)))
            continue
        try:
            results.append(
                TrialResult(
                    name=name, result=predict_bytes(version=version, data=data, purpose=Purpose.TRIAL, name=name)
                )
            )
        except RejectedFile as exc:
            results.append(TrialResult(name=name, problem=str(exc)))
    return results


def trial_prediction_add_to_dataset(*, prediction: Prediction, label: str, user: AbstractBaseUser) -> tuple[Image, str]:
    """Stores a trial image in its project's dataset with the label a person confirmed (split chosen by Kensa)
    and links the prediction to it. Returns the image and a note ('' when it was added as asked)."""
    project = prediction.model_version.project
    project_for(user, project.public_id, Action.EDIT_DATA)
    if label not in (Label.GOOD, Label.DEFECT):
        raise ValidationError(BAD_TRIAL_LABEL)
    if prediction.purpose != Purpose.TRIAL or not prediction.input_file:
        raise ValidationError(NOT_A_TRIAL)
    if prediction.image_id is not None:
        raise ValidationError(ALREADY_ADDED)
    # A zip member's name is "archive.zip:folder/part.png": the dataset keeps the file's own name.
    name = PurePosixPath(prediction.input_name.rsplit(":", 1)[-1] or prediction.input_file.name).name
    incoming = IncomingFile(
        name=name,
        read=lambda: stored_file_read(prediction.input_file.name),
        planned=PlannedImage(path=name, label=label),
    )
    report = images_ingest(project=project, user=user, files=[incoming], source=Source.UPLOAD)
    outcome = report.results[0]
    if outcome.status == ADDED:
        image, note = outcome.image, ""
    elif outcome.status == DUPLICATE and outcome.image is not None:
        image, note = outcome.image, DUPLICATE_ADDED.format(name=outcome.image.original_name)
    else:
        raise ValidationError(outcome.message or NOT_A_TRIAL)
    Prediction.objects.filter(id=prediction.id).update(image=image)
    prediction.image = image
    return image, note
