"""Responses that carry stored files (originals, thumbnails, masks, prediction maps, dataset exports).

Every such response has a content type the server decided (from the format Kensa decoded, never the name a user
gave), `nosniff` so a browser never second-guesses it, and a Content-Security-Policy that forbids scripts and
sandboxes the document: a file opened directly in a tab can run nothing, whatever bytes it holds (a PNG with HTML
appended after its end decodes as a PNG and is kept)."""

from __future__ import annotations

from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpResponse

# Only these types are ever served back; anything stored is an image Kensa decoded and named itself.
SERVED_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".bmp": "image/bmp", ".tif": "image/tiff"}
STORED_FILE_CSP = "default-src 'none'; sandbox"


def stored_file_headers(response: HttpResponse) -> HttpResponse:
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = STORED_FILE_CSP
    return response


def stored_image_type(name: str) -> str | None:
    """The type to serve a stored file as, from the extension Kensa gave it; None for anything else."""
    extension = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return SERVED_TYPES.get(extension)


def stored_image_response(name: str) -> FileResponse:
    """A stored image, or Http404 when there is none (or it is not one of the served types)."""
    if not name:
        raise Http404("Not ready yet")
    content_type = stored_image_type(name)
    if content_type is None:
        raise Http404("Not an image")
    try:
        handle = default_storage.open(name, "rb")
    except (FileNotFoundError, OSError):
        raise Http404("File missing") from None
    response = FileResponse(handle, content_type=content_type)
    response["Cache-Control"] = "private, max-age=3600"
    return stored_file_headers(response)


def png_response(data: bytes) -> HttpResponse:
    """PNG bytes Kensa made (an overlay drawn from a stored map)."""
    response = HttpResponse(data, content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return stored_file_headers(response)
