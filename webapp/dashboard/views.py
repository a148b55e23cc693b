"""The model dashboard (per version: metrics, threshold slider, plots, results gallery), version comparison,
trial detection, and the prediction images behind them."""

from __future__ import annotations

import math
import uuid
from urllib.parse import urlencode

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.dashboard import selectors, services
from webapp.dashboard.overlays import heatmap_rgba_png, mask_rgba_png
from webapp.dashboard.panels import threshold_panel, version_ladder
from webapp.images.models import Label
from webapp.inference.services import active_version
from webapp.projects.access import Action, project_for, role_allows
from webapp.serving import png_response, stored_image_response
from webapp.storage import stored_file_read
from webapp.training.models import ModelVersion


def _float(value: str | None) -> float | None:
    try:
        number = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return number if number is not None and math.isfinite(number) else None


def _target_precision(request: HttpRequest) -> float | None:
    value = _float(request.GET.get("p"))
    return None if value is None else min(1.0, max(0.0, value))


def model_home(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """The Model tab: the active version's dashboard, else the newest version's, else how to get one."""
    project, role = project_for(request.user, project_id)
    version = selectors.dashboard_version(project=project)
    if version is not None:
        return redirect("version_detail", project_id=project.public_id, version_id=version.public_id)
    return render(
        request, "dashboard/no_model.html", {"project": project, "can_train": role_allows(role, Action.TRAIN)}
    )


def version_detail(request: HttpRequest, project_id: uuid.UUID, version_id: uuid.UUID) -> HttpResponse:
    """The dashboard page; the threshold panel and the gallery are its htmx fragments (chosen by HX-Target).
    `t` is the raw threshold to show (default: the version's operating threshold), `p` a target precision."""
    project, role = project_for(request.user, project_id)
    version = get_object_or_404(ModelVersion, public_id=version_id, project=project)
    scored = selectors.scored_images(version=version)
    threshold = _threshold(request, version, scored)
    target = request.htmx.target if request.htmx else None
    context = {"project": project, "version": version, "can_train": role_allows(role, Action.TRAIN)}
    if target == "gallery":
        return render(request, "dashboard/_gallery.html", {**context, **_gallery_context(request, version, threshold)})
    context["panel"] = threshold_panel(
        version=version, scored=scored, threshold=threshold, target_precision=_target_precision(request)
    )
    context["target_precision"] = request.GET.get("p", "")
    if target == "threshold-panel":
        # A preset or a typed value moves the slider too (sent out of band); a slider move never replaces it.
        context["move_slider"] = request.GET.get("move") == "1"
        response = render(request, "dashboard/_threshold.html", context)
        response["HX-Trigger"] = "thresholdChanged"
        if "pos" in request.GET:  # the address keeps the exact threshold, not a slider position
            query = {"t": repr(threshold), "p": context["target_precision"]}
            response["HX-Replace-Url"] = f"{request.path}?{urlencode({k: v for k, v in query.items() if v})}"
        return response
    context.update(
        scored=scored,
        m=selectors.version_metrics(version=version),  # threshold figures at its operating threshold
        versions=selectors.versions_of(project=project),
        **_gallery_context(request, version, threshold),
    )
    return render(request, "dashboard/version.html", context)


def _threshold(request: HttpRequest, version: ModelVersion, scored) -> float:
    """The threshold asked for: the slider's position `pos` on the version's ladder, else the raw `t`, else the
    version's operating threshold."""
    position = request.GET.get("pos", "")
    if position.isdigit():
        return version_ladder(version=version, scored=scored).threshold_at(int(position))
    threshold = _float(request.GET.get("t"))
    return version.threshold if threshold is None else threshold


def _gallery_context(request: HttpRequest, version: ModelVersion, threshold: float) -> dict:
    outcome = request.GET.get("outcome", "")
    defect_class = request.GET.get("defect_class", "")
    return {
        "gallery": selectors.gallery_page(
            version=version,
            threshold=threshold,
            outcome=outcome,
            defect_class=defect_class,
            page=request.GET.get("page", 1),
        ),
        "gallery_threshold": threshold,
        "outcome": outcome,
        "outcomes": list(selectors.Outcome.TITLES.items()),
        "defect_class": defect_class,
        "defect_classes": version.project.defect_classes.all(),
    }


@require_POST
def version_threshold_save(request: HttpRequest, project_id: uuid.UUID, version_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.TRAIN)
    version = get_object_or_404(ModelVersion, public_id=version_id, project=project)
    threshold = None if request.POST.get("reset") else _float(request.POST.get("t"))
    if threshold is None and not request.POST.get("reset"):
        messages.error(request, services.BAD_THRESHOLD)
    else:
        services.model_version_threshold_save(version=version, threshold=threshold, user=request.user)
        if threshold is None:
            messages.success(request, f"Version {version.number} is back on its calibrated threshold.")
        else:
            messages.success(
                request, f"Saved: version {version.number} now calls an image defective from raw score {threshold:.5g}."
            )
    url = reverse("version_detail", kwargs={"project_id": project.public_id, "version_id": version.public_id})
    return redirect(url)


def version_compare(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """Two versions side by side: metrics at each one's operating threshold, and their score histograms."""
    project, role = project_for(request.user, project_id)
    versions = list(selectors.versions_of(project=project))
    by_id = {str(v.public_id): v for v in versions}
    chosen = [by_id.get(request.GET.get(key, "")) for key in ("a", "b")]
    defaults = iter(v for v in versions if v not in chosen)
    chosen = [v or next(defaults, None) for v in chosen]
    columns = []
    for version in chosen:
        if version is None:
            continue
        scored = selectors.scored_images(version=version)
        panel = threshold_panel(version=version, scored=scored, threshold=version.threshold)
        columns.append({"version": version, "m": version.metrics, "panel": panel, "scored": scored})
    context = {
        "project": project,
        "versions": versions,
        "columns": columns,
        "can_train": role_allows(role, Action.TRAIN),
    }
    return render(request, "dashboard/compare.html", context)


def prediction_file(request: HttpRequest, project_id: uuid.UUID, prediction_id: int, kind: str) -> HttpResponse:
    """A prediction's overlays (heatmap, predicted mask: coloured RGBA PNGs made from the stored maps) or its
    trial input, to members only, never as anything but an image."""
    project, _ = project_for(request.user, project_id)
    prediction = selectors.prediction_in_project(project=project, prediction_id=prediction_id)
    if prediction is None:
        raise Http404("No such prediction")
    if kind == "input":
        return stored_image_response(prediction.input_file.name)
    stored = prediction.anomaly_map if kind == "heatmap" else prediction.predicted_mask
    if not stored.name:
        raise Http404("Not stored")
    # The gallery draws heatmaps relative to its own threshold (`t`), so an escape at the slider's threshold
    # reads as one.
    threshold = _float(request.GET.get("t")) if kind == "heatmap" else None
    try:
        stored_bytes = stored_file_read(stored.name)
        data = heatmap_rgba_png(stored_bytes, threshold) if kind == "heatmap" else mask_rgba_png(stored_bytes)
    except (FileNotFoundError, OSError):
        raise Http404("File missing") from None
    return png_response(data)


def trial_page(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """GET: try the active model on images of your own, and the earlier tries. POST: run it on the upload."""
    project, role = project_for(request.user, project_id)
    version = active_version(project=project)
    if request.method == "POST":
        project_for(request.user, project_id, Action.TRAIN)
        if version is None:
            messages.error(request, "This project has no active model yet: train one first.")
        else:
            try:
                results = services.trial_run(version=version, uploads=request.FILES.getlist("files"))
            except ValidationError as exc:
                messages.error(request, " ".join(exc.messages))
            else:
                tried = sum(1 for r in results if r.result)
                messages.success(request, f"Tried {tried} image(s) with version {version.number}.")
                for problem in (r for r in results if r.problem):
                    messages.error(request, f"{problem.name}: {problem.problem}")
        return redirect("trial", project_id=project.public_id)
    context = {
        "project": project,
        "version": version,
        "trials": selectors.trial_predictions(project=project, page=request.GET.get("page", 1)),
        "can_try": role_allows(role, Action.TRAIN),
        "can_edit_data": role_allows(role, Action.EDIT_DATA),
    }
    return render(request, "dashboard/trial.html", context)


@require_POST
def trial_add(request: HttpRequest, project_id: uuid.UUID, prediction_id: int) -> HttpResponse:
    """Adds a tried image to the dataset with the label a person confirmed; htmx swaps the card in place."""
    project, role = project_for(request.user, project_id, Action.EDIT_DATA)
    prediction = selectors.prediction_in_project(project=project, prediction_id=prediction_id)
    if prediction is None:
        raise Http404("No such prediction")
    note = ""
    try:
        _, note = services.trial_prediction_add_to_dataset(
            prediction=prediction, label=request.POST.get("label", ""), user=request.user
        )
    except ValidationError as exc:
        note = " ".join(exc.messages)
    if request.htmx:
        context = {"project": project, "p": prediction, "note": note, "can_edit_data": True, "labels": Label}
        return render(request, "dashboard/_trial_card.html", context)
    if note:
        messages.info(request, note)
    return redirect("trial", project_id=project.public_id)
