"""Writes to the audit log. Every service that changes a project's labels, splits, masks, review decisions,
thresholds, members or active version calls `audit_record` in the same transaction as its change."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils.timezone import now

from webapp.audit.models import AuditEntry
from webapp.projects.models import Project

EDIT_SESSION = timedelta(minutes=10)


def audit_record(
    *,
    project: Project | int,
    user: AbstractBaseUser | None,
    action: str,
    target: str,
    before: dict | None = None,
    after: dict | None = None,
    changes: dict | None = None,
) -> AuditEntry:
    """One row of the log. `user` None (or anonymous) means the system did it (a worker, an import)."""
    project_id = project if isinstance(project, int) else project.pk
    return AuditEntry.objects.create(
        project_id=project_id,
        user=user if getattr(user, "pk", None) else None,
        action=action,
        target=target[:255],
        before=before or {},
        after=after or {},
        changes=changes or {},
    )


def audit_record_edit(
    *, project: Project | int, user: AbstractBaseUser | None, action: str, target: str, before: dict, after: dict
) -> AuditEntry:
    """An edit with a version number in `before` and `after`. When it continues the same user's previous edit
    of the same target (that entry ends at this edit's starting version) within EDIT_SESSION, that entry is
    extended instead: an editor's autosaves make one entry per sitting, not one per stroke."""
    project_id = project if isinstance(project, int) else project.pk
    user = user if getattr(user, "pk", None) else None
    last = (
        AuditEntry.objects.filter(
            project_id=project_id, user=user, action=action, target=target[:255], created_at__gte=now() - EDIT_SESSION
        )
        .order_by("-id")
        .first()
    )
    if last is not None and last.after.get("version") == before.get("version"):
        last.after = after
        last.save(update_fields=["after"])
        return last
    return audit_record(project=project_id, user=user, action=action, target=target, before=before, after=after)
