"""Writes for stations: what owners do on the Station page, the runner's lease, and storing a verdict together
with its outbox messages."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone
from PIL import Image as PILImage

from webapp.inference.models import Purpose
from webapp.inference.services import Box
from webapp.projects.access import Action, project_for
from webapp.projects.models import Project
from webapp.review.models import Reason, ReviewItem, ReviewPolicy
from webapp.stations.models import Inspection, Sink, SinkKind, SourceKind, Station, Verdict
from webapp.stations.outbox import outbox_enqueue
from webapp.stations.rules import Decision, Region, region_area_mm2, rules_validate
from webapp.stations.sinks import sender_check
from webapp.stations.sources import SOURCE_KINDS, SourceError
from webapp.storage import stored_file_write
from webapp.training.models import ModelVersion

NAME_TAKEN = "This project already has a station named “{name}”."
NAME_NEEDED = "A station needs a name."
UNKNOWN_SOURCE = "Unknown source kind {kind!r}."
SOURCE_NOT_AVAILABLE = "The {kind} source is not available in this installation."
VERSION_NOT_IN_PROJECT = "That model version is not one of this project's."
UNKNOWN_SINK = "Unknown sink kind {kind!r}."
# The Prediction purpose of station frames: not routed by the review policy (a station's rules decide REVIEW) and
# not expired by the API/trial/batch retention (stations trim their own images, see station_images_trim).
STATION_PURPOSE = Purpose.STATION
TRIM_CHUNK, TRIM_CHUNKS_PER_CALL = 500, 10
# A source's original bytes are kept as they came in these formats (the extensions the app serves images as).
KEPT_EXTENSIONS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".bmp": ".bmp", ".tif": ".tif", ".tiff": ".tif"}


class LeaseLost(Exception):
    """Another runner holds the station now (this runner's lease expired); the verdict was not stored."""


# --- what owners do ---------------------------------------------------------------------------------------------


def _checked(*, project: Project, name: str, source_kind: str, source_settings: dict, rules: dict, pinned_version):
    name = (name or "").strip()
    if not name:
        raise ValidationError(NAME_NEEDED)
    if source_kind not in SourceKind.values:
        raise ValidationError(UNKNOWN_SOURCE.format(kind=source_kind))
    if source_kind not in SOURCE_KINDS:
        raise ValidationError(SOURCE_NOT_AVAILABLE.format(kind=source_kind))
    try:
        SOURCE_KINDS[source_kind](source_settings, station_id=0)  # settings checked; nothing is opened yet
        rules = rules_validate(rules or {})
    except (SourceError, ValueError) as error:
        raise ValidationError(str(error)) from None
    if pinned_version is not None and pinned_version.project_id != project.id:
        raise ValidationError(VERSION_NOT_IN_PROJECT)
    return name, rules


def station_create(
    *,
    project: Project,
    user: AbstractBaseUser,
    name: str,
    source_kind: str,
    source_settings: dict,
    rules: dict | None = None,
    pinned_version: ModelVersion | None = None,
) -> Station:
    project_for(user, project.public_id, Action.MANAGE)
    name, rules = _checked(
        project=project,
        name=name,
        source_kind=source_kind,
        source_settings=source_settings,
        rules=rules or {},
        pinned_version=pinned_version,
    )
    try:
        with transaction.atomic():
            return Station.objects.create(
                project=project,
                name=name,
                source_kind=source_kind,
                source_settings=source_settings,
                rules=rules,
                pinned_version=pinned_version,
                created_by=user,
            )
    except IntegrityError:
        raise ValidationError(NAME_TAKEN.format(name=name)) from None


def station_update(
    *,
    station: Station,
    user: AbstractBaseUser,
    name: str,
    source_kind: str,
    source_settings: dict,
    rules: dict | None,
    pinned_version: ModelVersion | None,
) -> Station:
    project_for(user, station.project.public_id, Action.MANAGE)
    name, rules = _checked(
        project=station.project,
        name=name,
        source_kind=source_kind,
        source_settings=source_settings,
        rules=rules or {},
        pinned_version=pinned_version,
    )
    try:
        with transaction.atomic():
            Station.objects.filter(id=station.id).update(
                name=name,
                source_kind=source_kind,
                source_settings=source_settings,
                rules=rules,
                pinned_version=pinned_version,
                revision=F("revision") + 1,
                updated_at=timezone.now(),
            )
    except IntegrityError:
        raise ValidationError(NAME_TAKEN.format(name=name)) from None
    station.refresh_from_db()
    return station


def station_pause(*, station: Station, user: AbstractBaseUser, paused: bool) -> Station:
    """Paused stations are given up by their runner within a heartbeat; resuming lets any runner claim it."""
    project_for(user, station.project.public_id, Action.MANAGE)
    Station.objects.filter(id=station.id).update(paused=paused, updated_at=timezone.now())
    station.refresh_from_db()
    return station


def station_delete(*, station: Station, user: AbstractBaseUser) -> None:
    """The station, its verdicts and their images (those in review stay with their review items)."""
    project_for(user, station.project.public_id, Action.MANAGE)
    while station_images_trim(station_id=station.id, keep=0):
        pass
    station.delete()


def sink_add(*, station: Station, user: AbstractBaseUser, kind: str, settings: dict) -> Sink:
    project_for(user, station.project.public_id, Action.MANAGE)
    if kind not in SinkKind.values:
        raise ValidationError(UNKNOWN_SINK.format(kind=kind))
    try:
        sender_check(kind, settings)
    except ValueError as error:
        raise ValidationError(str(error)) from None
    with transaction.atomic():
        sink = Sink.objects.create(station=station, kind=kind, settings=settings)
        Station.objects.filter(id=station.id).update(revision=F("revision") + 1)
    return sink


def sink_remove(*, sink: Sink, user: AbstractBaseUser) -> None:
    project_for(user, sink.station.project.public_id, Action.MANAGE)
    with transaction.atomic():
        Station.objects.filter(id=sink.station_id).update(revision=F("revision") + 1)
        sink.delete()


# --- the runner's lease -----------------------------------------------------------------------------------------


def _lease_free(now: datetime) -> Q:
    return Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now) | Q(claimed_by="")


def station_claim(*, station_id: int, runner: str, lease_seconds: float) -> bool:
    """Takes a running-eligible station whose lease is free or expired; False when another runner got it."""
    now = timezone.now()
    claimed = (
        Station.objects.filter(_lease_free(now), id=station_id, paused=False)
        .exclude(claimed_by=runner)
        .update(claimed_by=runner, lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now)
    )
    return claimed == 1


def stations_claimable(*, now: datetime | None = None) -> list[int]:
    now = now or timezone.now()
    return list(Station.objects.filter(_lease_free(now), paused=False).order_by("id").values_list("id", flat=True))


def station_heartbeat(*, station_id: int, runner: str, lease_seconds: float, source_health: dict) -> bool:
    """Renews the lease; False when the station is no longer this runner's (taken over, or paused)."""
    now = timezone.now()
    renewed = Station.objects.filter(id=station_id, claimed_by=runner, paused=False).update(
        lease_expires_at=now + timedelta(seconds=lease_seconds), heartbeat_at=now, source_health=source_health
    )
    return renewed == 1


def station_release(*, station_id: int, runner: str) -> None:
    Station.objects.filter(id=station_id, claimed_by=runner).update(
        claimed_by="", lease_expires_at=None, source_health={"state": "stopped", "detail": "not running"}
    )


def station_report(*, station_id: int, runner: str, error: str = "", version: ModelVersion | None = None) -> None:
    fields = {"error": error[:400]}
    if version is not None:
        fields["running_version"] = version
    Station.objects.filter(id=station_id, claimed_by=runner).update(**fields)


def sink_health_save(*, sink_id: int, health: dict) -> None:
    Sink.objects.filter(id=sink_id).update(health=health)


# --- verdicts ---------------------------------------------------------------------------------------------------


def station_version(*, station: Station) -> ModelVersion | None:
    """The pinned version, else the project's active one."""
    if station.pinned_version_id:
        return station.pinned_version
    return ModelVersion.objects.filter(project_id=station.project_id, is_active=True).first()


def station_rules_in_force(*, station: Station) -> dict:
    """The station's rules; without a band of its own, the project's review policy band when that policy is on."""
    rules = dict(station.rules or {})
    if "review_band" not in rules:
        policy = ReviewPolicy.objects.filter(project_id=station.project_id, enabled=True).first()
        if policy is not None:
            rules["review_band"] = [policy.band_low, policy.band_high]
    return rules


def _overlap(box: Box, other: list[int]) -> int:
    width = min(box.x1, other[2]) - max(box.x0, other[0])
    height = min(box.y1, other[3]) - max(box.y0, other[1])
    return max(0, width) * max(0, height)


def regions_from_boxes(boxes: list[Box], detections: list[dict] | None = None) -> list[Region]:
    """A region per mask region, its class that of the detection overlapping it most (families that learn from
    drawn defects name it, webapp.inference.detections); "defect" when none names one (anomaly families)."""
    regions = []
    for b in boxes:
        label = ""
        if detections:
            best = max(detections, key=lambda d: _overlap(b, d["box"]))
            label = best["label"] if _overlap(b, best["box"]) else ""
        regions.append(Region(x0=b.x0, y0=b.y0, x1=b.x1, y1=b.y1, area_px=b.area, defect_class=label or "defect"))
    return regions


def rules_name_classes(rules: dict) -> bool:
    return any(rule["class"] != "*" for rule in rules.get("regions") or [])


def _region_json(region: Region, pixels_per_mm: float | None) -> dict:
    area_mm2 = region_area_mm2(region, pixels_per_mm)
    return {
        "class": region.defect_class,
        "x0": region.x0,
        "y0": region.y0,
        "x1": region.x1,
        "y1": region.y1,
        "area_px": region.area_px,
        "area_mm2": None if area_mm2 is None else round(area_mm2, 4),
    }


def input_encoded(image: np.ndarray, *, lossless: bool) -> tuple[bytes, str]:
    """A live frame as a file: PNG when people will review it (it may join the dataset), else JPEG, which takes a
    tenth of the time (a 512 px PNG took 20 ms of CPU per frame, the largest share after the model)."""
    buffer = io.BytesIO()
    if lossless:
        PILImage.fromarray(image).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue(), ".png"
    PILImage.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), ".jpg"


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds")


def inspection_record(
    *,
    station: Station,
    runner: str,
    name: str,
    key: str,
    captured_at: float,
    image: np.ndarray,
    prediction,
    regions: list[Region],
    decision: Decision,
    version: ModelVersion,
    rules: dict,
    data: bytes = b"",
    extension: str = "",
) -> Inspection:
    """Stores the verdict, the station's counters, one outbox message per sink and (for REVIEW) a review item,
    in one transaction, only while this runner holds the lease. Raises LeaseLost, or IntegrityError when the key
    was judged already (another runner, or this one before a crash). `data`: the source's encoded original, kept
    as is (else the frame is encoded)."""
    extension = KEPT_EXTENSIONS.get(extension.lower(), "")
    if not data or not extension:
        data, extension = input_encoded(image, lossless=decision.verdict == Verdict.REVIEW)
    # Under the project's folder, which deleting the project removes whole.
    folder = f"projects/{station.project.public_id}/stations/{station.public_id}/inputs"
    input_name = stored_file_write(f"{folder}/{uuid.uuid4().hex}{extension}", data)
    counter = {Verdict.OK: "ok_count", Verdict.NG: "ng_count", Verdict.REVIEW: "review_count"}[decision.verdict]
    with transaction.atomic():
        if not Station.objects.filter(id=station.id, claimed_by=runner).update(**{counter: F(counter) + 1}):
            raise LeaseLost(station.id)
        decided = timezone.now()
        captured = datetime.fromtimestamp(captured_at, tz=UTC)
        prediction.input_file = input_name
        prediction.input_name = name[:255]
        prediction.save(update_fields=["input_file", "input_name"])
        regions_json = [_region_json(r, rules.get("pixels_per_mm")) for r in regions]
        latency_ms = max(0.0, (decided - captured).total_seconds() * 1000)
        inspection = Inspection.objects.create(
            station=station,
            key=key[:400],
            name=name[:255],
            verdict=decision.verdict,
            reasons=decision.reasons,
            raw_score=prediction.raw_score,
            normalised_score=prediction.normalised_score,
            regions=regions_json,
            model_version=version,
            prediction=prediction,
            captured_at=captured,
            decided_at=decided,
            latency_ms=latency_ms,
        )
        counts = Station.objects.values("ok_count", "ng_count", "review_count").get(id=station.id)
        if decision.verdict == Verdict.REVIEW:
            ReviewItem.objects.get_or_create(
                prediction=prediction, defaults={"project_id": station.project_id, "reason": Reason.BAND}
            )
        payload = {
            "station": str(station.public_id),
            "station_name": station.name,
            "inspection": inspection.id,
            "image": name,
            "verdict": decision.verdict,
            "score": round(prediction.normalised_score, 6),
            "raw_score": prediction.raw_score,
            "reasons": decision.reasons,
            "regions": regions_json,
            "model_version": {"id": str(version.public_id), "number": version.number, "family": version.family},
            "captured_at": _iso(captured),
            "decided_at": _iso(decided),
            "latency_ms": round(latency_ms, 1),
            "counters": {"ok": counts["ok_count"], "ng": counts["ng_count"], "review": counts["review_count"]},
        }
        outbox_enqueue(inspection=inspection, payload=payload, sinks=list(station.sinks.all()))
    return inspection


def inspection_key_seen(*, station_id: int, key: str) -> bool:
    return bool(key) and Inspection.objects.filter(station_id=station_id, key=key[:400]).exists()


def station_trigger(*, station: Station) -> int:
    """Asks the station's camera for one frame now (a part is in front of it); the runner polls this count."""
    Station.objects.filter(id=station.id).update(trigger_requests=F("trigger_requests") + 1)
    return Station.objects.values_list("trigger_requests", flat=True).get(id=station.id)


def station_trigger_count(*, station_id: int) -> int:
    return Station.objects.values_list("trigger_requests", flat=True).get(id=station_id)


def station_failed_count(*, station_id: int) -> None:
    Station.objects.filter(id=station_id).update(failed_count=F("failed_count") + 1)


def station_images_trim(*, station_id: int, keep: int) -> int:
    """Deletes the stored images (input, map, mask: the Prediction rows) of all but the newest `keep` inspections of
    a station, except those waiting in or decided by review; the verdict rows stay. A line at 15 images/s stores
    about 2 GB of images an hour, so the runner calls this every minute (KENSA_STATION_KEEP_IMAGES)."""
    from webapp.inference.models import Prediction
    from webapp.storage import stored_files_delete_on_commit

    newest = Inspection.objects.filter(station_id=station_id).order_by("-id").values_list("id", flat=True)
    boundary = newest[keep : keep + 1].first() if keep > 0 else newest.first()
    if boundary is None:
        return 0
    old = Inspection.objects.filter(station_id=station_id, id__lte=boundary)
    rows = Prediction.objects.filter(
        id__in=old.filter(prediction__isnull=False).values("prediction_id"), review_item__isnull=True
    )
    deleted = 0
    for _ in range(TRIM_CHUNKS_PER_CALL):  # bounded: a backlog is worked off over several calls
        with transaction.atomic():
            chunk = list(rows.values_list("id", "anomaly_map", "predicted_mask", "input_file")[:TRIM_CHUNK])
            if not chunk:
                break
            Prediction.objects.filter(id__in=[row[0] for row in chunk]).delete()
            stored_files_delete_on_commit([name for row in chunk for name in row[1:]])
            deleted += len(chunk)
    return deleted
