"""Model artifacts in storage: a folder per run holding what the model's save() wrote (config.json + tensors),
and a local cache for loading them back in a worker."""

from __future__ import annotations

import shutil
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
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for name in version.artifact_files:
        destination = partial / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(stored_file_read(f"{version.artifact_prefix}/model/{name}"))
    (partial / ".complete").touch()
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    return target
