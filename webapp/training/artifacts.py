"""Model artifacts in storage: a folder per run holding what the model's save() wrote (config.json + tensors),
and a local cache for loading them back in a worker."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from django.conf import settings

from webapp.storage import stored_file_read, stored_file_write


def artifact_prefix(run) -> str:
    return f"projects/{run.project.public_id}/runs/{run.public_id}"


def artifact_upload(model_dir: Path, prefix: str) -> list[str]:
    """Copies every file under `model_dir` to storage under `prefix/model/`; returns their relative names."""
    names = []
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(model_dir).as_posix()
        stored_file_write(f"{prefix}/model/{relative}", path.read_bytes())
        names.append(relative)
    return names


def artifact_local_dir(version) -> Path:
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
