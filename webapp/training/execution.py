"""What a worker does with a claimed training run: fit, calibrate on validation, evaluate on test, store.

Files are written under the run's own storage folder and only then pointed at by a model version, so a run that
fails, is cancelled or is killed leaves nothing behind once its folder is discarded.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from pathlib import Path

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections, connection, transaction

from ml.calibration import calibration_scores
from ml.devices import device_description, resolve_device
from ml.registry import create_model
from ml.thresholds import calibrate
from ml.training import GpuOutOfMemory
from webapp.images.models import Image, Label, Split
from webapp.storage import stored_folder_delete
from webapp.training import services
from webapp.training.artifacts import artifact_prefix, artifact_upload
from webapp.training.candidates import COMPARE_FAMILY
from webapp.training.comparison import comparison_train_and_evaluate
from webapp.training.datasets import ProjectSamples, holdout_size
from webapp.training.eta import EVALUATION_STAGES, PaceEstimate, fit_stages, stage_fraction
from webapp.training.evaluation import evaluate_and_store
from webapp.training.models import ModelVersion, RunStatus, TrainingRun
from webapp.training.settings_plan import chosen_settings_of

log = logging.getLogger(__name__)

FIT_SHARE = 80.0  # percent of the bar that fitting takes; evaluation takes the rest


NO_DEVICE = "This worker cannot train on its device: {problem}. Its administrator must fix KENSA_DEVICE or the GPU."
# Families that set their threshold from their own training images when validation is empty
# (ml.calibration.calibration_scores: each good training image scored without its own patches in the bank).
SELF_CALIBRATING = frozenset({"patchcore"})
SELF_CALIBRATION_QUANTILE = 0.95  # see self_calibration_scores
SELF_CALIBRATED = (
    "The validation split is empty: the threshold was set from the training images, each scored against a model "
    "without its own patches, so every good image still trained the model."
)
BAD_SETTINGS = "The {family} cannot train with these settings: {problem}. Choose another image size or family."


class RunCancelled(Exception):
    """Raised from the progress callback when a person cancelled the run."""


class UserFacingError(Exception):
    """A failure whose message a person can act on (shown on the run page as is)."""


class Progress:
    """Turns ml progress callbacks into throttled row updates with an ETA; raises RunCancelled on cancel.

    One per run: `part(start, end, stages)` gives the callback for one span of the bar, whose stages share it
    (webapp.training.eta), so the bar never moves back and the pace is measured across the whole run."""

    def __init__(self, run_id: int, *, clock=time.monotonic):
        self.run_id = run_id
        self.clock = clock
        self.pace = PaceEstimate()
        self.percent = 0.0
        self.last_write = -math.inf
        self.last_stage = ""

    def part(self, start: float, end: float, stages: dict[str, float] | None = None):
        def report(stage: str, fraction: float, message: str) -> None:
            done = stage_fraction(stages, stage, fraction) if stages else max(0.0, min(1.0, fraction))
            if done is not None:
                self.percent = max(self.percent, start + (end - start) * done)
            now = self.clock()
            eta = self.pace.observe(now, self.percent, stage)
            # Throttled, except a new stage's first report: a long step without reports of its own (the training
            # images' self-calibration scores) would otherwise keep the last stage's message for minutes.
            if now - self.last_write < 1.0 and fraction < 1.0 and stage == self.last_stage:
                return
            self.last_write, self.last_stage = now, stage
            if not services.training_run_progress(
                run_id=self.run_id, stage=stage, percent=self.percent, message=message, eta_seconds=eta
            ):
                raise RunCancelled()

        return report


class Heartbeat:
    """Beats on the run's row from a thread while long steps run without progress callbacks."""

    def __init__(self, run_id: int):
        self.run_id = run_id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(services.HEARTBEAT_SECONDS):
                services.training_run_heartbeat(run_id=self.run_id)
        finally:
            connection.close()  # this thread's own database connection

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def training_data(run: TrainingRun) -> tuple[ProjectSamples, ProjectSamples, ProjectSamples, str]:
    """(fit, validation, test) samples and a note for the run page about how validation was made."""
    labelled = Image.objects.filter(project=run.project).exclude(label=Label.UNLABELLED).order_by("sha256")
    train = list(labelled.filter(split=Split.TRAIN))
    validation = list(labelled.filter(split=Split.VALIDATION))
    test = list(labelled.filter(split=Split.TEST))
    if run.family in ("unet", COMPARE_FAMILY):  # families that learn from drawn defects get the outlined ones
        fit = [i for i in train if i.label == Label.GOOD]
        defects = ProjectSamples([i for i in train if i.label == Label.DEFECT])
        fit += [defects.images[k] for k in range(len(defects)) if defects.has_mask(k)]
    else:
        fit = [i for i in train if i.label == Label.GOOD]
    note = ""
    if not validation and _self_calibrates(run):
        # PatchCore sets its threshold from its training images, each scored without its own patches: an empty
        # validation split no longer costs it training images (it cost screw 0.975 -> 0.933 image AUROC).
        return ProjectSamples(fit), ProjectSamples(validation), ProjectSamples(test), SELF_CALIBRATED
    if not validation:
        # Ordered by SHA-256, so the held-out images are a fixed, unbiased pick.
        goods = [i for i in fit if i.label == Label.GOOD]
        if count := holdout_size(len(goods)):
            validation = goods[-count:]
            held = {i.id for i in validation}
            fit = [i for i in fit if i.id not in held]
            note = f"The validation split is empty: {count} good training images were held out to set the threshold."
    if not validation:
        raise UserFacingError("Put some labelled images in the validation split (or add more good training images).")
    if not test:
        raise UserFacingError("Label at least one image in the test split, so the model can be measured.")
    return ProjectSamples(fit), ProjectSamples(validation), ProjectSamples(test), note


def self_calibration_scores(scores: np.ndarray) -> np.ndarray:
    """The scores the threshold is set from: all but the highest (1 - SELF_CALIBRATION_QUANTILE) share. The
    threshold rule (highest good score plus a margin) was made for validation splits of about 20 good images, whose
    highest score sits near the 95th percentile of good scores; the highest of hundreds of training images is a far
    rarer part (on MVTec screw it scored above every one of the 103 test defects: recall 0)."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))
    keep = max(1, min(len(ordered), math.ceil(SELF_CALIBRATION_QUANTILE * len(ordered))))
    return ordered[:keep]


def _self_calibrates(run: TrainingRun) -> bool:
    # ml.calibration scores an untiled PatchCore with the max image score (what every default run is).
    untiled = not run.config.get("tile_working_size")
    return run.family in SELF_CALIBRATING and untiled and run.config.get("score", "max") == "max"


def training_run_execute(*, run_id: int) -> None:
    """Runs a claimed run to its end state. Never raises for expected failures: they end the run instead."""
    run = TrainingRun.objects.select_related("project").get(id=run_id)
    try:
        with Heartbeat(run_id):
            version = _train_and_evaluate(run, run_workdir(run))
    except RunCancelled:
        run_files_discard(run)
        services.training_run_finish(run_id=run_id, status=RunStatus.CANCELLED, message="Cancelled")
        return
    except SoftTimeLimitExceeded:
        run_files_discard(run)
        services.training_run_finish(
            run_id=run_id, status=RunStatus.FAILED, error="Training took longer than the time limit and was stopped."
        )
        return
    except UserFacingError as exc:
        run_files_discard(run)
        services.training_run_finish(run_id=run_id, status=RunStatus.FAILED, error=str(exc))
        return
    except Exception:
        log.exception("training run %s failed", run.public_id)
        run_files_discard(run)
        close_old_connections()
        services.training_run_finish(
            run_id=run_id,
            status=RunStatus.FAILED,
            error="Training failed because of an internal error. The details are in the worker's log.",
        )
        return
    shutil.rmtree(Path(settings.DATA_DIR) / "work" / f"run-{run.public_id}", ignore_errors=True)
    if not services.training_run_finish(
        run_id=run_id, status=RunStatus.SUCCEEDED, message=f"Model version {version.number} is ready"
    ):
        # Reaped or cancelled at the very last moment: the version must not outlive its run.
        ModelVersion.objects.filter(id=version.id).delete()
        run_files_discard(run)
        return
    from webapp.robustness.services import robustness_after_training

    robustness_after_training(version=version)  # issue 19: small test splits are measured at once


def _train_and_evaluate(run: TrainingRun, workdir: Path) -> ModelVersion:
    fit, validation, test, note = training_data(run)
    progress = Progress(run.id)
    progress.part(0, 1)("data", 1.0, note or f"{len(fit)} training images")
    try:
        resolve_device(settings.KENSA_DEVICE)
    except RuntimeError as exc:  # the worker checked it at start; a GPU can still vanish (driver reset)
        raise UserFacingError(NO_DEVICE.format(problem=exc)) from None
    if run.family == COMPARE_FAMILY:
        return comparison_train_and_evaluate(
            run, workdir, fit=fit, validation=validation, test=test, note=note, progress=progress
        )
    try:
        # The worker's device (KENSA_DEVICE), not the request's: a request trains on whichever worker takes it.
        # A run's stored config never chooses the device (a request from an older form may carry one).
        config = {key: value for key, value in run.config.items() if key != "device"}
        model = create_model(run.family, **config, device=settings.KENSA_DEVICE)
    except ValueError as exc:  # settings the family cannot use (the families check their own configuration)
        raise UserFacingError(BAD_SETTINGS.format(family=run.family, problem=exc)) from None
    device = device_description(model.device)
    TrainingRun.objects.filter(id=run.id).update(device=device[: TrainingRun._meta.get_field("device").max_length])
    try:
        model.fit(fit, progress=progress.part(1, FIT_SHARE, fit_stages(run.family, device=device)))
    except GpuOutOfMemory as exc:  # already retried at half the batch; its message says what a person can do
        raise UserFacingError(str(exc)) from None
    evaluation_progress = progress.part(FIT_SHARE, 99, EVALUATION_STAGES)

    extra: dict = {}
    if len(validation):
        val_predictions = model.predict([s.image for s in validation])
        calibration = calibrate(np.array([p.score for p in val_predictions]), validation.labels)
        evaluation_progress("validation", 0.1, f"Threshold set from {len(validation)} validation images")
    else:  # SELF_CALIBRATING: every good training image scored against the bank without its own patches
        evaluation_progress("validation", 0.0, f"Scoring the {len(fit)} training images without their own patches")
        scores = calibration_scores(model, fit)
        kept = self_calibration_scores(scores)
        calibration = calibrate(kept, np.zeros(len(kept), dtype=int))
        p50, p95, p99 = np.percentile(scores, [50, 95, 99])
        extra["self_calibration"] = {
            "n": len(scores), "p50": p50, "p95": p95, "p99": p99, "max": float(scores.max())
        }  # fmt: skip
        evaluation_progress("validation", 0.1, f"Threshold set from {len(scores)} training images")

    model_dir = workdir / "model"
    model.save(model_dir)
    prefix = artifact_prefix(run)
    files = artifact_upload(model_dir, prefix)
    with transaction.atomic():
        latest = ModelVersion.objects.filter(project=run.project).order_by("-number").first()
        version = ModelVersion.objects.create(
            project=run.project,
            run=run,
            number=latest.number + 1 if latest else 1,
            family=run.family,
            artifact_prefix=prefix,
            artifact_files=files,
            calibration=calibration.to_dict(),
        )
    metrics = evaluate_and_store(
        model=model, version=version, samples=test, calibration=calibration, progress=evaluation_progress
    )
    metrics.update({"n_fit": len(fit), "n_validation": len(validation), "n_test": len(test), "note": note, **extra})
    metrics["chosen_settings"] = chosen_settings_of(model)  # issue 21: what the family chose from the data
    ModelVersion.objects.filter(id=version.id).update(metrics=metrics)
    if not ModelVersion.objects.filter(project=run.project, is_active=True).exists():
        services.model_version_activate(version=version)
    return version


def run_workdir(run: TrainingRun) -> Path:
    """Scratch space for one run on this machine; removed when the run ends, or by the reaper if it was killed."""
    path = Path(settings.DATA_DIR) / "work" / f"run-{run.public_id}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def run_files_discard(run: TrainingRun) -> None:
    """Removes everything a run stored (artifact and prediction maps), its scratch folder, and any version rows
    (a comparison's candidates other than the winner are not linked to the run: their folders are in the run's)."""
    ModelVersion.objects.filter(run=run).delete()
    ModelVersion.objects.filter(artifact_prefix__startswith=f"{artifact_prefix(run)}/").delete()
    stored_folder_delete(artifact_prefix(run))
    shutil.rmtree(Path(settings.DATA_DIR) / "work" / f"run-{run.public_id}", ignore_errors=True)
