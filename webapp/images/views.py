from __future__ import annotations

import uuid

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_POST

from webapp.annotations.services import GOOD_WITH_DRAWINGS
from webapp.dashboard.overlays import mask_rgba_png
from webapp.dashboard.selectors import latest_prediction_of
from webapp.images import bulk
from webapp.images.forms import SCOPE_FILTER, BulkForm, BulkUndoForm, ImageEditForm, bulk_actions
from webapp.images.intake.ingest import uploads_ingest
from webapp.images.intake.multipart import ForgivingMultipartHandler, upload_report_complete
from webapp.images.models import Annotation, Image, Label, Split, ThumbnailState
from webapp.images.selectors import image_list
from webapp.images.splits import splits_rebalance
from webapp.projects.access import Action, project_for, role_allows
from webapp.serving import png_response, stored_image_response
from webapp.storage import stored_file_read

PAGE_SIZE = 60
FILTERS = ("label", "split", "has_mask", "defect_class")
# The session remembers the user's last bulk change per project, so the grid can offer to undo it.
UNDO_SESSION_KEY = "images_bulk_undo"
FILTER_MOVED = (
    "The filter now matches {now} image(s), not the {expected} shown when you chose; nothing was changed. "
    "Check the images and apply again."
)


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
        "bulk_actions": bulk_actions(project.defect_classes.all()),
        "can_edit_data": role_allows(role, Action.EDIT_DATA),
        "thumbnails_pending": any(i.thumbnail_state == ThumbnailState.PENDING for i in page),
        "undo": request.session.get(UNDO_SESSION_KEY, {}).get(str(project.public_id)),
    }
    template = "images/_grid.html" if request.htmx and not request.htmx.boosted else "images/grid.html"
    return render(request, template, context)


@require_POST
def image_bulk(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """A bulk action on the ticked images, or on every image the grid's filter matches (scope "filter")."""
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    actions = bulk_actions(project.defect_classes.all())
    form = BulkForm(request.POST, defect_classes=project.defect_classes.all())
    query = request.POST.get("query", "")
    back = reverse("image_grid", kwargs={"project_id": project.public_id}) + "?" + query
    if not form.is_valid():
        messages.error(request, " ".join(e for errors in form.errors.values() for e in errors))
        return redirect(back)
    action = form.cleaned_data["action"]
    if form.cleaned_data["scope"] == SCOPE_FILTER:
        parsed = QueryDict(query)
        images = image_list(project=project, **{name: parsed.get(name, "") for name in FILTERS})
        expected, now = form.cleaned_data["expected_count"], images.count()
        if now != expected:
            messages.error(request, FILTER_MOVED.format(now=now, expected=expected))
            return redirect(back)
    else:
        images = form.cleaned_data["image_ids"]
    kind, _, value = action.partition("_")
    changes = {
        "label": lambda: bulk.images_label_change(project=project, images=images, label=value, user=request.user),
        "split": lambda: bulk.images_split_change(project=project, images=images, split=value, user=request.user),
        "class": lambda: bulk.images_defect_class_change(
            project=project, images=images, defect_class_id=int(value), user=request.user
        ),
    }
    try:
        if kind not in changes:
            count = bulk.images_bulk_delete(project=project, images=images, user=request.user)
            messages.success(request, f"{actions[action]}: {count} image(s).")
            return redirect(back)
        result = changes[kind]()
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect(back)
    messages.success(request, _bulk_message(actions[action], result))
    if result.entry is not None:
        undo = request.session.get(UNDO_SESSION_KEY, {})
        undo[str(project.public_id)] = {"entry": result.entry.id, "what": f"{actions[action]} ({result.changed})"}
        request.session[UNDO_SESSION_KEY] = undo
    return redirect(back)


def _bulk_message(what: str, result: bulk.BulkResult) -> str:
    text = f"{what}: {result.changed} image(s) changed."
    for reason, count in result.skipped.items():
        text += f" {count} image(s) {reason}."
    return text


@require_POST
def image_bulk_undo(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """Puts back what the user's last bulk change replaced."""
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    back = reverse("image_grid", kwargs={"project_id": project.public_id}) + "?" + request.POST.get("query", "")
    form = BulkUndoForm(request.POST)
    if not form.is_valid():
        messages.error(request, bulk.NOTHING_TO_UNDO)
        return redirect(back)
    try:
        result = bulk.bulk_change_undo(project=project, entry_id=form.cleaned_data["entry"], user=request.user)
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, _bulk_message("Undone", result))
    undo = request.session.get(UNDO_SESSION_KEY, {})
    if undo.pop(str(project.public_id), None) is not None:
        request.session[UNDO_SESSION_KEY] = undo
    return redirect(back)


@require_POST
def splits_rebalance_view(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    moved = splits_rebalance(project_id=project.id, user=request.user)
    messages.success(request, f"Rebalanced automatic splits: {moved} image(s) moved.")
    return redirect("project_detail", project_id=project.public_id)


@csrf_exempt  # checked by _image_upload below, once the forgiving reader is in place (it must read the body first)
def image_upload(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """GET: the drop zone. POST: takes the files in and answers with one result line per file, including files
    Django's own multipart reader would drop (see webapp.images.intake.multipart)."""
    request.upload_handlers = [ForgivingMultipartHandler(request)]
    return _image_upload(request, project_id)


@csrf_protect
def _image_upload(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.EDIT_DATA)
    if request.method != "POST":
        return render(request, "images/upload.html", {"project": project})
    report = uploads_ingest(project=project, user=request.user, uploads=request.FILES.getlist("files"))
    upload_report_complete(report, request)
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
                if form.cleaned_data["label"] != image.label:
                    result = bulk.images_label_change(
                        project=project, images=[image.id], label=form.cleaned_data["label"], user=request.user
                    )
                    if result.skipped:
                        raise ValidationError(GOOD_WITH_DRAWINGS)
                if form.cleaned_data["split"] != image.split:
                    bulk.images_split_change(
                        project=project, images=[image.id], split=form.cleaned_data["split"], user=request.user
                    )
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
        "prediction": latest_prediction_of(image=image),
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


def annotation_mask(request: HttpRequest, project_id: uuid.UUID, annotation_id: int) -> HttpResponse:
    """The stored 0/255 mask (the editor draws on it), or with `?overlay=1` an RGBA PNG in its class's colour to
    lie over the image."""
    project, _ = project_for(request.user, project_id)
    annotation = get_object_or_404(
        Annotation.objects.select_related("defect_class"), id=annotation_id, image__project=project
    )
    if request.GET.get("overlay") != "1":
        return stored_image_response(annotation.mask.name)
    colour = annotation.defect_class.colour.lstrip("#")
    try:
        data = mask_rgba_png(stored_file_read(annotation.mask.name), rgb=tuple(bytes.fromhex(colour)), fill_alpha=110)
    except (FileNotFoundError, OSError):
        raise Http404("File missing") from None
    return png_response(data)
