"""Writes to the audit log. Every service that changes a project's labels, splits, masks, review decisions,
thresholds, members or active version calls `audit_record` in the same transaction as its change."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser

from webapp.audit.models import AuditEntry
from webapp.projects.models import Project


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
