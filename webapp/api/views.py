"""The HTTP API (JSON, bearer tokens) and its two pages: the project's API docs and its tokens."""

from __future__ import annotations

import io
import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import ValidationError
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.api import docs, services
from webapp.api.decorators import api_endpoint
from webapp.api.errors import ApiError
from webapp.api.forms import TokenForm
from webapp.api.models import ApiToken, BatchJob, Scope
from webapp.api.openapi import openapi_schema
from webapp.api.payloads import job_payload, prediction_payload, project_payload, version_payload
from webapp.api.services import NO_IMAGE, Upload, image_size_check
from webapp.dashboard import bundles
from webapp.inference.models import Prediction
from webapp.inference.services import active_version
from webapp.projects.access import Action, project_for
from webapp.serving import stored_image_response
from webapp.training.models import ModelVersion

RAW_IMAGE_TYPES = ("image/", "application/octet-stream")


def _include_maps(request: HttpRequest) -> bool:
    return "maps" in request.GET.get("include", "").split(",")


def _uploads(request: HttpRequest, fields: tuple[str, ...]) -> list[Upload]:
    """The images of a request: multipart files under `fields`, or the whole body when it is an image type."""
    if request.content_type.startswith(RAW_IMAGE_TYPES):
        name = request.GET.get("name", "")
        image_size_check(name=name or "body", size=int(request.META.get("CONTENT_LENGTH") or 0))
        # request.read, not request.body: the body limit for forms (DATA_UPLOAD_MAX_MEMORY_SIZE) is not ours.
        data = request.read(settings.KENSA_MAX_IMAGE_BYTES + 1)
        image_size_check(name=name or "body", size=len(data))
        return [Upload(name=name, size=len(data), file=io.BytesIO(data))] if data else []
    return [Upload(name=f.name, size=f.size, file=f) for field in fields for f in request.FILES.getlist(field)]


@api_endpoint(methods=("GET",), scope=Scope.READ)
def projects_list(request: HttpRequest, *, token: ApiToken, project) -> JsonResponse:
    return JsonResponse({"projects": [project_payload(request, project, active_version(project=project))]})


@api_endpoint(methods=("GET",), scope=Scope.READ)
def versions_list(request: HttpRequest, *, token: ApiToken, project) -> JsonResponse:
    return JsonResponse({"versions": [version_payload(v) for v in project.model_versions.all()]})


@api_endpoint(methods=("GET",), scope=Scope.READ)
def version_bundle(request: HttpRequest, *, token: ApiToken, project, version_id: uuid.UUID) -> HttpResponse:
    version = ModelVersion.objects.filter(public_id=version_id, project=project).select_related("project").first()
    if version is None:
        raise ApiError(404, "not_found", bundles.NO_SUCH_VERSION)
    try:
        return bundles.bundle_response(version=version)
    except bundles.NotExportable as exc:
        raise ApiError(404, "not_exportable", str(exc)) from None


@api_endpoint(methods=("POST",), scope=Scope.PREDICT)
def predict(request: HttpRequest, *, token: ApiToken, project) -> JsonResponse:
    uploads = _uploads(request, ("image",))
    if len(uploads) != 1:
        raise ApiError(400, "no_image", NO_IMAGE)
    upload = uploads[0]
    image_size_check(name=upload.name, size=upload.size)
    result = services.api_predict(project=project, data=upload.file.read(), name=upload.name)
    threshold = result.prediction.model_version.threshold
    boxes = [services.box_payload(box) for box in result.boxes]
    return JsonResponse(
        prediction_payload(
            request, result.prediction, boxes=boxes, threshold=threshold, include_maps=_include_maps(request)
        )
    )


@api_endpoint(methods=("POST",), scope=Scope.PREDICT)
def batch_create(request: HttpRequest, *, token: ApiToken, project) -> JsonResponse:
    job = services.batch_job_submit(project=project, token=token, uploads=_uploads(request, ("images", "image")))
    payload = job_payload(request, job, include_maps=False)
    response = JsonResponse(payload, status=202)
    response["Location"] = payload["url"]
    return response


@api_endpoint(methods=("GET",), scope=Scope.PREDICT)
def batch_detail(request: HttpRequest, *, token: ApiToken, project, job_id: uuid.UUID) -> JsonResponse:
    job = BatchJob.objects.select_related("project", "model_version").filter(public_id=job_id, project=project).first()
    if job is None:
        raise ApiError(404, "not_found", services.NO_SUCH_JOB)
    return JsonResponse(job_payload(request, job, include_maps=_include_maps(request)))


def _prediction_png(project, prediction_id: int, field: str) -> FileResponse:
    prediction = Prediction.objects.filter(id=prediction_id, model_version__project=project).first()
    if prediction is None:
        raise ApiError(404, "not_found", services.NO_SUCH_PREDICTION)
    # Served like every stored file (server-decided type, nosniff, sandboxing CSP); a prediction stored without
    # its maps, or whose file is gone, is a JSON 404 rather than a 500 from opening an empty file field.
    try:
        return stored_image_response(getattr(prediction, field).name)
    except Http404:
        raise ApiError(404, "not_found", services.NO_SUCH_PREDICTION) from None


@api_endpoint(methods=("GET",), scope=None)
def prediction_map(request: HttpRequest, *, token: ApiToken, project, prediction_id: int) -> FileResponse:
    return _prediction_png(project, prediction_id, "anomaly_map")


@api_endpoint(methods=("GET",), scope=None)
def prediction_mask(request: HttpRequest, *, token: ApiToken, project, prediction_id: int) -> FileResponse:
    return _prediction_png(project, prediction_id, "predicted_mask")


@login_not_required
@require_GET
def openapi_json(request: HttpRequest) -> JsonResponse:
    return JsonResponse(openapi_schema(server_url=request.build_absolute_uri("/api/v1")))


def api_docs(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    project, _ = project_for(request.user, project_id)
    return render(request, "api/docs.html", docs.docs_context(request=request, project=project))


def api_tokens(request: HttpRequest, project_id: uuid.UUID) -> HttpResponse:
    """GET: the project's tokens. POST: a new one, whose secret this response shows once."""
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    form = TokenForm(request.POST or None)
    secret = None
    if request.method == "POST" and form.is_valid():
        try:
            token, secret = services.api_token_create(project=project, created_by=request.user, **form.cleaned_data)
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            form = TokenForm()
            messages.success(request, f"Created token “{token.name}”. Copy it now: it is not shown again.")
    context = {"project": project, "form": form, "secret": secret, "tokens": project.api_tokens.all()}
    response = render(request, "api/tokens.html", context)
    if secret:
        response["Cache-Control"] = "no-store"  # the one page that holds the secret stays out of caches
    return response


@require_POST
def api_token_revoke(request: HttpRequest, project_id: uuid.UUID, token_id: int) -> HttpResponse:
    project, _ = project_for(request.user, project_id, Action.MANAGE)
    token = get_object_or_404(ApiToken, id=token_id, project=project)
    services.api_token_revoke(token=token)
    messages.success(request, f"Revoked token “{token.name}”.")
    return redirect("api_tokens", project_id=project.public_id)
