"""Model bundles for download (the Model page and the API): ml.bundle's zip, with what only the app knows (the
operating threshold, metrics, class names, names and times), kept in storage under the version's artifact folder.

The ONNX graph depends only on the model's files, so it is exported once per version. The zip also holds the
threshold and the metrics, which change when a person saves a threshold: it is cached under a name made from its
contents, and an outdated one is replaced on the next download.
"""

from __future__ import annotations

import hashlib
import json
import threading

from django.core.files.storage import default_storage
from django.http import FileResponse
from django.utils.text import slugify

from ml.bundle import FORMAT_VERSION, RUNNER_SOURCE, BundleInfo, bundle_bytes, onnx_bytes
from ml.onnx_export import exportable
from webapp.inference.predictions import MAP_ENCODING, MAP_GAIN
from webapp.inference.services import PREDICT_MAX_SIDE, model_for_version, version_calibration
from webapp.serving import stored_file_headers
from webapp.storage import STORAGE_ERRORS, stored_file_read, stored_file_write, stored_files_delete
from webapp.training.models import ModelVersion

NOT_EXPORTABLE = "Models of the {family} family cannot be exported as a bundle."
NO_MODEL_FILES = "This model version has no stored model files to export."
NO_SUCH_VERSION = "No such model version in this project."
BUNDLE_FOLDER = "bundle"
GRAPH_FILE = "model.onnx"


class NotExportable(Exception):
    """The version cannot be exported (a family without an ONNX export, no stored model files); `str(exc)` says
    which in plain words."""


# One bundle is built at a time per process: two clicks on the same link share the first one's export.
_build_lock = threading.Lock()


def bundle_name(version: ModelVersion) -> str:
    """The zip's name (without .zip) and its top folder: kensa-<project>-v<number>."""
    return f"kensa-{slugify(version.project.name)[:40] or 'model'}-v{version.number}"


def version_bundle_info(*, version: ModelVersion) -> BundleInfo:
    project = version.project
    return BundleInfo(
        name=bundle_name(version),
        version={"number": version.number, "id": str(version.public_id), "is_active": version.is_active},
        created_at=version.created_at.isoformat(timespec="seconds"),
        metrics=dict(version.metrics),
        class_names=tuple(project.defect_classes.values_list("name", flat=True)),
        project={"name": project.name, "id": str(project.public_id)},
        map_png={"encoding": MAP_ENCODING, "gain": MAP_GAIN},
        decode_max_side=PREDICT_MAX_SIDE,
    )


def _fingerprint(version: ModelVersion, info: BundleInfo) -> str:
    """Changes with anything the zip holds besides the graph: threshold, scale, metrics, classes, names, runner."""
    calibration = version_calibration(version)
    document = {
        "format": FORMAT_VERSION,
        "calibration": calibration.to_dict(),
        "info": {**info.__dict__, "class_names": list(info.class_names)},
        "runner": hashlib.sha256(RUNNER_SOURCE.read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:20]


def version_bundle_stored(*, version: ModelVersion) -> tuple[str, str]:
    """(stored name of the version's bundle zip, file name for the download), building it when missing or outdated.
    Raises NotExportable for a family without an export."""
    if not exportable(version.family):
        raise NotExportable(NOT_EXPORTABLE.format(family=version.family))
    if not version.artifact_files:
        raise NotExportable(NO_MODEL_FILES)
    info = version_bundle_info(version=version)
    folder = f"{version.artifact_prefix}/{BUNDLE_FOLDER}"
    name = f"{folder}/{info.name}-{_fingerprint(version, info)}.zip"
    with _build_lock:
        if not default_storage.exists(name):
            model = model_for_version(version)
            graph_name = f"{folder}/{GRAPH_FILE}"
            if default_storage.exists(graph_name):
                graph = stored_file_read(graph_name)
            else:
                graph = onnx_bytes(model)
                stored_file_write(graph_name, graph)
            data = bundle_bytes(model, calibration=version_calibration(version), info=info, graph=graph)
            _outdated_bundles_delete(folder, keep=name)
            name = stored_file_write(name, data)
    return name, f"{info.name}.zip"


def _outdated_bundles_delete(folder: str, *, keep: str) -> None:
    try:
        _, files = default_storage.listdir(folder)
    except STORAGE_ERRORS:
        return
    stored_files_delete(f"{folder}/{file}" for file in files if file.endswith(".zip") and f"{folder}/{file}" != keep)


def bundle_response(*, version: ModelVersion) -> FileResponse:
    """The version's bundle as a zip download (built first when needed). Raises NotExportable."""
    name, filename = version_bundle_stored(version=version)
    response = FileResponse(
        default_storage.open(name, "rb"), as_attachment=True, filename=filename, content_type="application/zip"
    )
    response["Cache-Control"] = "private, no-cache"  # the zip changes when the threshold is saved
    return stored_file_headers(response)
