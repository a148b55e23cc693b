"""The API's OpenAPI 3.1 description, written by hand as a dict. Paths are relative to the server URL
(`.../api/v1`). The docs page is rendered from this same dict, and a test checks every route is here."""

from __future__ import annotations

from webapp.api.models import JobStatus, Scope
from webapp.api.payloads import METRIC_SUMMARY_KEYS
from webapp.api.services import BATCH_MAX_IMAGES

ERROR_CODES = {
    "400": "Bad request: no image, or an image Kensa cannot use (the message says why).",
    "401": "No token, or a token that is invalid or revoked.",
    "403": "The token lacks the scope this endpoint needs.",
    "404": "No such project for this token (a token works only for its own project), or no such object in it.",
    "409": "The project has no active model version: train one first.",
    "413": "An image is larger than the server's limit (KENSA_MAX_IMAGE_BYTES), or a batch has too many images.",
}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: str) -> dict:
    return {code: _json(_ref("Error"), ERROR_CODES[code]) for code in ("401", *codes)}


PROJECT_ID = {
    "name": "project_id",
    "in": "path",
    "required": True,
    "description": "The project's id (from the project page's address, or GET /projects/).",
    "schema": {"type": "string", "format": "uuid"},
}
PREDICTION_ID = {
    "name": "prediction_id",
    "in": "path",
    "required": True,
    "description": "`prediction_id` from a prediction result.",
    "schema": {"type": "integer"},
}
VERSION_ID = {
    "name": "version_id",
    "in": "path",
    "required": True,
    "description": "A version's `id` (from GET /projects/{project_id}/versions/).",
    "schema": {"type": "string", "format": "uuid"},
}
INCLUDE = {
    "name": "include",
    "in": "query",
    "required": False,
    "description": "`maps` adds the anomaly map and mask as base64 PNGs to each prediction "
    "(`anomaly_map_png_base64`, `mask_png_base64`), saving two requests per image.",
    "schema": {"type": "string", "enum": ["maps"]},
}
NAME = {
    "name": "name",
    "in": "query",
    "required": False,
    "description": "A file name to keep with a raw-body image (multipart uploads carry their own).",
    "schema": {"type": "string"},
}

SCHEMAS = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "examples": ["invalid_token", "bad_image", "no_active_model"]},
                    "message": {"type": "string", "description": "For people: what went wrong and what to do."},
                },
            }
        },
    },
    "Project": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "name": {"type": "string"},
            "active_version": {"type": ["integer", "null"], "description": "Number of the active version."},
            "versions_url": {"type": "string", "format": "uri"},
            "predict_url": {"type": "string", "format": "uri"},
        },
    },
    "ModelVersion": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "number": {"type": "integer"},
            "family": {"type": "string", "examples": ["gaussian", "patchcore", "autoencoder", "unet"]},
            "is_active": {"type": "boolean"},
            "threshold": {"type": "number", "description": "Raw-score threshold in force (operating or calibrated)."},
            "metrics": {
                "type": "object",
                "description": "Test-split metrics; null where not measurable.",
                "properties": {key: {"type": ["number", "null"]} for key in METRIC_SUMMARY_KEYS},
            },
            "created_at": {"type": "string", "format": "date-time"},
        },
    },
    "Box": {
        "type": "object",
        "description": "One connected region of the predicted mask, in pixels of the image as sent (EXIF "
        "orientation applied). x1 and y1 are exclusive.",
        "required": ["x0", "y0", "x1", "y1", "area"],
        "properties": {key: {"type": "integer"} for key in ("x0", "y0", "x1", "y1", "area")},
    },
    "Detection": {
        "type": "object",
        "description": "One defect the model found, in pixels of the image as sent (EXIF orientation applied): "
        "the family's own detections where it learned from drawn defects, else one per region of the predicted mask.",
        "required": ["box", "label", "confidence"],
        "properties": {
            "box": {
                "type": "array",
                "items": {"type": "integer"},
                "minItems": 4,
                "maxItems": 4,
                "description": "[x0, y0, x1, y1]; x1 and y1 exclusive.",
            },
            "label": {"type": "string", "description": "The defect class; empty when the model names none."},
            "confidence": {
                "type": "number",
                "description": "In [0, 1]; 0.5 is the threshold (the normalised score of the region's peak) for "
                "families without their own probability.",
            },
        },
    },
    "Prediction": {
        "type": "object",
        "required": ["is_anomalous", "score", "normalised_score", "threshold", "model_version", "boxes", "review"],
        "properties": {
            "prediction_id": {"type": "integer"},
            "name": {"type": "string"},
            "is_anomalous": {"type": "boolean", "description": "score >= threshold."},
            "score": {"type": "number", "description": "Raw anomaly score; higher is more anomalous."},
            "normalised_score": {
                "type": "number",
                "description": "In [0, 1]; the threshold maps to 0.5 for every model family.",
            },
            "threshold": {"type": "number", "description": "The raw threshold this call was made with."},
            "model_version": {
                "type": "object",
                "properties": {
                    "id": {"type": "string", "format": "uuid"},
                    "number": {"type": "integer"},
                    "family": {"type": "string"},
                },
            },
            "anomaly_map": {
                "type": "string",
                "format": "uri",
                "description": "URL of an 8-bit PNG of scores relative to the threshold (128). Send the token.",
            },
            "mask": {"type": "string", "format": "uri", "description": "URL of the predicted mask PNG (0/255)."},
            "anomaly_map_png_base64": {"type": "string", "description": "Only with ?include=maps."},
            "mask_png_base64": {"type": "string", "description": "Only with ?include=maps."},
            "boxes": {"type": "array", "items": _ref("Box"), "description": "Largest first."},
            "detections": {
                "type": "array",
                "items": _ref("Detection"),
                "description": "Highest confidence first.",
            },
            "review": {"type": "boolean", "description": "Whether the call was sent to people for review."},
        },
    },
    "BatchJob": {
        "type": "object",
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": list(JobStatus.values)},
            "total": {"type": "integer"},
            "done": {"type": "integer", "description": "Images finished (predicted or rejected)."},
            "progress": {"type": "number", "description": "done / total, in [0, 1]."},
            "error": {"type": "string", "description": "Why the job failed; empty otherwise."},
            "created_at": {"type": "string", "format": "date-time"},
            "finished_at": {"type": ["string", "null"], "format": "date-time"},
            "url": {"type": "string", "format": "uri"},
            "results": {
                "type": ["array", "null"],
                "description": "Once the job has ended: one entry per image, in the order sent.",
                "items": {
                    "type": "object",
                    "properties": {
                        "position": {"type": "integer"},
                        "name": {"type": "string"},
                        "error": {"type": ["string", "null"], "description": "Why this image was rejected."},
                        "prediction": {"oneOf": [_ref("Prediction"), {"type": "null"}]},
                    },
                },
            },
        },
    },
}

_IMAGE_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["image"],
                "properties": {"image": {"type": "string", "contentMediaType": "application/octet-stream"}},
            }
        },
        "image/*": {"schema": {"type": "string", "contentMediaType": "image/*"}},
    },
}
_BATCH_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["images"],
                "properties": {
                    "images": {
                        "type": "array",
                        "maxItems": BATCH_MAX_IMAGES,
                        "items": {"type": "string", "contentMediaType": "application/octet-stream"},
                    }
                },
            }
        }
    },
}


_ZIP = "application/zip"


def _png(description: str) -> dict:
    return {"description": description, "content": {"image/png": {"schema": {"type": "string"}}}}


PATHS = {
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This description",
            "description": "The OpenAPI 3.1 document of this API. Needs no token.",
            "security": [],
            "responses": {"200": {"description": "The document.", "content": {"application/json": {}}}},
        }
    },
    "/projects/": {
        "get": {
            "operationId": "listProjects",
            "summary": "The token's project",
            "description": "A token belongs to one project; this lists it, with its active version number.",
            "x-scope": Scope.READ.value,
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"projects": {"type": "array", "items": _ref("Project")}}},
                    "The project.",
                ),
                **_errors("403"),
            },
        }
    },
    "/projects/{project_id}/versions/": {
        "get": {
            "operationId": "listVersions",
            "summary": "Model versions",
            "description": "Every trained version, newest first: family, metric summary, threshold, which is active.",
            "x-scope": Scope.READ.value,
            "parameters": [PROJECT_ID],
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"versions": {"type": "array", "items": _ref("ModelVersion")}}},
                    "The versions.",
                ),
                **_errors("403", "404"),
            },
        }
    },
    "/projects/{project_id}/versions/{version_id}/bundle.zip": {
        "get": {
            "operationId": "getModelBundle",
            "summary": "A version's model bundle",
            "description": "A zip to run the version without Kensa: the ONNX graph (model.onnx), the preprocessing "
            "(preprocessing.json), the operating threshold and the normalised-score mapping (scoring.json), the "
            "defect class names (classes.json), kensa_runner.py (needs only onnxruntime, numpy and Pillow: "
            "`python kensa_runner.py parts/` scores a folder exactly as Kensa does), and manifest.json with the "
            "version, family, metrics, times and the SHA-256 of every file. Built on the first request (seconds), "
            "then kept; saving a threshold makes the next download carry it.",
            "x-scope": Scope.READ.value,
            "parameters": [PROJECT_ID, VERSION_ID],
            "responses": {
                "200": {
                    "description": "The zip, as an attachment named kensa-<project>-v<number>.zip.",
                    "content": {"application/zip": {"schema": {"type": "string", "contentMediaType": _ZIP}}},
                },
                **_errors("403", "404"),
            },
        }
    },
    "/projects/{project_id}/predict/": {
        "post": {
            "operationId": "predict",
            "summary": "Predict one image",
            "description": "Runs the active model version on one image (PNG, JPEG, BMP or TIFF) and answers at "
            "once. Send a multipart field `image`, or the raw bytes with an `image/...` Content-Type.",
            "x-scope": Scope.PREDICT.value,
            "parameters": [PROJECT_ID, INCLUDE, NAME],
            "requestBody": _IMAGE_BODY,
            "responses": {"200": _json(_ref("Prediction"), "The call."), **_errors("400", "403", "404", "409", "413")},
        }
    },
    "/projects/{project_id}/batches/": {
        "post": {
            "operationId": "createBatch",
            "summary": "Predict many images in the background",
            "description": f"Queues up to {BATCH_MAX_IMAGES} images (multipart field `images`, repeated) for the "
            "active model version and answers 202 with the job; poll its `url`. An unusable image is reported on "
            "its own result and does not fail the job.",
            "x-scope": Scope.PREDICT.value,
            "parameters": [PROJECT_ID],
            "requestBody": _BATCH_BODY,
            "responses": {
                "202": _json(_ref("BatchJob"), "Queued; the Location header is the job's URL."),
                **_errors("400", "403", "404", "409", "413"),
            },
        }
    },
    "/projects/{project_id}/batches/{job_id}/": {
        "get": {
            "operationId": "getBatch",
            "summary": "A batch job",
            "description": "Status (queued, running, succeeded, failed), progress, and per-image results once ended.",
            "x-scope": Scope.PREDICT.value,
            "parameters": [
                PROJECT_ID,
                {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}},
                INCLUDE,
            ],
            "responses": {"200": _json(_ref("BatchJob"), "The job."), **_errors("403", "404")},
        }
    },
    "/projects/{project_id}/predictions/{prediction_id}/anomaly_map.png": {
        "get": {
            "operationId": "getAnomalyMap",
            "summary": "A prediction's anomaly map",
            "description": "8-bit grey PNG at the image's size (an image over 2048 px on its longer side is shrunk "
            "to 2048 first): byte = 128 + floor(gain * asinh((raw - threshold) / scale)), so 128 is the threshold; "
            "gain, threshold and scale are in the PNG's `kensa-map` text chunk.",
            "x-scope": "any",
            "parameters": [PROJECT_ID, PREDICTION_ID],
            "responses": {"200": _png("The map."), **_errors("404")},
        }
    },
    "/projects/{project_id}/predictions/{prediction_id}/mask.png": {
        "get": {
            "operationId": "getMask",
            "summary": "A prediction's mask",
            "description": "PNG at the map's size, 255 where the model calls a defect, 0 elsewhere; the boxes are "
            "its regions (in the pixels of the image as sent).",
            "x-scope": "any",
            "parameters": [PROJECT_ID, PREDICTION_ID],
            "responses": {"200": _png("The mask."), **_errors("404")},
        }
    },
}


def openapi_schema(*, server_url: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Kensa API",
            "version": "1",
            "description": "Run a project's active model on images, one at a time or in batches. Authenticate "
            "with a project token: `Authorization: Bearer <token>` (create one on the project's API tokens page). "
            "`x-scope` on each operation names the token scope it needs.",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearerToken": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {"bearerToken": {"type": "http", "scheme": "bearer"}},
            "schemas": SCHEMAS,
        },
    }
