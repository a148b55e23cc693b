"""The HTTP API's rows: per-project access tokens, and batch jobs with one item per submitted image."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from webapp.inference.models import Prediction
from webapp.projects.models import Project
from webapp.training.models import ModelVersion


class Scope(models.TextChoices):
    PREDICT = "predict", "Predict (run the model)"
    READ = "read", "Read (project and model versions)"


class ApiToken(models.Model):
    """A bearer token for one project. The secret is shown once; only its SHA-256 is kept. `key_id` is the
    public part of the token (`kensa_<key_id>_<secret>`), used to find the row before the constant-time compare."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=80)
    scopes = models.JSONField(default=list)  # a subset of Scope.values
    key_id = models.CharField(max_length=16, unique=True)
    secret_sha256 = models.CharField(max_length=64)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"token {self.name} ({self.key_id}) for {self.project_id}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class BatchJob(models.Model):
    """Many images predicted in the background by the version that was active when they were sent."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="batch_jobs")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="batch_jobs")
    token = models.ForeignKey(ApiToken, on_delete=models.SET_NULL, null=True, blank=True, related_name="batch_jobs")
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)  # items finished, predicted or rejected
    error = models.TextField(blank=True)  # for people: no tracebacks
    threshold = models.FloatField(null=True, blank=True)  # the version's raw threshold when the job ran
    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)  # when its message was last sent
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)  # the running worker's last sign of life
    attempts = models.PositiveSmallIntegerField(default=0)  # claims so far; a job that keeps killing workers stops
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"batch {self.public_id} ({self.status}, {self.done}/{self.total})"

    @property
    def progress(self) -> float:
        return self.done / self.total if self.total else 1.0


class BatchItem(models.Model):
    """One image of a batch: its staged upload until predicted, then its prediction (or why it was rejected)."""

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="items")
    position = models.PositiveIntegerField()  # order of submission, from 0
    input_name = models.CharField(max_length=255, blank=True)
    staged_file = models.CharField(max_length=255, blank=True)  # storage name; emptied once processed
    prediction = models.OneToOneField(
        Prediction, on_delete=models.SET_NULL, null=True, blank=True, related_name="batch_item"
    )
    boxes = models.JSONField(default=list)  # [{x0, y0, x1, y1, area}], from the predicted mask
    error = models.CharField(max_length=400, blank=True)

    class Meta:
        ordering = ["position"]
        constraints = [models.UniqueConstraint(fields=["job", "position"], name="batch_item_position_unique")]

    def __str__(self) -> str:
        return f"item {self.position} of {self.job_id}"

    @property
    def is_finished(self) -> bool:
        return self.prediction_id is not None or bool(self.error)
