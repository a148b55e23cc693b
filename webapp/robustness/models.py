"""Robustness runs: a model version scored on its test split under perturbations that mimic a drifting line
(ml.robustness), with progress while it runs and the report once it is done."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from webapp.training.eta import eta_text
from webapp.training.models import ModelVersion


class RobustnessStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


ACTIVE = (RobustnessStatus.QUEUED, RobustnessStatus.RUNNING)


class RobustnessRun(models.Model):
    """One robustness measurement of a version. `report` is ml.robustness.RobustnessReport.to_dict(); the worst
    cases' pictures are files under `files_prefix` (named in report["worst_cases"][i]["files"])."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="robustness_runs")
    status = models.CharField(max_length=16, choices=RobustnessStatus.choices, default=RobustnessStatus.QUEUED)
    automatic = models.BooleanField(default=False)  # started by training, not by a person
    threshold = models.FloatField(null=True, blank=True)  # the operating threshold the report is measured at
    percent = models.FloatField(default=0)
    eta_seconds = models.FloatField(null=True, blank=True)
    message = models.CharField(max_length=400, blank=True)
    error = models.TextField(blank=True)  # for people: no tracebacks
    report = models.JSONField(default=dict, blank=True)
    files_prefix = models.CharField(max_length=255, blank=True)
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    progress_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # A version is measured once at a time: a second request while one waits or runs is refused.
            models.UniqueConstraint(
                fields=["model_version"],
                condition=Q(status__in=["queued", "running"]),
                name="one_active_robustness_run",
            )
        ]

    def __str__(self) -> str:
        return f"robustness run {self.public_id} of {self.model_version} ({self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def eta_text(self) -> str:
        return eta_text(self.eta_seconds if self.is_active else None, family="")
