"""Reads of the audit log: the filtered entries of a project and their CSV form."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator

from django.db.models import QuerySet
from django.utils import timezone

from webapp.audit.models import AuditAction, AuditEntry
from webapp.projects.models import Project

CSV_HEADER = ("time", "user", "action", "target", "before", "after", "undone")


def audit_entries(
    *,
    project: Project,
    user_id: int | None = None,
    action: str = "",
    date_from: dt.date | None = None,
    date_to: dt.date | None = None,
) -> QuerySet[AuditEntry]:
    """The project's entries, newest first. The date range is inclusive, in the server's time zone."""
    entries = AuditEntry.objects.filter(project=project).select_related("user")
    if user_id is not None:
        entries = entries.filter(user_id=user_id)
    if action in AuditAction.values:
        entries = entries.filter(action=action)
    if date_from is not None:
        entries = entries.filter(created_at__gte=_day_start(date_from))
    if date_to is not None:
        entries = entries.filter(created_at__lt=_day_start(date_to + dt.timedelta(days=1)))
    return entries.order_by("-created_at", "-id")


def _day_start(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def audit_csv_lines(*, entries: QuerySet[AuditEntry]) -> Iterator[str]:
    """The entries as CSV text, one line at a time (a streaming response never holds the whole log)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(row) -> str:
        writer.writerow(row)
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    yield line(CSV_HEADER)
    for entry in entries.iterator(chunk_size=500):
        yield line(
            (
                timezone.localtime(entry.created_at).isoformat(timespec="seconds"),
                entry.user.username if entry.user else "system",
                entry.action,
                _csv_safe(entry.target),
                json.dumps(entry.before, sort_keys=True, ensure_ascii=False),
                json.dumps(entry.after, sort_keys=True, ensure_ascii=False),
                timezone.localtime(entry.undone_at).isoformat(timespec="seconds") if entry.undone_at else "",
            )
        )


def _csv_safe(text: str) -> str:
    """A file name like "=cmd|..." must not become a formula when the CSV is opened in a spreadsheet."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text
