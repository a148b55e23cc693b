"""Stored files (originals, thumbnails, masks, model artifacts) through Django's default storage, so a local
folder and an S3-compatible bucket behave the same."""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, default_storage
from django.db import transaction

log = logging.getLogger(__name__)

# What a storage raises when it cannot do its work: a local folder raises OSError, while S3 raises botocore's own
# errors (an unreachable endpoint, a refused request), which are not OSErrors.
STORAGE_ERRORS = (OSError, BotoCoreError, ClientError)


def stored_file_write(name: str, data: bytes) -> str:
    """Writes `data` under `name` (replacing an older file of that name) and returns the stored name."""
    if default_storage.exists(name):
        default_storage.delete(name)
    return default_storage.save(name, ContentFile(data))


def stored_file_put(name: str, data: bytes) -> str:
    """Writes bytes under a name made from their content (their hash), and returns the name they are stored under.

    Writers racing on one such name hold the same bytes, so nothing is ever deleted to make room: on a local disk
    each writes a temporary file and renames it into place (a reader never sees half a file, and the last rename
    leaves the same bytes). A bucket's object appears whole; one already there is kept, and a storage that picks
    another name for a racing duplicate returns that name: that copy, and only that, is the caller's to remove."""
    if isinstance(default_storage, FileSystemStorage):
        path = Path(default_storage.path(name))
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.chmod(temporary, default_storage.file_permissions_mode or 0o644)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        return name
    if default_storage.exists(name):
        return name
    return default_storage.save(name, ContentFile(data))


def stored_file_read(name: str) -> bytes:
    with default_storage.open(name, "rb") as handle:
        return handle.read()


def stored_files_delete(names: Iterable[str]) -> None:
    """Best effort: the rows are gone (or never were), so a file left behind is logged, never raised; on S3 an
    outage would otherwise fail a request whose transaction had already committed."""
    for name in names:
        try:
            default_storage.delete(name)
        except STORAGE_ERRORS:
            log.warning("could not delete stored file %s", name, exc_info=True)


def stored_folder_delete(prefix: str) -> None:
    """Deletes a stored folder and everything below it, best effort like stored_files_delete.

    Folders exist only on a local disk. In a bucket (the only other storage settings allow) `prefix` is the start
    of keys: deleting them one request per object would take minutes for a large project, inside the request that
    deleted it, so they go 1,000 keys per DeleteObjects request."""
    prefix = prefix.strip("/")
    if not prefix:
        raise ValueError("refusing to delete the whole storage")
    try:
        if isinstance(default_storage, FileSystemStorage):
            shutil.rmtree(default_storage.path(prefix), ignore_errors=True)  # .path() exists for local files only
            return
        keys = default_storage.bucket.objects.filter(Prefix=posixpath.join(default_storage.location, prefix) + "/")
        for response in keys.delete():
            for error in response.get("Errors", []):
                log.warning("could not delete stored file %s: %s", error.get("Key"), error.get("Message"))
    except STORAGE_ERRORS:
        log.warning("could not delete stored folder %s", prefix, exc_info=True)


def stored_files_delete_on_commit(names: Iterable[str]) -> None:
    """Deletes files only once the rows that pointed at them are gone for good (a rollback keeps both)."""
    names = [n for n in names if n]
    transaction.on_commit(lambda: stored_files_delete(names))
