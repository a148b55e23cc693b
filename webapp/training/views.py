from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from ml.compare import BASELINE_FAMILY
from webapp.projects.access import Action, project_for, role_allows
from webapp.training import selectors, services
from webapp.training.candidates import COMPARE_FAMILY
from webapp.training.comparison import candidate_clock
from webapp.training.forms import TrainForm
from webapp.training.models import ModelVersion, TrainingRun
from webapp.training.settings_plan import planned_settings_sentence


def train_page(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """GET: what would be trained and why, what the splits mean for it, and the project's queue. POST: queue a
    run (behind the project's running and waiting ones)."""
    project, role = project_for(request.user, project_id)
    form = TrainForm(request.POST or None)
    if request.method == "POST":
        project_for(request.user, project_id, Action.TRAIN)
        if form.is_valid():
            try:
                run = services.training_run_request(project=project, requested_by=request.user, **form.cleaned_data)
            except ValidationError as exc:
                messages.error(request, " ".join(exc.messages))
            else:
                return redirect("run_detail", project_id=project.public_id, run_id=run.public_id)
    plan = services.training_plan(project=project)
    context = {
        "project": project,
        "plan": plan,
        "form": form,
        # issue 21: what PatchCore will choose from the data (a comparison's first candidate is that PatchCore)
        "settings_sentence": planned_settings_sentence(
            project=project,
            family=BASELINE_FAMILY if plan.candidates and plan.candidates.compares else plan.choice.family,
        ),
        "queue": selectors.project_queue(project=project, user=request.user),
        "max_queued": services.MAX_QUEUED_PER_PROJECT,
        "last_split_change": selectors.last_split_change(project=project, user=request.user),
        "runs": project.training_runs.select_related("model_version")[:20],
        "versions": project.model_versions.all()[:20],
        "can_train": role_allows(role, Action.TRAIN),
        "can_edit_data": role_allows(role, Action.EDIT_DATA),
        "validation_share": round(services.VALIDATION_SHARE * 100),
        "latest_comparison": selectors.latest_comparison(project=project),
    }
    return render(request, "training/train.html", context)


@require_POST
def validation_fill(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """Moves a stratified share of the test split into validation (the Train page's fix for its splits)."""
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    try:
        fill = services.validation_split_fill(project=project, user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, fill.message)
    return redirect("train", project_id=project.public_id)


@require_POST
def split_change_undo(request: HttpRequest, project_id: uuid.UUID, entry_id: int) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    try:
        messages.success(request, services.split_change_undo(project=project, entry_id=entry_id, user=request.user))
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("train", project_id=project.public_id)


def run_detail(request: HttpRequest, project_id: uuid.UUID, run_id: uuid.UUID) -> HttpResponse:
    """The run page; htmx polls its progress fragment, which stops polling once the run has ended."""
    project, role = project_for(request.user, project_id)
    run = get_object_or_404(TrainingRun.objects.select_related("model_version"), public_id=run_id, project=project)
    context = {
        "project": project,
        "run": run,
        "place": selectors.queue_place(run=run, user=request.user),
        "can_train": role_allows(role, Action.TRAIN),
        "candidate_clock": candidate_clock(run) if run.family == COMPARE_FAMILY else [],
    }
    if request.htmx:
        response = render(request, "training/_progress.html", context)
        if not run.is_active:
            response["HX-Trigger"] = "trainingFinished"
        return response
    return render(request, "training/run.html", context)


@require_POST
def run_cancel(request: HttpRequest, project_id: uuid.UUID, run_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.TRAIN)
    run = get_object_or_404(TrainingRun, public_id=run_id, project=project)
    services.training_run_cancel(run=run)
    return redirect("run_detail", project_id=project.public_id, run_id=run.public_id)


@require_POST
def version_activate(request: HttpRequest, project_id: uuid.UUID, version_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.TRAIN)
    version = get_object_or_404(ModelVersion, public_id=version_id, project=project)
    services.model_version_activate(version=version, user=request.user)
    messages.success(request, f"Version {version.number} is now the active model.")
    return redirect("version_detail", project_id=project.public_id, version_id=version.public_id)
