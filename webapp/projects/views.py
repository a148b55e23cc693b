from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.dashboard.selectors import version_metrics
from webapp.images.selectors import project_image_stats
from webapp.projects import services
from webapp.projects.access import Action, project_for, role_allows
from webapp.projects.forms import DefectClassForm, DeleteForm, MemberForm, ProjectForm, RenameForm
from webapp.projects.models import DefectClass, Membership
from webapp.projects.selectors import project_list_for
from webapp.review.selectors import review_summary
from webapp.samples import sample_project_create
from webapp.training.services import active_run

PROJECTS_PER_PAGE = 50


def project_list(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = services.project_create(owner=request.user, **form.cleaned_data)
        return redirect("project_detail", project_id=project.public_id)
    page = Paginator(project_list_for(user=request.user), PROJECTS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "projects/list.html", {"page": page, "form": form})


@require_POST
def sample_create(request: HttpRequest) -> HttpResponse:
    project = sample_project_create(owner=request.user)
    messages.success(request, f"Created “{project.name}” with {project.images.count()} images.")
    return redirect("project_detail", project_id=project.public_id)


def project_detail(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id)
    context = {
        "project": project,
        "role": role,
        "stats": project_image_stats(project=project),
        "active_version": (active := project.model_versions.filter(is_active=True).first()),
        "active_metrics": version_metrics(version=active) if active else {},  # at its operating threshold
        "active_run": active_run(project=project),
        "review_summary": review_summary(project=project),
        **_can(role),
    }
    return render(request, "projects/detail.html", context)


def project_settings(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id)
    context = {
        "project": project,
        "role": role,
        "rename_form": RenameForm(initial={"name": project.name}),
        "member_form": MemberForm(),
        "class_form": DefectClassForm(),
        "memberships": project.memberships.select_related("user").order_by("user__username"),
        "defect_classes": project.defect_classes.all(),
        **_can(role),
    }
    return render(request, "projects/settings.html", context)


@require_POST
def project_rename(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    form = RenameForm(request.POST)
    if form.is_valid():
        services.project_rename(project=project, name=form.cleaned_data["name"])
        messages.success(request, "Project renamed.")
    else:
        messages.error(request, "A project needs a name of at most 120 characters.")
    return redirect("project_settings", project_id=project.public_id)


def project_delete(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    form = DeleteForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        if form.cleaned_data["confirm_name"] != project.name:
            form.add_error("confirm_name", "Type the project's name exactly to confirm.")
        else:
            name = project.name
            services.project_delete(project=project)
            messages.success(request, f"Deleted “{name}” and all its images.")
            return redirect("project_list")
    return render(request, "projects/delete.html", {"project": project, "form": form})


@require_POST
def member_set(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    form = MemberForm(request.POST)
    if form.is_valid():
        try:
            services.membership_set(project=project, actor=request.user, **form.cleaned_data)
            messages.success(request, f"{form.cleaned_data['username']} is now {form.cleaned_data['role']}.")
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
    else:
        messages.error(request, "Give a user name and a role.")
    return redirect("project_settings", project_id=project.public_id)


@require_POST
def member_remove(request: HttpRequest, project_id: uuid.UUID, membership_id: int) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    membership = get_object_or_404(Membership, id=membership_id, project=project)
    try:
        services.membership_remove(project=project, membership=membership, actor=request.user)
        messages.success(request, f"Removed {membership.user.username}.")
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("project_settings", project_id=project.public_id)


@require_POST
def defect_class_create(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    form = DefectClassForm(request.POST)
    if form.is_valid():
        try:
            services.defect_class_create(project=project, **form.cleaned_data)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
    else:
        messages.error(request, "A defect class needs a name and a colour like #e4572e.")
    return redirect("project_settings", project_id=project.public_id)


@require_POST
def defect_class_delete(request: HttpRequest, project_id: uuid.UUID, class_id: int) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    defect_class = get_object_or_404(DefectClass, id=class_id, project=project)
    try:
        services.defect_class_delete(defect_class=defect_class)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("project_settings", project_id=project.public_id)


def _can(role: str) -> dict[str, bool]:
    """Template flags: which controls to show. The views enforce the same rules on every request."""
    return {f"can_{action.value}": role_allows(role, action) for action in Action}
