"""The robustness report of a model version (table, plots, worst cases, advice), the button that starts a run,
its progress fragment (htmx polls it while the run is active), and the worst cases' pictures."""

from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.projects.access import Action, project_for, role_allows
from webapp.robustness import selectors, services
from webapp.robustness.models import RobustnessRun
from webapp.robustness.plots import report_plots
from webapp.serving import png_response
from webapp.storage import stored_file_read
from webapp.training.models import ModelVersion

EXAMPLE_KINDS = ("before", "after", "heatmap", "mask")


def robustness_report(request: HttpRequest, project_id: uuid.UUID, version_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id)
    version = get_object_or_404(ModelVersion, public_id=version_id, project=project)
    run = selectors.latest_run(version=version)
    context = {"project": project, "version": version, "run": run, "can_train": role_allows(role, Action.TRAIN)}
    if request.htmx and request.htmx.target == "robustness-progress":
        response = render(request, "robustness/_progress.html", context)
        if run is not None and not run.is_active:
            response["HX-Refresh"] = "true"  # the run ended: show its report
        return response
    reported = selectors.latest_report_run(version=version)
    if reported is not None:
        context.update(
            reported=reported,
            report=reported.report,
            rows=selectors.table_rows(reported.report),
            plots=report_plots(reported.report),
            n_test=services.test_images_of(version).count(),
        )
    return render(request, "robustness/report.html", context)


@require_POST
def robustness_start(request: HttpRequest, project_id: uuid.UUID, version_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.TRAIN)
    version = get_object_or_404(ModelVersion, public_id=version_id, project=project)
    try:
        services.robustness_run_request(version=version, requested_by=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"Measuring version {version.number}'s robustness on the worker.")
    return redirect("robustness_report", project_id=project.public_id, version_id=version.public_id)


def robustness_example(
    request: HttpRequest, project_id: uuid.UUID, run_id: uuid.UUID, index: int, kind: str
) -> HttpResponse:
    """A worst case's picture (before, after, heatmap or mask overlay), to project members only."""
    project, _ = project_for(request.user, project_id)
    run = get_object_or_404(RobustnessRun, public_id=run_id, model_version__project=project)
    cases = run.report.get("worst_cases", [])
    if kind not in EXAMPLE_KINDS or not 0 <= index < len(cases) or kind not in cases[index].get("files", {}):
        raise Http404("No such picture")
    try:
        return png_response(stored_file_read(cases[index]["files"][kind]))
    except (FileNotFoundError, OSError):
        raise Http404("File missing") from None
