"""Training runs and the model versions they produce (a version's predictions are webapp.inference's)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from webapp.projects.models import Project
from webapp.training.eta import eta_text


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING)


class TrainingRun(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="training_runs")
    family = models.CharField(max_length=32)
    config = models.JSONField(default=dict)
    reason = models.CharField(max_length=400, blank=True)  # why this family, in plain words
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    stage = models.CharField(max_length=32, blank=True)
    percent = models.FloatField(default=0)
    eta_seconds = models.FloatField(null=True, blank=True)
    message = models.CharField(max_length=400, blank=True)
    error = models.TextField(blank=True)  # for people: no tracebacks (those go to the worker's log)
    device = models.CharField(max_length=100, blank=True)  # "cpu", "cuda:0 (NVIDIA H200)"
    worker = models.CharField(max_length=200, blank=True)
    cancel_requested = models.BooleanField(default=False)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # When the run was sent to the workers: only a project's next run is sent, once nothing of the project runs.
    enqueued_at = models.DateTimeField(null=True, blank=True)
    # The family and its settings as one string: the same request cannot wait twice in a project's queue.
    request_key = models.CharField(max_length=300, blank=True)
    # When percent and eta_seconds were measured, so a page counts the time left down between reports.
    progress_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A project queues as many runs as it likes (services cap it) but runs one at a time, and never holds
            # the same request twice: both enforced by the database, not by a check-then-insert.
            models.UniqueConstraint(
                fields=["project"], condition=Q(status=RunStatus.RUNNING), name="one_running_run_per_project"
            ),
            models.UniqueConstraint(
                fields=["project", "request_key"],
                condition=Q(status=RunStatus.QUEUED),
                name="no_duplicate_queued_run",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.family} run {self.public_id} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def eta_remaining(self) -> float | None:
        """Seconds left now: the last estimate less the time since it was made (never below zero)."""
        if self.eta_seconds is None or not self.is_active:
            return None
        if self.progress_at is None:
            return self.eta_seconds
        return max(0.0, self.eta_seconds - (timezone.now() - self.progress_at).total_seconds())

    @property
    def eta_text(self) -> str:
        return eta_text(self.eta_remaining, family=self.family)


class ModelVersion(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    run = models.OneToOneField(TrainingRun, on_delete=models.SET_NULL, null=True, related_name="model_version")
    number = models.PositiveIntegerField()
    family = models.CharField(max_length=32)
    artifact_prefix = models.CharField(max_length=255)  # storage folder holding config.json and tensors
    artifact_files = models.JSONField(default=list)
    metrics = models.JSONField(default=dict)
    calibration = models.JSONField(default=dict)  # {"threshold": raw, "scale": raw units per logit}
    operating_threshold = models.FloatField(null=True, blank=True)  # a user's choice; None = calibration's
    is_active = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-number"]
        constraints = [
            models.UniqueConstraint(fields=["project", "number"], name="version_number_unique"),
            models.UniqueConstraint(fields=["project"], condition=Q(is_active=True), name="one_active_version"),
        ]

    def __str__(self) -> str:
        return f"v{self.number} ({self.family})"

    @property
    def threshold(self) -> float:
        if self.operating_threshold is not None:
            return self.operating_threshold
        return float(self.calibration["threshold"])
