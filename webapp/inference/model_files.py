"""A model version's files on this machine: fetched from storage (where training put them) into a local cache once,
for loading. Training writes them (webapp.training.artifacts); running a model only reads them."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings

from webapp.storage import stored_file_read

if TYPE_CHECKING:  # type hints only: inference does not import training at run time (tests/webapp/test_layering.py)
    from webapp.training.models import ModelVersion


def artifact_local_dir(version: ModelVersion) -> Path:
    """A local folder with the version's model files, fetched from storage once per machine."""
    target = Path(settings.DATA_DIR) / "model-cache" / str(version.public_id)
    if (target / ".complete").exists():
        return target
    # Fetched into a folder of this call's own, then renamed into place in one step: processes loading the same
    # version at once (gunicorn workers after a start) never write into, or delete, a folder another one reads.
    partial = target.with_name(f"{target.name}.partial-{uuid.uuid4().hex}")
    try:
        partial.mkdir(parents=True)
        for name in version.artifact_files:
            destination = partial / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(stored_file_read(f"{version.artifact_prefix}/model/{name}"))
        (partial / ".complete").touch()
        try:
            partial.rename(target)
        except OSError:  # another process put its copy in place first, or an incomplete folder is in the way
            if not (target / ".complete").exists():
                shutil.rmtree(target, ignore_errors=True)
                partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target
