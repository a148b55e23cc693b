"""The project's audit log page (filters, pages of 50) and its CSV export."""

from __future__ import annotations

import uuid

from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.utils import timezone

from webapp.audit.forms import AuditFilterForm
from webapp.audit.models import AuditEntry
from webapp.audit.selectors import audit_csv_lines, audit_entries
from webapp.projects.access import Action, project_for

PAGE_SIZE = 50


def _filtered(request: HttpRequest, project) -> tuple[AuditFilterForm, object]:
    """The filter form (bound to the query string) and the entries it selects; bad filters select nothing."""
    users = get_user_model().objects.filter(pk__in=AuditEntry.objects.filter(project=project).values("user_id"))
    users = users.union(project.members.all()).order_by("username")
    form = AuditFilterForm(request.GET or None, users=users)
    if form.is_bound and not form.is_valid():
        return form, AuditEntry.objects.none()
    data = form.cleaned_data if form.is_bound else {}
    entries = audit_entries(
        project=project,
        user_id=data.get("user"),
        action=data.get("action") or "",
        date_from=data.get("date_from"),
        date_to=data.get("date_to"),
    )
    return form, entries


def audit_log(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id, Action.AUDIT)
    form, entries = _filtered(request, project)
    page = Paginator(entries, PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"project": project, "role": role, "form": form, "page": page, "query": query.urlencode()}
    return render(request, "audit/log.html", context)


def audit_export(request: HttpRequest, project_id: uuid.UUID) -> StreamingHttpResponse:
    project, _ = project_for(request.user, project_id, Action.AUDIT)
    _, entries = _filtered(request, project)
    name = f"audit-{project.public_id}-{timezone.localdate().isoformat()}.csv"
    response = StreamingHttpResponse(audit_csv_lines(entries=entries), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response
