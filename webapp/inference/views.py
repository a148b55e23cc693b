from __future__ import annotations

import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from webapp.inference.disk_use import project_disk_use
from webapp.projects.access import Action, project_for


def project_disk_use_view(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """The settings page's disk use panel, loaded after the page (a large project's listing takes a moment)."""
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    rows = project_disk_use(project=project)
    context = {
        "project": project,
        "rows": rows,
        "total_bytes": sum(row.bytes for row in rows),
        "total_files": sum(row.files for row in rows),
        "retention": settings.PREDICTION_RETENTION,
    }
    return render(request, "projects/_disk_use.html", context)
