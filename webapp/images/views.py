from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.images import services
from webapp.images.forms import BULK_ACTIONS, BulkForm, ImageEditForm
from webapp.images.intake.ingest import uploads_ingest
from webapp.images.models import Annotation, Image, Label, Split, ThumbnailState
from webapp.images.selectors import image_list
from webapp.images.splits import splits_rebalance
from webapp.projects.access import Action, project_for, role_allows
from webapp.serving import stored_image_response

PAGE_SIZE = 60
FILTERS = ("label", "split", "has_mask", "defect_class")


def image_grid(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id)
    filters = {name: request.GET.get(name, "") for name in FILTERS}
    page = Paginator(image_list(project=project, **filters), PAGE_SIZE).get_page(request.GET.get("page"))
    query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
    context = {
        "project": project,
        "page": page,
        "filters": filters,
        "query": query,
        "labels": Label.choices,
        "splits": Split.choices,
        "defect_classes": project.defect_classes.all(),
        "bulk_actions": BULK_ACTIONS,
        "can_edit_data": role_allows(role, Action.EDIT_DATA),
        "thumbnails_pending": any(i.thumbnail_state == ThumbnailState.PENDING for i in page),
    }
    template = "images/_grid.html" if request.htmx and not request.htmx.boosted else "images/grid.html"
    return render(request, template, context)


@require_POST
def image_bulk(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    form = BulkForm(request.POST)
    back = reverse("image_grid", kwargs={"project_id": project.public_id}) + "?" + request.POST.get("query", "")
    if not form.is_valid():
        messages.error(request, "Select images and an action.")
        return redirect(back)
    action, ids = form.cleaned_data["action"], form.cleaned_data["image_ids"]
    kind, _, value = action.partition("_")
    if kind == "label":
        count = services.images_set_label(project=project, image_ids=ids, label=value)
    elif kind == "split":
        count = services.images_set_split(project=project, image_ids=ids, split=value)
    else:
        count = services.images_delete(project=project, image_ids=ids)
    messages.success(request, f"{BULK_ACTIONS[action]}: {count} image(s).")
    return redirect(back)


@require_POST
def splits_rebalance_view(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    moved = splits_rebalance(project_id=project.id)
    messages.success(request, f"Rebalanced automatic splits: {moved} image(s) moved.")
    return redirect("project_detail", project_id=project.public_id)


def image_upload(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """GET: the drop zone. POST: takes the files in and answers with one result line per file."""
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    if request.method != "POST":
        return render(request, "images/upload.html", {"project": project})
    report = uploads_ingest(project=project, user=request.user, uploads=request.FILES.getlist("files"))
    template = "images/_upload_results.html" if request.htmx else "images/upload.html"
    return render(request, template, {"project": project, "report": report})


def image_detail(request: HttpRequest, project_id: uuid.UUID, image_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id)
    image = get_object_or_404(Image, public_id=image_id, project=project)
    form = ImageEditForm(request.POST or None, initial={"label": image.label, "split": image.split})
    if request.method == "POST":
        project_for(request.user, project_id, Action.EDIT_DATA)
        if form.is_valid():
            try:
                services.images_set_label(project=project, image_ids=[image.id], label=form.cleaned_data["label"])
                if form.cleaned_data["split"] != image.split:
                    services.images_set_split(project=project, image_ids=[image.id], split=form.cleaned_data["split"])
            except ValidationError as exc:
                messages.error(request, " ".join(exc.messages))
            else:
                messages.success(request, "Saved.")
            return redirect("image_detail", project_id=project.public_id, image_id=image.public_id)
    annotations = image.annotations.select_related("defect_class", "author")
    neighbours = Image.objects.filter(project=project)
    context = {
        "project": project,
        "image": image,
        "form": form,
        "annotations": annotations,
        "can_edit_data": role_allows(role, Action.EDIT_DATA),
        "previous": neighbours.filter(id__gt=image.id).order_by("id").first(),
        "next": neighbours.filter(id__lt=image.id).order_by("-id").first(),
    }
    return render(request, "images/detail.html", context)


def image_file(request: HttpRequest, project_id: uuid.UUID, image_id: uuid.UUID, kind: str) -> FileResponse:
    """The original or its thumbnail, to members only, never as anything but an image."""
    project, _ = project_for(request.user, project_id)
    image = get_object_or_404(Image, public_id=image_id, project=project)
    name = image.file.name if kind == "original" else image.thumbnail.name
    return stored_image_response(name)


def annotation_mask(request: HttpRequest, project_id: uuid.UUID, annotation_id: int) -> FileResponse:
    project, _ = project_for(request.user, project_id)
    annotation = get_object_or_404(Annotation, id=annotation_id, image__project=project)
    return stored_image_response(annotation.mask.name)
