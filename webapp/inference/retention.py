"""Retention of routine predictions: API, trial and batch predictions expire by age and by count, per project and
purpose; their rows and files (anomaly map, mask, kept input) go together. Each API call keeps two PNGs, an input
and a row, so a line at 25 requests/s would otherwise add about 19 GB a day.

Kept whatever their age: test-split predictions (a version's evaluation, shown on its dashboard), predictions a
review item points to (pending or decided: the review queue and its audit trail show them), and the predictions of
batch jobs still queued or running. Settings: PREDICTION_RETENTION (KENSA_RETAIN_<PURPOSE>_DAYS / _COUNT).

Rows go first, in one transaction per chunk; files are deleted only after that commits, and only when no other row
names them (inputs are named by their SHA-256, so the same bytes sent twice share one file). A rollback keeps both.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from webapp.api.models import BatchItem, JobStatus
from webapp.inference.models import Prediction, Purpose
from webapp.storage import STORAGE_ERRORS, stored_file_read, stored_file_write, stored_files_delete

log = logging.getLogger(__name__)

ROUTINE_PURPOSES = (Purpose.API, Purpose.TRIAL, Purpose.BATCH)
FILE_FIELDS = ("anomaly_map", "predicted_mask", "input_file")
CHUNK = 500  # rows per transaction: short locks, and one chunk's files at a time
BATCH_PREDICTION_EXPIRED = "The prediction expired under the retention settings (KENSA_RETAIN_BATCH_DAYS / _COUNT)."


@dataclass(frozen=True)
class Retention:
    days: int  # 0: no age limit
    count: int  # newest predictions kept per project; 0: no count limit


@dataclass
class CleanupResult:
    rows: int = 0
    files: int = 0
    by_purpose: dict[str, int] = field(default_factory=dict)


def retention_for(purpose: str) -> Retention:
    values = settings.PREDICTION_RETENTION[purpose]
    return Retention(days=values["days"], count=values["count"])


def predictions_expirable(*, purpose: str):
    """Predictions of `purpose` that retention may delete: no review item, not part of an unfinished batch job."""
    rows = Prediction.objects.filter(purpose=purpose, review_item__isnull=True)
    if purpose == Purpose.BATCH:
        rows = rows.exclude(batch_item__job__status__in=(JobStatus.QUEUED, JobStatus.RUNNING))
    return rows


def prediction_ids_expired(*, purpose: str, retention: Retention, now: datetime) -> list[int]:
    """Ids of expired predictions of `purpose`: older than the age limit, or past the newest `count` of their
    project. Test-split predictions never expire."""
    if purpose not in ROUTINE_PURPOSES:
        raise ValueError(f"{purpose} predictions are never expired")
    expirable = predictions_expirable(purpose=purpose)
    ids: set[int] = set()
    if retention.days > 0:
        cutoff = now - timedelta(days=retention.days)
        ids.update(expirable.filter(created_at__lt=cutoff).values_list("id", flat=True))
    if retention.count > 0:
        project_ids = expirable.values_list("model_version__project_id", flat=True).distinct()
        for project_id in project_ids:
            newest_first = expirable.filter(model_version__project_id=project_id).order_by("-created_at", "-id")
            ids.update(newest_first.values_list("id", flat=True)[retention.count :])
    return sorted(ids)


def predictions_cleanup(*, now: datetime | None = None) -> CleanupResult:
    """Deletes every expired routine prediction with its files (the periodic task calls this)."""
    now = now or timezone.now()
    result = CleanupResult()
    for purpose in ROUTINE_PURPOSES:
        ids = prediction_ids_expired(purpose=purpose, retention=retention_for(purpose), now=now)
        deleted = 0
        for start in range(0, len(ids), CHUNK):
            rows, files = _chunk_delete(ids[start : start + CHUNK])
            deleted += rows
            result.files += files
        result.rows += deleted
        result.by_purpose[purpose] = deleted
    return result


def _chunk_delete(ids: list[int]) -> tuple[int, int]:
    """Deletes these rows (if still expirable) in one transaction; their unshared files once it commits."""
    try:
        with transaction.atomic():
            # Filtered again inside the transaction: a review item may have been made for one meanwhile.
            rows = list(Prediction.objects.filter(id__in=ids, review_item__isnull=True).values("id", *FILE_FIELDS))
            row_ids = [row["id"] for row in rows]
            BatchItem.objects.filter(prediction_id__in=row_ids).update(prediction=None, error=BATCH_PREDICTION_EXPIRED)
            Prediction.objects.filter(id__in=row_ids).delete()
            unshared = _names_unreferenced({name for row in rows for name in _names(row)})
            transaction.on_commit(lambda: _files_delete(unshared))
    except IntegrityError:
        # A review item was made for one of them between the filter and the delete: nothing was deleted; the
        # next run tries the rest again.
        log.warning("retention: a chunk of %d predictions changed while being deleted; left for the next run", len(ids))
        return 0, 0
    return len(rows), len(unshared)


def _names(row: dict) -> list[str]:
    return [row[name] for name in FILE_FIELDS if row[name]]


def _names_unreferenced(names: set[str]) -> list[str]:
    """The names no remaining prediction points at (an input sent twice is one file under two rows)."""
    referenced: set[str] = set()
    for name in FILE_FIELDS:
        referenced.update(Prediction.objects.filter(**{f"{name}__in": names}).values_list(name, flat=True))
    return sorted(names - referenced)


def _files_delete(names: list[str]) -> None:
    """Maps and masks are unique to their row. An input may be sent again while it is being deleted (same bytes,
    same name): its bytes are kept until the delete is done, and written back if a new row points at it."""
    inputs = [name for name in names if "/inputs/" in name]
    kept = {}
    for name in inputs:
        with contextlib.suppress(*STORAGE_ERRORS):  # already gone: nothing to keep
            kept[name] = stored_file_read(name)
    stored_files_delete(names)
    for name in _names_referenced(list(kept)):
        log.info("retention: %s was sent again while it was deleted; written back", name)
        stored_file_write(name, kept[name])


def _names_referenced(names: list[str]) -> list[str]:
    return list(Prediction.objects.filter(input_file__in=names).values_list("input_file", flat=True).distinct())
