"""The HTTP API's rules: tokens (create, revoke, authenticate, check), single predictions and batch jobs.

Models run only through webapp.inference.services; this module adds who may ask and what the answer looks like.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from webapp.api.errors import ApiError
from webapp.api.models import ApiToken, BatchItem, BatchJob, JobStatus, Scope
from webapp.images.intake.decoding import RejectedFile
from webapp.inference.models import Purpose
from webapp.inference.services import NO_ACTIVE_MODEL, Box, InferenceResult, active_version, predict_bytes
from webapp.projects.models import Project
from webapp.storage import stored_file_read, stored_file_write, stored_files_delete
from webapp.training.models import ModelVersion

log = logging.getLogger(__name__)

TOKEN_PREFIX = "kensa_"
MISSING_TOKEN = "Send an API token in the Authorization header: 'Authorization: Bearer <token>'."
INVALID_TOKEN = "The API token is not valid (mistyped, revoked, or for another Kensa server)."
NO_SUCH_PROJECT = "No such project."
WRONG_SCOPE = "This token lacks the '{scope}' scope; create a token with it on the project's API tokens page."
TOKEN_NAME_REQUIRED = "Give the token a name, so you can tell tokens apart later."
TOKEN_SCOPES_REQUIRED = "Choose at least one scope: {choices}."
NO_IMAGE = (
    "Send an image: a multipart field named 'image' (or 'images' for a batch), or a raw body with an image/* type."
)
IMAGE_TOO_LARGE = "The image {name!r} is {size:,} bytes, more than the limit of {limit:,} bytes."
BATCH_TOO_LARGE = "A batch holds at most {limit} images; this one has {count}."
BATCH_FAILED = "The batch stopped on an unexpected error; the images predicted so far are kept. Send the rest again."
NO_SUCH_JOB = "No such batch job in this project."
NO_SUCH_PREDICTION = "No such prediction in this project."

BATCH_MAX_IMAGES = 500
BATCH_WORKER_LOST = (
    "The batch stopped {attempts} times because its worker was lost (stopped, restarted or out of memory); "
    "the images predicted so far are kept. Send the rest again."
)
# A running job beats once per image; this long without a beat means its worker is gone (an image takes seconds).
BATCH_STALE_AFTER = timedelta(minutes=5)
# A queued job no worker took for this long is sent again (its message may have died with a restarted Redis).
BATCH_REQUEUE_AFTER = timedelta(minutes=2)
# Items already predicted are kept, so a lost job resumes where it stopped, up to this many claims in all.
BATCH_MAX_ATTEMPTS = 3
# last_used_at is a hint for people, not an audit: one write a minute per token spares the database under load.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def _secret_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_create(
    *, project: Project, name: str, scopes: Iterable[str], created_by: AbstractBaseUser | None
) -> tuple[ApiToken, str]:
    """A new token and its secret, which is returned this once and never stored."""
    name = name.strip()
    scopes = sorted(set(scopes))
    if not name:
        raise ValidationError(TOKEN_NAME_REQUIRED)
    if not scopes or not set(scopes) <= set(Scope.values):
        raise ValidationError(TOKEN_SCOPES_REQUIRED.format(choices=", ".join(Scope.values)))
    key_id = secrets.token_hex(6)
    secret = f"{TOKEN_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    token = ApiToken(
        project=project,
        name=name,
        scopes=scopes,
        key_id=key_id,
        secret_sha256=_secret_digest(secret),
        created_by=created_by,
    )
    token.full_clean()
    token.save()
    return token, secret


def api_token_revoke(*, token: ApiToken) -> None:
    ApiToken.objects.filter(id=token.id, revoked_at=None).update(revoked_at=timezone.now())


def api_token_authenticate(*, authorization: str) -> ApiToken:
    """The live token named by an `Authorization: Bearer ...` header value. Raises ApiError(401)."""
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value:
        raise ApiError(401, "missing_token", MISSING_TOKEN)
    key_id, _, rest = value.removeprefix(TOKEN_PREFIX).partition("_")
    token = ApiToken.objects.select_related("project").filter(key_id=key_id).first() if rest else None
    # Compared in constant time, and compared even when no row matched, so timing tells nothing about key ids.
    expected = token.secret_sha256 if token else "0" * 64
    if not hmac.compare_digest(expected, _secret_digest(value)) or token is None or token.is_revoked:
        raise ApiError(401, "invalid_token", INVALID_TOKEN)
    now = timezone.now()
    stale = Q(last_used_at=None) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ApiToken.objects.filter(stale, id=token.id).update(last_used_at=now)
    return token


def api_token_project(*, token: ApiToken, project_id: str | None, scope: str | None) -> Project:
    """The project a request may touch: the token's own (404 for any other, as strangers get in the UI), and
    only with the scope the endpoint needs (403). `scope=None` accepts any scope."""
    if project_id is not None and str(token.project.public_id) != str(project_id):
        raise ApiError(404, "not_found", NO_SUCH_PROJECT)
    if scope is not None and scope not in token.scopes:
        raise ApiError(403, "wrong_scope", WRONG_SCOPE.format(scope=str(scope)))
    return token.project


def image_size_check(*, name: str, size: int) -> None:
    limit = settings.KENSA_MAX_IMAGE_BYTES
    if size > limit:
        raise ApiError(413, "too_large", IMAGE_TOO_LARGE.format(name=name, size=size, limit=limit))


def _active_version_or_409(project: Project) -> ModelVersion:
    version = active_version(project=project)
    if version is None:
        raise ApiError(409, "no_active_model", NO_ACTIVE_MODEL)
    return version


def api_predict(*, project: Project, data: bytes, name: str) -> InferenceResult:
    """One image through the project's active model version, stored as an API prediction."""
    version = _active_version_or_409(project)
    try:
        return predict_bytes(version=version, data=data, purpose=Purpose.API, name=name)
    except RejectedFile as exc:
        raise ApiError(400, "bad_image", str(exc)) from None


@dataclass(frozen=True)
class Upload:
    name: str
    size: int
    file: BinaryIO


def batch_job_submit(*, project: Project, token: ApiToken | None, uploads: list[Upload]) -> BatchJob:
    """Stages the images and queues the job on the default queue. Images are checked by the worker: a bad one
    becomes an error on its item and does not fail the batch."""
    if not uploads:
        raise ApiError(400, "no_image", NO_IMAGE)
    if len(uploads) > BATCH_MAX_IMAGES:
        raise ApiError(413, "too_many_images", BATCH_TOO_LARGE.format(limit=BATCH_MAX_IMAGES, count=len(uploads)))
    for upload in uploads:
        image_size_check(name=upload.name, size=upload.size)
    version = _active_version_or_409(project)
    staged: list[str] = []
    try:
        with transaction.atomic():
            job = BatchJob.objects.create(project=project, model_version=version, token=token, total=len(uploads))
            prefix = f"projects/{project.public_id}/batches/{job.public_id}"
            for position, upload in enumerate(uploads):
                staged.append(stored_file_write(f"{prefix}/{position:05d}", upload.file.read()))
                BatchItem.objects.create(
                    job=job, position=position, input_name=upload.name[:255], staged_file=staged[-1]
                )
            transaction.on_commit(lambda: _enqueue(job.id))
    except BaseException:
        stored_files_delete(staged)
        raise
    return job


def _enqueue(job_id: int) -> None:
    from webapp.api.tasks import batch_job_run_task

    BatchJob.objects.filter(id=job_id).update(enqueued_at=timezone.now())
    batch_job_run_task.delay(job_id)


def batch_job_run(*, job_id: int) -> bool:
    """Claims a queued job and predicts its unfinished items in order, counting progress as it goes.
    Returns False when the job was gone or already claimed."""
    now = timezone.now()
    claimed = BatchJob.objects.filter(id=job_id, status=JobStatus.QUEUED).update(
        status=JobStatus.RUNNING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1
    )
    if claimed != 1:
        return False
    job = BatchJob.objects.select_related("model_version").get(id=job_id)
    BatchJob.objects.filter(id=job.id).update(threshold=job.model_version.threshold)
    try:
        for item in job.items.filter(prediction=None, error=""):
            _batch_item_predict(item=item, version=job.model_version)
            BatchJob.objects.filter(id=job.id).update(
                done=job.items.filter(Q(prediction__isnull=False) | ~Q(error="")).count(),
                heartbeat_at=timezone.now(),
            )
    except Exception:
        log.exception("batch job %s failed", job.public_id)
        BatchJob.objects.filter(id=job.id).update(
            status=JobStatus.FAILED, error=BATCH_FAILED, finished_at=timezone.now()
        )
        return True
    BatchJob.objects.filter(id=job.id).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now())
    return True


def batch_jobs_reap(*, now=None) -> dict[str, int]:
    """Jobs whose worker went silent go back to the queue and resume where they stopped, up to
    BATCH_MAX_ATTEMPTS claims, then fail with their staged images removed; queued jobs that no worker picked up
    are sent again. Called periodically by Celery beat."""
    now = now or timezone.now()
    result = {"resumed": 0, "failed": 0, "requeued": 0}
    # Read before resuming anything, so a job sent again below is not counted (or sent) twice.
    forgotten = list(
        BatchJob.objects.filter(status=JobStatus.QUEUED, created_at__lt=now - BATCH_REQUEUE_AFTER)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lt=now - BATCH_REQUEUE_AFTER))
        .values_list("id", flat=True)
    )
    for job in BatchJob.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=now - BATCH_STALE_AFTER):
        # Conditional on the beat read above: a worker that was only slow and beats again keeps its job.
        still_stale = BatchJob.objects.filter(id=job.id, status=JobStatus.RUNNING, heartbeat_at=job.heartbeat_at)
        if job.attempts < BATCH_MAX_ATTEMPTS:
            if still_stale.update(status=JobStatus.QUEUED):
                log.warning("batch job %s: no heartbeat since %s, sent again", job.public_id, job.heartbeat_at)
                transaction.on_commit(lambda job_id=job.id: _enqueue(job_id))
                result["resumed"] += 1
        elif still_stale.update(
            status=JobStatus.FAILED, error=BATCH_WORKER_LOST.format(attempts=job.attempts), finished_at=now
        ):
            log.warning("batch job %s failed after %s lost workers", job.public_id, job.attempts)
            _batch_unfinished_items_drop(job)
            result["failed"] += 1
    for job_id in forgotten:
        transaction.on_commit(lambda job_id=job_id: _enqueue(job_id))
        result["requeued"] += 1
    return result


def _batch_unfinished_items_drop(job: BatchJob) -> None:
    items = job.items.filter(prediction=None, error="")
    staged = [name for name in items.values_list("staged_file", flat=True) if name]
    items.update(staged_file="", error="Not predicted: the batch stopped before this image.")
    BatchJob.objects.filter(id=job.id).update(done=job.total)
    stored_files_delete(staged)


def _batch_item_predict(*, item: BatchItem, version: ModelVersion) -> None:
    staged = item.staged_file
    try:
        result = predict_bytes(
            version=version, data=stored_file_read(staged), purpose=Purpose.BATCH, name=item.input_name
        )
    except RejectedFile as exc:
        item.error = str(exc)[:400]
    else:
        item.prediction = result.prediction
        item.boxes = [box_payload(box) for box in result.boxes]
    # The prediction keeps its own copy of the input (predict_bytes), so the staged one can go.
    item.staged_file = ""
    item.save(update_fields=["prediction", "boxes", "error", "staged_file"])
    stored_files_delete([staged])


def box_payload(box: Box) -> dict:
    return {"x0": box.x0, "y0": box.y0, "x1": box.x1, "y1": box.y1, "area": box.area}
