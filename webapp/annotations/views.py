from __future__ import annotations

import json
import re
import uuid

from django.core.exceptions import ValidationError
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.annotations import selectors, services, transfer
from webapp.annotations.formats import FormatError, mask_from_png
from webapp.annotations.forms import ImportForm, SaveForm
from webapp.images.models import Image
from webapp.projects.access import Action, project_for, role_allows
from webapp.serving import stored_file_headers

UNREADABLE_MASK = "The mask for class {id} is not a PNG Kensa can read."
BOXES_TOO_LONG = "The boxes of class {id} are {length:,} characters of JSON; at most {limit:,} are accepted."
BOXES_NOT_A_LIST = "The boxes of class {id} must be a JSON list of [x0, y0, x1, y1] lists."
# Room for MAX_BOXES_PER_CLASS boxes of five-digit coordinates with generous spacing.
MAX_BOXES_CHARS = services.MAX_BOXES_PER_CLASS * 64


@require_GET
def annotation_editor(request: HttpRequest, project_id: uuid.UUID, image_id: uuid.UUID) -> HttpResponse:
    project, role = project_for(request.user, project_id)
    image = get_object_or_404(Image.objects.select_related("project"), public_id=image_id, project=project)
    layers = selectors.editor_layers(image=image)
    neighbours = selectors.editor_neighbours(image=image)
    can_edit = role_allows(role, Action.ANNOTATE)

    def editor_url(other: Image | None) -> str:
        return reverse("annotation_editor", args=[project.public_id, other.public_id]) if other else ""

    config = {
        "imageUrl": reverse("image_original", args=[project.public_id, image.public_id]),
        "saveUrl": reverse("annotation_save", args=[project.public_id, image.public_id]) if can_edit else "",
        "width": image.width,
        "height": image.height,
        "version": image.annotation_version,
        "label": image.label,
        "layers": layers,
        "canEdit": can_edit,
        "nav": {key: editor_url(neighbours[key]) for key in ("previous", "next", "next_unlabelled")},
    }
    context = {
        "project": project,
        "image": image,
        "layers": layers,
        "can_edit_data": can_edit,
        "editor_config": config,
        **neighbours,
    }
    return render(request, "annotations/editor.html", context)


@require_POST
def annotation_save(request: HttpRequest, project_id: uuid.UUID, image_id: uuid.UUID) -> HttpResponse:
    """The editor's save. Multipart: version, label, class_ids, and per class mask_<id> (PNG at full resolution;
    absent for no mask) and boxes_<id> (JSON). 200 with the new version; 409 when a newer save exists."""
    project, _ = project_for(request.user, project_id, Action.ANNOTATE)
    image = get_object_or_404(Image.objects.select_related("project"), public_id=image_id, project=project)
    form = SaveForm(request.POST)
    if not form.is_valid():
        return _plain(" ".join(m for errors in form.errors.values() for m in errors), 400)
    try:
        class_ids = form.cleaned_data["class_ids"]
        services.layer_classes_check(image=image, class_ids=class_ids)  # before any mask is decoded
        layers = [_layer_from_request(request, image, class_id) for class_id in class_ids]
        version = services.annotation_save(
            image=image,
            user=request.user,
            expected_version=form.cleaned_data["version"],
            label=form.cleaned_data["label"],
            layers=layers,
        )
    except services.AnnotationConflict as exc:
        return _plain(str(exc), 409)
    except ValidationError as exc:
        return _plain(" ".join(exc.messages), 400)
    return JsonResponse({"version": version, "label": image.label})


def _layer_from_request(request: HttpRequest, image: Image, class_id: int) -> services.LayerEdit:
    upload = request.FILES.get(f"mask_{class_id}")
    mask = None
    if upload is not None:
        try:
            mask = mask_from_png(upload.read(), size=(image.width, image.height))
        except FormatError as exc:
            raise ValidationError(str(exc)) from None
        except Exception:
            raise ValidationError(UNREADABLE_MASK.format(id=class_id)) from None
    boxes = _boxes_from_json(request.POST.get(f"boxes_{class_id}") or "[]", class_id)
    return services.LayerEdit(defect_class_id=class_id, mask=mask, boxes=boxes)


def _boxes_from_json(text: str, class_id: int) -> list:
    """The boxes' JSON parsed once its size and nesting are known to fit a list of boxes: a deeply nested
    document would exhaust the parser's recursion, a long one its time."""
    if len(text) > MAX_BOXES_CHARS:
        raise ValidationError(BOXES_TOO_LONG.format(id=class_id, length=len(text), limit=MAX_BOXES_CHARS))
    if _nesting_depth(text) > 2:
        raise ValidationError(BOXES_NOT_A_LIST.format(id=class_id))
    try:
        return json.loads(text)
    except ValueError:
        raise ValidationError(BOXES_NOT_A_LIST.format(id=class_id)) from None


def _nesting_depth(text: str) -> int:
    """Deepest bracket nesting (brackets inside strings count too: boxes hold numbers only)."""
    depth = deepest = 0
    for char in re.sub(r"[^\[\]{}]", "", text):
        depth += 1 if char in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _plain(text: str, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def dataset_transfer(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """GET: export links and the import form. POST: imports a zip and shows one line per image."""
    project, role = project_for(request.user, project_id)
    form = ImportForm()
    report = None
    if request.method == "POST":
        project_for(request.user, project_id, Action.EDIT_DATA)
        form = ImportForm(request.POST, request.FILES)
        if form.is_valid():
            archive = form.cleaned_data["archive"]
            report = transfer.dataset_import(
                project=project,
                user=request.user,
                fileobj=archive,
                archive_name=archive.name,
                fmt=form.cleaned_data["format"],
            )
    context = {
        "project": project,
        "form": form,
        "report": report,
        "formats": transfer.FORMATS,
        "can_edit_data": role_allows(role, Action.EDIT_DATA),
    }
    return render(request, "annotations/transfer.html", context)


@require_GET
def dataset_export(request: HttpRequest, project_id: uuid.UUID, fmt: str) -> FileResponse:
    project, _ = project_for(request.user, project_id)
    try:
        archive = transfer.dataset_export(project=project, fmt=fmt)
    except ValidationError as exc:
        return _plain(" ".join(exc.messages), 404)
    name = f"{project.name or 'kensa'}-{fmt}.zip".replace("/", "_").replace('"', "")
    response = FileResponse(archive, as_attachment=True, filename=name, content_type="application/zip")
    return stored_file_headers(response)
