"""Reads for the Station pages: the live view's figures come from stored inspections, never from the runner."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
from django.db.models import Count, Q
from django.utils import timezone

from webapp.projects.models import Project
from webapp.stations.models import Inspection, OutboxStatus, Sink, Station

RECENT_IMAGES = 12
LATENCY_WINDOW = 200  # latest inspections the percentiles are taken over
THROUGHPUT_WINDOW_S = 60


def stations_of(*, project: Project):
    return Station.objects.filter(project=project).order_by("name")


@dataclass
class SinkView:
    sink: Sink
    pending: int
    delivered: int
    dead: int
    last_dead_error: str


@dataclass
class LiveView:
    state: str  # running | paused | waiting (no runner holds it) | stale (its runner stopped renewing)
    recent: list[Inspection]
    throughput: float  # images per second over the last minute
    latency_p50: float | None
    latency_p95: float | None
    sinks: list[SinkView]


def station_state(station: Station, now=None) -> str:
    now = now or timezone.now()
    if station.paused:
        return "paused"
    if not station.claimed_by:
        return "waiting"
    if station.lease_expires_at is None or station.lease_expires_at < now:
        return "stale"
    return "running"


def station_live(*, station: Station) -> LiveView:
    now = timezone.now()
    recent = list(
        Inspection.objects.filter(station=station).select_related("prediction", "model_version")[:RECENT_IMAGES]
    )
    latencies = list(Inspection.objects.filter(station=station).values_list("latency_ms", flat=True)[:LATENCY_WINDOW])
    per_minute = Inspection.objects.filter(
        station=station, decided_at__gte=now - timedelta(seconds=THROUGHPUT_WINDOW_S)
    ).count()
    sinks = []
    for sink in Sink.objects.filter(station=station).annotate(
        pending=Count("outbox", filter=Q(outbox__status=OutboxStatus.PENDING)),
        delivered=Count("outbox", filter=Q(outbox__status=OutboxStatus.DELIVERED)),
        dead=Count("outbox", filter=Q(outbox__status=OutboxStatus.DEAD)),
    ):
        last_dead = (
            sink.outbox.filter(status=OutboxStatus.DEAD).order_by("-id").values_list("last_error", flat=True).first()
        )
        sinks.append(
            SinkView(
                sink=sink,
                pending=sink.pending,
                delivered=sink.delivered,
                dead=sink.dead,
                last_dead_error=last_dead or "",
            )
        )
    return LiveView(
        state=station_state(station, now),
        recent=recent,
        throughput=per_minute / THROUGHPUT_WINDOW_S,
        latency_p50=float(np.percentile(latencies, 50)) if latencies else None,
        latency_p95=float(np.percentile(latencies, 95)) if latencies else None,
        sinks=sinks,
    )
