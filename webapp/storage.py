"""Stored files (originals, thumbnails, masks, model artifacts) through Django's default storage, so a local
folder and an S3-compatible bucket behave the same."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction

log = logging.getLogger(__name__)


def stored_file_write(name: str, data: bytes) -> str:
    """Writes `data` under `name` (replacing an older file of that name) and returns the stored name."""
    if default_storage.exists(name):
        default_storage.delete(name)
    return default_storage.save(name, ContentFile(data))


def stored_file_read(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()


def stored_files_delete(names: Iterable[str]) -> None:
    for name in names:
        try:
            default_storage.delete(name)
        except OSError:
            log.warning("could not delete stored file %s", name, exc_info=True)


def stored_files_delete_on_commit(names: Iterable[str]) -> None:
    """Deletes files only once the rows that pointed at them are gone for good (a rollback keeps both)."""
    names = [n for n in names if n]
    transaction.on_commit(lambda: stored_files_delete(names))
