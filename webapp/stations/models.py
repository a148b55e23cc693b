"""Inspection stations: a source of images, a model, rules and sinks, run by `manage.py run_stations`.

A station is claimed by one runner at a time through a lease (claimed_by + lease_expires_at, renewed by a
heartbeat); an expired lease lets another runner take it over. Every verdict is an Inspection row, written in the
same transaction as one OutboxMessage per sink, so a verdict is never stored without its deliveries or the reverse.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q

from webapp.projects.models import Project


class SourceKind(models.TextChoices):
    FOLDER = "folder", "Watched folder"
    RTSP = "rtsp", "RTSP camera"
    MJPEG = "mjpeg", "MJPEG camera (HTTP)"
    VIDEO = "video", "Video or image-sequence file"


class Verdict(models.TextChoices):
    OK = "ok", "OK"
    NG = "ng", "NG"
    REVIEW = "review", "Review"


class Station(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="stations")
    name = models.CharField(max_length=120)
    source_kind = models.CharField(max_length=16, choices=SourceKind.choices, default=SourceKind.FOLDER)
    source_settings = models.JSONField(default=dict)  # per kind: folder {"path", "poll_seconds", "after"}
    # None: the project's active version at the time the station starts (a new activation restarts it).
    pinned_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    rules = models.JSONField(default=dict)  # webapp/stations/rules.py documents the shape
    paused = models.BooleanField(default=False)
    # Bumped on every edit, so the runner restarts a station whose settings changed under it.
    revision = models.PositiveIntegerField(default=1)
    # The lease: who runs the station, until when (renewed by the runner's heartbeat).
    claimed_by = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    # What the runner last reported: source health, the version in use, an error for people.
    source_health = models.JSONField(default=dict)
    running_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    error = models.CharField(max_length=400, blank=True)
    ok_count = models.PositiveBigIntegerField(default=0)
    ng_count = models.PositiveBigIntegerField(default=0)
    review_count = models.PositiveBigIntegerField(default=0)
    failed_count = models.PositiveBigIntegerField(default=0)
    # Triggers asked over HTTP (a camera in trigger mode takes one frame per trigger): the runner watches the count.
    trigger_requests = models.PositiveBigIntegerField(default=0)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="station_name_unique")]

    def __str__(self) -> str:
        return self.name


class SinkKind(models.TextChoices):
    MQTT = "mqtt", "MQTT"
    WEBHOOK = "webhook", "Webhook"
    FOLDER = "folder", "Sorted folder"
    MODBUS = "modbus", "Modbus TCP (PLC)"


class Sink(models.Model):
    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="sinks")
    kind = models.CharField(max_length=16, choices=SinkKind.choices)
    settings = models.JSONField(default=dict)  # per kind: webapp/stations/sinks/<kind>.py
    health = models.JSONField(default=dict)  # {"state": "ok"|"retrying"|"error", "detail": str}
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} sink of {self.station}"


class Inspection(models.Model):
    """One judged image (or one that could not be judged: verdict blank, error set)."""

    station = models.ForeignKey(Station, on_delete=models.CASCADE, related_name="inspections")
    # The source's exactly-once key ("" for live frames): a key is judged once per station, enforced here.
    key = models.CharField(max_length=400, blank=True)
    name = models.CharField(max_length=255)
    verdict = models.CharField(max_length=16, choices=Verdict.choices)
    reasons = models.JSONField(default=list)  # why, in plain words (rules.py)
    raw_score = models.FloatField()
    normalised_score = models.FloatField()  # 0.5 = the version's threshold
    regions = models.JSONField(default=list)  # [{"x0","y0","x1","y1","area_px","area_mm2","class"}]
    model_version = models.ForeignKey("training.ModelVersion", on_delete=models.SET_NULL, null=True, related_name="+")
    # Map, mask and the kept input; the review item hangs off it. Retention may delete it: the verdict stays.
    prediction = models.ForeignKey(
        "inference.Prediction", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    captured_at = models.DateTimeField()  # when the frame arrived at the source
    decided_at = models.DateTimeField()  # when the verdict was stored
    latency_ms = models.FloatField()  # decided_at - captured_at

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["station", "key"], condition=~Q(key=""), name="inspection_key_once")
        ]
        indexes = [models.Index(fields=["station", "-id"])]

    def __str__(self) -> str:
        return f"{self.name}: {self.verdict}"


class OutboxStatus(models.TextChoices):
    PENDING = "pending", "Waiting"
    DELIVERED = "delivered", "Delivered"
    DEAD = "dead", "Gave up (dead letter)"


class OutboxMessage(models.Model):
    """One verdict to deliver to one sink. Delivered in id order per sink; the payload is fixed at write time."""

    sink = models.ForeignKey(Sink, on_delete=models.CASCADE, related_name="outbox")
    inspection = models.ForeignKey(Inspection, on_delete=models.CASCADE, related_name="outbox")
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=400, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["sink", "status", "id"])]

    def __str__(self) -> str:
        return f"outbox {self.id} to sink {self.sink_id} ({self.status})"
