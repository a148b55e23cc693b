"""Takes images into a project: plain files, zip archives and folders (MVTec AD layout understood).

Each file is checked and stored on its own, so one bad file never sinks the batch; every file gets a result
line a person can read. Originals are stored byte for byte, named by SHA-256; duplicates are reported, not stored.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath

import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from PIL import Image as PILImage

from webapp.images.intake.archives import EMPTY_ARCHIVE, SafeZip
from webapp.images.intake.decoding import ImageInfo, RejectedFile, image_header, inspect_image
from webapp.images.intake.layout import Plan, PlannedImage, plan_layout
from webapp.images.models import Annotation, Image, Label, Source
from webapp.images.splits import SplitAssigner
from webapp.projects.models import Project
from webapp.projects.services import defect_class_get_or_create
from webapp.storage import stored_file_put, stored_file_write, stored_files_delete

log = logging.getLogger(__name__)

ADDED = "added"
DUPLICATE = "duplicate"
REJECTED = "rejected"

DUPLICATE_MESSAGE = "Already in this project (same content as {name})."
MASK_SIZE_MISMATCH = "Image added, but its mask is {mask_w}x{mask_h} while the image is {w}x{h}; mask ignored."
MASK_UNREADABLE = "Image added, but its mask could not be read; mask ignored."
ORPHAN_MASK = "Mask without a matching image in test/<defect>/; ignored."
ARCHIVE_SUFFIXES = {".zip"}


@dataclass
class FileResult:
    name: str
    status: str  # ADDED, DUPLICATE or REJECTED
    message: str = ""
    image: Image | None = None


@dataclass
class IntakeReport:
    results: list[FileResult] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def added(self) -> int:
        return self.count(ADDED)

    @property
    def duplicates(self) -> int:
        return self.count(DUPLICATE)

    @property
    def rejected(self) -> int:
        return self.count(REJECTED)

    def extend(self, other: IntakeReport) -> None:
        self.results.extend(other.results)


@dataclass
class IncomingFile:
    """One file to take in; `read` returns its bytes (lazy so folders and archives stream one file at a time)."""

    name: str
    read: Callable[[], bytes]
    planned: PlannedImage | None = None
    read_mask: Callable[[], bytes] | None = None


def _limits() -> dict:
    return {
        "max_pixels": settings.KENSA_MAX_IMAGE_PIXELS,
        "max_bytes": settings.KENSA_MAX_IMAGE_BYTES,
        "max_decoded_bytes": settings.KENSA_MAX_DECODED_BYTES,
    }


def images_ingest(
    *, project: Project, user: AbstractBaseUser | None, files: Iterable[IncomingFile], source: str = Source.UPLOAD
) -> IntakeReport:
    """Checks and stores each file; returns one result per file. Thumbnails are queued a chunk at a time as rows
    commit (a process that dies mid-upload leaves at most one chunk for the periodic check to send)."""
    from webapp.images.services import THUMBNAIL_CHUNK, thumbnails_queue, thumbnails_retry

    report = IntakeReport()
    assigner = SplitAssigner.for_project(project.id)
    added_ids: list[int] = []
    sent_again: dict[int, Image] = {}  # duplicates of earlier uploads still without a thumbnail
    for incoming in files:
        result = _ingest_one(project=project, user=user, incoming=incoming, source=source, assigner=assigner)
        report.results.append(result)
        if result.status == ADDED:
            added_ids.append(result.image.id)
            if len(added_ids) == THUMBNAIL_CHUNK:
                thumbnails_queue(image_ids=added_ids)
                added_ids = []
        elif result.status == DUPLICATE and result.image is not None:
            sent_again[result.image.id] = result.image
    thumbnails_queue(image_ids=added_ids)
    # Sending a file again is how a person asks for a missing preview (its first try may have died with a worker).
    added_now = {r.image.id for r in report.results if r.status == ADDED}
    thumbnails_retry(images=[image for image_id, image in sent_again.items() if image_id not in added_now])
    return report


def _ingest_one(*, project: Project, user, incoming: IncomingFile, source: str, assigner: SplitAssigner) -> FileResult:
    try:
        data = incoming.read()
        info = inspect_image(data, **_limits())
    except RejectedFile as exc:
        return FileResult(incoming.name, REJECTED, str(exc))
    sha = hashlib.sha256(data).hexdigest()
    existing = Image.objects.filter(project=project, sha256=sha).first()
    if existing:
        return FileResult(incoming.name, DUPLICATE, DUPLICATE_MESSAGE.format(name=existing.original_name), existing)

    planned = incoming.planned or PlannedImage(path=incoming.name)
    label = planned.label or Label.UNLABELLED
    if planned.split:
        split, automatic = planned.split, False
    elif planned.defect_class and label == Label.DEFECT:
        split, automatic = assigner.assign_defect(planned.defect_class), True
    else:
        split, automatic = assigner.assign(label), True
    # Write, then link: the row's unique (project, sha256) decides between parallel uploads of the same bytes.
    content_name = f"projects/{project.public_id}/images/{sha}{info.extension}"
    stored_name = stored_file_put(content_name, data)
    try:
        with transaction.atomic():
            image = Image.objects.create(
                project=project,
                sha256=sha,
                file=stored_name,
                original_name=PurePosixPath(incoming.name).name[:255],
                format=info.format,
                mode=info.mode,
                width=info.width,
                height=info.height,
                size_bytes=len(data),
                label=label,
                split=split,
                split_is_automatic=automatic,
                source=source,
                uploaded_by=user,
            )
            message = _attach_mask(image=image, info=info, planned=planned, incoming=incoming, user=user)
    except IntegrityError:
        # The same content was linked by a parallel upload a moment ago. The file under the content's name is the
        # one its row names (same bytes): never deleted here; only a copy the storage named otherwise is ours.
        stored_files_delete([stored_name] if stored_name != content_name else [])
        return FileResult(incoming.name, DUPLICATE, DUPLICATE_MESSAGE.format(name=incoming.name))
    except Exception:
        # Likewise: a parallel upload may be linking the content's name right now (the next upload of these bytes
        # writes it again anyway).
        stored_files_delete([stored_name] if stored_name != content_name else [])
        raise
    if automatic is False:
        assigner.record(label, split, defect_class=(planned.defect_class or "") if label == Label.DEFECT else "")
    return FileResult(incoming.name, ADDED, message, image)


def _attach_mask(*, image: Image, info: ImageInfo, planned: PlannedImage, incoming: IncomingFile, user) -> str:
    """Stores the imported mask as an annotation (0/255 PNG at full resolution). Returns a note, or ''."""
    if not planned.defect_class:
        return ""
    defect_class = defect_class_get_or_create(project=image.project, name=planned.defect_class)
    if incoming.read_mask is None:
        return ""
    try:
        data = incoming.read_mask()
        # Sized from its header: a mask of another size is refused before its pixels (any number) are decoded.
        mask_w, mask_h = image_header(data)[1]
        if (mask_w, mask_h) != (info.width, info.height):
            return MASK_SIZE_MISMATCH.format(mask_w=mask_w, mask_h=mask_h, w=info.width, h=info.height)
        with PILImage.open(io.BytesIO(data)) as mask_image:
            mask = np.asarray(mask_image.convert("L")) > 127
    except Exception:
        return MASK_UNREADABLE
    if not mask.any():
        return ""  # an empty mask says nothing about where the defect is
    from webapp.images.services import annotation_mask_png

    name = stored_file_write(
        f"projects/{image.project.public_id}/masks/{image.sha256}_{defect_class.id}.png", annotation_mask_png(mask)
    )
    Annotation.objects.create(image=image, defect_class=defect_class, mask=name, source=Source.IMPORT, author=user)
    return ""


def is_archive(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in ARCHIVE_SUFFIXES


def upload_archive_open(fileobj, *, max_members: int | None = None) -> SafeZip:
    """A zip from a person or a program, vetted with the configured limits. Raises RejectedFile."""
    return SafeZip(
        fileobj,
        max_member_bytes=settings.KENSA_MAX_IMAGE_BYTES,
        max_total_bytes=settings.KENSA_MAX_ARCHIVE_BYTES,
        max_members=max_members or settings.KENSA_MAX_ARCHIVE_MEMBERS,
    )


def archive_problem_results(archive: SafeZip, archive_name: str) -> list[FileResult]:
    """One rejected line per member the archive reader skipped (unsafe path, link, bomb...)."""
    return [
        FileResult(f"{archive_name}:{member.path}", REJECTED, member.problem)
        for member in archive.members
        if member.problem
    ]


def archive_ingest(*, project: Project, user, fileobj, archive_name: str, source: str = Source.UPLOAD) -> IntakeReport:
    """Takes in every image of a zip archive; MVTec AD layout gives labels, splits, classes and masks."""
    report = IntakeReport()
    try:
        archive = upload_archive_open(fileobj)
    except RejectedFile as exc:
        report.results.append(FileResult(archive_name, REJECTED, str(exc)))
        return report
    if not archive.members:
        # Nothing in it but folders and system junk: without this line the person would get no word at all.
        archive.close()
        report.results.append(FileResult(archive_name, REJECTED, EMPTY_ARCHIVE))
        return report
    try:
        report.results += archive_problem_results(archive, archive_name)
        plan = plan_layout(archive.readable_paths)
        files = _planned_files(plan, archive.read, prefix=f"{archive_name}:")
        report.extend(images_ingest(project=project, user=user, files=files, source=source))
    finally:
        archive.close()
    report.results += _orphan_results(plan, prefix=f"{archive_name}:")
    return report


def uploads_ingest(*, project: Project, user, uploads: Iterable) -> IntakeReport:
    """Files posted from the browser or the API: images and zip archives, in any mix."""
    report = IntakeReport()
    images: list[IncomingFile] = []
    for upload in uploads:
        if is_archive(upload.name):
            report.extend(archive_ingest(project=project, user=user, fileobj=upload, archive_name=upload.name))
        else:
            images.append(IncomingFile(name=upload.name, read=lambda u=upload: _read_upload(u)))
    if images:
        report.extend(images_ingest(project=project, user=user, files=images))
    return report


def _read_upload(upload) -> bytes:
    limit = settings.KENSA_MAX_IMAGE_BYTES
    if upload.size is not None and upload.size > limit:
        raise RejectedFile(f"The file is {upload.size:,} bytes, more than the limit of {limit:,} bytes.")
    upload.seek(0)
    return upload.read()


def folder_files(root: Path) -> Iterator[str]:
    """Relative paths of regular files under `root`, links skipped (they could point anywhere)."""
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        yield path.relative_to(root).as_posix()


def folder_ingest(*, project: Project, user, root: Path) -> IntakeReport:
    """Takes in a server-side folder (MVTec AD layout understood); reads one file at a time."""
    root = root.resolve()
    plan = plan_layout(list(folder_files(root)))
    files = _planned_files(plan, lambda path: (root / path).read_bytes())
    report = images_ingest(project=project, user=user, files=files, source=Source.IMPORT)
    report.results += _orphan_results(plan)
    return report


def _planned_files(plan: Plan, read: Callable[[str], bytes], *, prefix: str = "") -> list[IncomingFile]:
    """Lazy files for every planned image of an archive or folder, each with its mask reader if it has one."""
    return [
        IncomingFile(
            name=f"{prefix}{planned.path}",
            read=partial(read, planned.path),
            planned=planned,
            read_mask=partial(read, planned.mask_path) if planned.mask_path else None,
        )
        for planned in plan.images
    ]


def _orphan_results(plan: Plan, *, prefix: str = "") -> list[FileResult]:
    return [FileResult(f"{prefix}{orphan}", REJECTED, ORPHAN_MASK) for orphan in plan.orphan_masks]
