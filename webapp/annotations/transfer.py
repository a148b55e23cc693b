"""Export a project's images and annotations as a zip in MVTec AD, COCO or Lookout for Vision form, and import
such a zip: images through the intake service (checks, duplicates, splits), annotations through annotation_save."""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import PurePosixPath

import numpy as np
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from PIL import Image as PILImage

from webapp.annotations.formats import (
    ClassDrawing,
    DatasetClass,
    DatasetItem,
    FormatError,
    safe_file_name,
    unique_names,
)
from webapp.annotations.formats.coco import (
    ANNOTATIONS_FILE,
    IMAGES_FOLDER,
    NO_ANNOTATIONS_FILE,
    coco_read,
    coco_write,
)
from webapp.annotations.formats.lookout import MANIFEST_SUFFIXES, NO_MANIFEST, lookout_read, lookout_write
from webapp.annotations.formats.mvtec import mvtec_write
from webapp.annotations.services import AnnotationConflict, LayerEdit, annotation_save
from webapp.images.intake.archives import SafeZip
from webapp.images.intake.decoding import RejectedFile
from webapp.images.intake.ingest import (
    ADDED,
    DUPLICATE,
    REJECTED,
    FileResult,
    IncomingFile,
    IntakeReport,
    archive_ingest,
    archive_problem_results,
    images_ingest,
    upload_archive_open,
)
from webapp.images.intake.layout import PlannedImage
from webapp.images.models import Annotation, Image, Label, Source
from webapp.projects.models import RESERVED_CLASS_NAME, DefectClass, Project, class_name_is_reserved
from webapp.projects.services import defect_class_create
from webapp.storage import stored_file_read

FORMATS = {"mvtec": "MVTec AD folders", "coco": "COCO JSON", "lookout": "Lookout for Vision manifest"}
UNKNOWN_FORMAT = "Unknown format {value!r}: use mvtec, coco or lookout."
ANNOTATIONS_NOT_APPLIED = "Image taken in, but its annotations were not: {reason}"
ANNOTATIONS_UPDATED = "Already in this project; its label and annotations were updated from the import."
MASK_SIZE_MISMATCH = "Image taken in, but its {name} mask is {mask_w}x{mask_h} while the image is {w}x{h}; ignored."
# Images are stored as they came (already compressed); text and masks are deflated.
_STORED = zipfile.ZIP_STORED
_DEFLATED = zipfile.ZIP_DEFLATED


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValidationError(UNKNOWN_FORMAT.format(value=fmt))


# --- export -----------------------------------------------------------------------------------------------------


def dataset_export(*, project: Project, fmt: str) -> tempfile.SpooledTemporaryFile:
    """A zip of the project's images and annotations in `fmt`, rewound, ready to stream."""
    _check_format(fmt)
    images = list(Image.objects.filter(project=project).order_by("id"))
    classes = [DatasetClass(c.name, c.colour) for c in DefectClass.objects.filter(project=project).order_by("id")]
    names = unique_names([_export_name(image) for image in images])
    folder = "" if fmt == "mvtec" else f"{IMAGES_FOLDER}/"
    items = _export_items(images, [folder + name for name in names])  # a generator: one image's masks at a time
    output = tempfile.SpooledTemporaryFile(max_size=64 * 1024 * 1024)  # noqa: SIM115 (the caller streams and closes it)
    with zipfile.ZipFile(output, "w", compression=_DEFLATED) as archive:
        if fmt == "mvtec":
            paths, extra = mvtec_write(items)
        elif fmt == "coco":
            document = coco_write(items, classes)
            paths, extra = [i["file_name"] for i in document["images"]], {ANNOTATIONS_FILE: json.dumps(document)}
        else:
            manifests, extra = lookout_write(items, classes)
            extra.update(manifests)
            paths = [folder + name for name in names]
        for image, path in zip(images, paths, strict=True):
            archive.writestr(path, stored_file_read(image.file.name), compress_type=_STORED)
        for path, data in extra.items():
            archive.writestr(path, data)
    output.seek(0)
    return output


def _export_name(image: Image) -> str:
    stored_suffix = PurePosixPath(image.file.name).suffix
    return safe_file_name(PurePosixPath(image.original_name).stem) + stored_suffix


def _export_items(images: list[Image], paths: list[str]) -> Iterator[DatasetItem]:
    by_image: dict[int, list[Annotation]] = {}
    for annotation in Annotation.objects.filter(image__in=images).select_related("defect_class").order_by("id"):
        by_image.setdefault(annotation.image_id, []).append(annotation)
    for image, path in zip(images, paths, strict=True):
        drawings = []
        for annotation in sorted(by_image.get(image.id, []), key=lambda a: a.defect_class_id):
            mask = None
            if annotation.mask:
                with PILImage.open(io.BytesIO(stored_file_read(annotation.mask.name))) as picture:
                    mask = np.asarray(picture.convert("L")) > 127
            drawings.append(ClassDrawing(annotation.defect_class.name, mask, [list(b) for b in annotation.boxes]))
        yield DatasetItem(path, image.width, image.height, image.label, image.split, drawings)


# --- import -----------------------------------------------------------------------------------------------------


def dataset_import(
    *, project: Project, user: AbstractBaseUser | None, fileobj, archive_name: str, fmt: str
) -> IntakeReport:
    """Takes in a zip in `fmt`; one result line per image (and per problem with the archive or its manifest)."""
    _check_format(fmt)
    if fmt == "mvtec":
        return archive_ingest(
            project=project, user=user, fileobj=fileobj, archive_name=archive_name, source=Source.IMPORT
        )
    report = IntakeReport()
    try:
        archive = upload_archive_open(fileobj)
    except RejectedFile as exc:
        report.results.append(FileResult(archive_name, REJECTED, str(exc)))
        return report
    try:
        report.results += archive_problem_results(archive, archive_name)
        try:
            items, classes = _read_annotations(archive, fmt)
        except (FormatError, RejectedFile, ValueError, OSError, PILImage.DecompressionBombError) as exc:
            report.results.append(FileResult(archive_name, REJECTED, str(exc)))
            return report
        reserved = _reserved_class_names(classes, items)
        if reserved:  # refused before anything is taken in, so renaming the class in the file and retrying is clean
            report.results += [FileResult(archive_name, REJECTED, RESERVED_CLASS_NAME.format(name=n)) for n in reserved]
            return report
        class_ids = _classes_ensure(project=project, classes=classes, items=items)
        files = [
            IncomingFile(
                name=f"{archive_name}:{item.path}",
                read=lambda p=item.path: archive.read(p),
                planned=PlannedImage(
                    path=item.path, label=item.label if item.label != Label.UNLABELLED else None, split=item.split
                ),
            )
            for item in items
        ]
        ingested = images_ingest(project=project, user=user, files=files, source=Source.IMPORT)
    finally:
        archive.close()
    for item, result in zip(items, ingested.results, strict=True):
        if result.image is not None and result.status in (ADDED, DUPLICATE):
            _annotations_apply(item=item, result=result, class_ids=class_ids, user=user)
    report.extend(ingested)
    return report


def _read_annotations(archive: SafeZip, fmt: str) -> tuple[list[DatasetItem], list[DatasetClass]]:
    paths = archive.readable_paths
    if fmt == "coco":
        candidates = [p for p in paths if PurePosixPath(p).name == ANNOTATIONS_FILE] or [
            p for p in paths if p.lower().endswith(".json")
        ]
        if not candidates:
            raise FormatError(NO_ANNOTATIONS_FILE)
        return coco_read(json.loads(archive.read(candidates[0])), paths)
    manifests = [p for p in paths if PurePosixPath(p).suffix.lower() in MANIFEST_SUFFIXES]
    if not manifests:
        raise FormatError(NO_MANIFEST)
    items: list[DatasetItem] = []
    classes: dict[str, DatasetClass] = {}
    for manifest in manifests:
        found, found_classes = lookout_read(manifest, archive.read(manifest).decode("utf-8"), paths, archive.read)
        items += found
        for defect_class in found_classes:
            classes.setdefault(defect_class.name, defect_class)
    return items, list(classes.values())


def _reserved_class_names(classes: list[DatasetClass], items: list[DatasetItem]) -> list[str]:
    names = {c.name for c in classes} | {d.class_name for item in items for d in item.drawings}
    return sorted(name for name in names if class_name_is_reserved(name))


def _classes_ensure(*, project: Project, classes: list[DatasetClass], items: list[DatasetItem]) -> dict[str, int]:
    """The project's class id for every class the import names, creating missing ones (with their colour)."""
    wanted = {c.name: c.colour for c in classes}
    for item in items:
        for drawing in item.drawings:
            wanted.setdefault(drawing.class_name, "")
    ids = {}
    for name, colour in wanted.items():
        existing = DefectClass.objects.filter(project=project, name=name).first()
        if existing is None:
            try:
                existing = defect_class_create(project=project, name=name, colour=colour)
            except ValidationError:  # a colour that is not #rrggbb: take the palette's
                existing = defect_class_create(project=project, name=name)
        ids[name] = existing.id
    return ids


def _annotations_apply(*, item: DatasetItem, result: FileResult, class_ids: dict[str, int], user) -> None:
    image = result.image
    layers, notes = [], []
    for drawing in item.drawings:
        try:  # decoded here, one image at a time, at the size the image really has
            mask = drawing.mask_for(width=image.width, height=image.height)
        except FormatError as exc:
            notes.append(str(exc))
            continue
        if mask is None and not drawing.boxes:
            continue  # a class of the file's colour map with no pixel on this image
        if mask is not None and mask.shape != (image.height, image.width):
            notes.append(
                MASK_SIZE_MISMATCH.format(
                    name=drawing.class_name, mask_w=mask.shape[1], mask_h=mask.shape[0], w=image.width, h=image.height
                )
            )
            continue
        layers.append(LayerEdit(class_ids[drawing.class_name], mask, drawing.boxes))
    if result.status == DUPLICATE and not layers and item.label == Label.UNLABELLED:
        return  # the import says nothing new about an image already here
    image.refresh_from_db(fields=["annotation_version", "label"])
    label = item.label
    if label == Label.UNLABELLED:  # the import only brings drawings: keep a person's label unless it was good
        label = Label.DEFECT if layers or image.label == Label.GOOD else image.label
    try:
        annotation_save(
            image=image,
            user=user,
            expected_version=image.annotation_version,
            label=label,
            layers=layers,
            source=Source.IMPORT,
        )
    except (ValidationError, AnnotationConflict) as exc:
        reason = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc)
        notes.append(ANNOTATIONS_NOT_APPLIED.format(reason=reason))
    else:
        if result.status == DUPLICATE:
            notes.insert(0, ANNOTATIONS_UPDATED)
    if notes:
        result.message = " ".join(filter(None, [result.message if result.status == ADDED else "", *notes]))
