"""The model bundle download of the Model page (the API's is in webapp/api/views.py)."""

from __future__ import annotations

import uuid

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404

from webapp.dashboard.bundles import NotExportable, bundle_response
from webapp.projects.access import project_for
from webapp.training.models import ModelVersion


def version_bundle(request: HttpRequest, project_id: uuid.UUID, version_id: uuid.UUID) -> HttpResponse:
    """Every member who can see the version may take it to the line (viewers included); strangers get 404."""
    project, _ = project_for(request.user, project_id)
    version = get_object_or_404(ModelVersion, public_id=version_id, project=project)
    try:
        return bundle_response(version=version)
    except NotExportable as exc:
        raise Http404(str(exc)) from None
