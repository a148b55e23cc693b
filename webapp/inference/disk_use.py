"""How much storage a project takes, by kind, for its owners (shown on the project's settings page).

Everything of a project lives under projects/<public id>/ in the default storage (local folder or S3 bucket): the
folder names say what each file is, so one walk (one listing per 1,000 keys on S3) sums it all."""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.core.files.storage import FileSystemStorage, default_storage

from webapp.projects.models import Project

# The label for each top-level folder; under runs/<run>/ predictions and kept inputs are "predictions".
KINDS = {"images": "Originals", "thumbs": "Thumbnails", "masks": "Masks", "batches": "Batch uploads waiting"}
PREDICTIONS = "Predictions (maps, masks, kept inputs)"
ARTIFACTS = "Model artifacts"
OTHER = "Other"
ORDER = ["Originals", "Thumbnails", "Masks", PREDICTIONS, ARTIFACTS, "Batch uploads waiting", OTHER]


@dataclass(frozen=True)
class DiskUse:
    kind: str
    files: int
    bytes: int


def file_kind(relative: str) -> str:
    """The kind of a file from its path below the project's folder."""
    parts = relative.split("/")
    if parts[0] == "runs" or parts[0].startswith("fake-"):  # runs/<run>/..., fake-v<n>/...: synthetic versions
        return PREDICTIONS if {"predictions", "inputs"} & set(parts[1:3]) else ARTIFACTS
    return KINDS.get(parts[0], OTHER)


def _stored_files(prefix: str):
    """(path below prefix, size) of every stored file under `prefix`."""
    if isinstance(default_storage, FileSystemStorage):
        root = default_storage.path(prefix)
        for folder, _, names in os.walk(root):
            for name in names:
                path = os.path.join(folder, name)
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:  # deleted while we walked
                    continue
                yield os.path.relpath(path, root).replace(os.sep, "/"), size
        return
    key_prefix = f"{default_storage.location}/{prefix}/".lstrip("/")
    for summary in default_storage.bucket.objects.filter(Prefix=key_prefix):
        yield summary.key[len(key_prefix) :], summary.size


def project_disk_use(*, project: Project) -> list[DiskUse]:
    """Files and bytes per kind, in a fixed order, kinds with nothing left out."""
    totals: dict[str, list[int]] = {}
    for relative, size in _stored_files(f"projects/{project.public_id}"):
        total = totals.setdefault(file_kind(relative), [0, 0])
        total[0] += 1
        total[1] += size
    return [DiskUse(kind=kind, files=totals[kind][0], bytes=totals[kind][1]) for kind in ORDER if kind in totals]
