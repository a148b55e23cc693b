"""Model artifacts in storage: a folder per run holding what the model's save() wrote (config.json + tensors).
Loading them back is inference's (webapp.inference.model_files)."""

from __future__ import annotations

from pathlib import Path

from webapp.storage import stored_file_write


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
