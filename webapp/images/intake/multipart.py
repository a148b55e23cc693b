"""A forgiving reader for the upload page's multipart body, so that every file sent gets a result line.

Django's parser drops a part whose header is not UTF-8 (a file name in Latin-1 from an old tool) or whose file name
is empty, without a word, and refuses the whole request when one part's header is over 1 KiB (a very long file
name), losing every good file with it. Installed for the upload view only (webapp.images.views), this reader keeps
such files: a name that is not UTF-8 is read with replacement characters, a nameless file gets a made-up name, a
long header is read up to MAX_PART_HEADER_BYTES; each case leaves a note for that file's result line. A part whose
header is longer still is skipped with a note, and the parts after it are read as usual. Django's limits on the
number of files and fields and on the size of fields apply as before."""

from __future__ import annotations

import re
import tempfile

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler
from django.http import QueryDict
from django.http.multipartparser import ChunkIter, InterBoundaryIter, LazyStream, exhaust
from django.utils.datastructures import MultiValueDict
from django.utils.http import parse_header_parameters

from webapp.images.intake.ingest import REJECTED, FileResult, IntakeReport

MAX_PART_HEADER_BYTES = 64 * 1024
NAME_NOT_UTF8 = "Its name was not UTF-8 text; unreadable characters are shown as �."
NO_NAME = "It was sent without a file name; called {name} here."
HEADER_TOO_LONG = "Its part of the upload has a header over {limit:,} bytes (a file name that long?); skipped."
UNNAMED = "unnamed-{number}"
_FILENAME = re.compile(rb'filename="?([^";\r\n]*)', re.IGNORECASE)


class ForgivingMultipartHandler(FileUploadHandler):
    """Reads the whole multipart body itself (Django's handle_raw_input hook). Leaves on the request:
    `upload_notes` {file name: note} for files kept, `upload_skipped` [(name, reason)] for parts that could not be."""

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        self.request.upload_notes, self.request.upload_skipped = {}, []
        post, files = QueryDict(mutable=True), MultiValueDict()
        stream = LazyStream(ChunkIter(input_data, 64 * 1024))
        field_bytes = field_count = file_count = 0
        for part in InterBoundaryIter(stream, b"--" + boundary):
            header = _read_header(part)
            if header is None:  # preamble, epilogue, or a part with no header at all: nothing a person sent
                exhaust(part)
                continue
            if header is _TOO_LONG:
                reason = HEADER_TOO_LONG.format(limit=MAX_PART_HEADER_BYTES)
                self.request.upload_skipped.append((_name_in(part), reason))
                exhaust(part)
                continue
            disposition, was_utf8 = header
            name = disposition.get("name", "")
            if "filename" not in disposition:
                field_count += 1
                if settings.DATA_UPLOAD_MAX_NUMBER_FIELDS and field_count > settings.DATA_UPLOAD_MAX_NUMBER_FIELDS:
                    raise TooManyFieldsSent("The number of fields exceeded settings.DATA_UPLOAD_MAX_NUMBER_FIELDS.")
                value = part.read()
                field_bytes += len(value)
                if settings.DATA_UPLOAD_MAX_MEMORY_SIZE and field_bytes > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
                    raise RequestDataTooBig("Request body exceeded settings.DATA_UPLOAD_MAX_MEMORY_SIZE.")
                post.appendlist(name, value.decode(encoding or settings.DEFAULT_CHARSET, errors="replace"))
                continue
            file_count += 1
            if settings.DATA_UPLOAD_MAX_NUMBER_FILES and file_count > settings.DATA_UPLOAD_MAX_NUMBER_FILES:
                raise TooManyFilesSent("The number of files exceeded settings.DATA_UPLOAD_MAX_NUMBER_FILES.")
            content, size = _spool(part)
            filename, note = _file_name(disposition), "" if was_utf8 else NAME_NOT_UTF8
            if not filename:
                if not size:
                    content.close()
                    continue  # an empty file input: a form sent with nothing chosen
                filename = UNNAMED.format(number=file_count)
                note = NO_NAME.format(name=filename)
            upload = UploadedFile(content, name=filename, size=size)
            if note:
                self.request.upload_notes[upload.name] = note
            files.appendlist(name, upload)
        exhaust(input_data)
        return post, files

    def receive_data_chunk(self, raw_data, start):  # never called: handle_raw_input reads everything
        return raw_data

    def file_complete(self, file_size):
        return None


_TOO_LONG = object()


def _read_header(part: LazyStream):
    """The part's Content-Disposition parameters and whether its header was UTF-8; None when the part has no
    header, _TOO_LONG when it runs past MAX_PART_HEADER_BYTES (what was read is pushed back for _name_in)."""
    chunk = part.read(MAX_PART_HEADER_BYTES + 4)
    end = chunk.find(b"\r\n\r\n")
    if end == -1:
        part.unget(chunk)
        return _TOO_LONG if len(chunk) > MAX_PART_HEADER_BYTES else None
    part.unget(chunk[end + 4 :])
    raw = chunk[:end]
    try:
        text, was_utf8 = raw.decode("utf-8"), True
    except UnicodeDecodeError:
        text, was_utf8 = raw.decode("utf-8", errors="replace"), False
    for line in text.split("\r\n"):
        key, _, value = line.partition(":")
        if key.strip().lower() == "content-disposition":
            try:
                _, params = parse_header_parameters(value.strip())
            except ValueError:
                params = {}
            return params, was_utf8
    return None


def _name_in(part: LazyStream) -> str:
    """The file name in a header too long to parse, as far as it can be read, for the result line."""
    head = part.read(MAX_PART_HEADER_BYTES)
    part.unget(head)
    found = _FILENAME.search(head)
    name = found.group(1).decode("utf-8", errors="replace") if found else ""
    return (name[:80] + "…") if len(name) > 80 else (name or "(a file)")


def _spool(part: LazyStream) -> tuple[tempfile.SpooledTemporaryFile, int]:
    """The part's bytes in a file that stays in memory while small and moves to disk when large, and their size."""
    spooled = tempfile.SpooledTemporaryFile(max_size=settings.FILE_UPLOAD_MAX_MEMORY_SIZE)  # noqa: SIM115 (closed with the upload)
    size = 0
    for chunk in part:
        spooled.write(chunk)
        size += len(chunk)
    spooled.seek(0)
    return spooled, size


def _file_name(disposition: dict) -> str:
    """The sent file name without folders or unprintable characters ('' when nothing is left)."""
    name = disposition.get("filename", "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(char for char in name if char.isprintable()).strip()
    return "" if name in {".", ".."} else name


def upload_report_complete(report: IntakeReport, request) -> IntakeReport:
    """Adds what this reader noticed to the intake's result lines: a note on each file kept despite its name, and a
    rejected line for each part it had to skip."""
    notes = getattr(request, "upload_notes", {})
    for result in report.results:
        name = result.name.split(":", 1)[0] if result.name not in notes else result.name  # an archive's members
        if name in notes:
            result.message = " ".join(filter(None, [notes[name], result.message]))
    skipped = [FileResult(name, REJECTED, reason) for name, reason in getattr(request, "upload_skipped", [])]
    report.results[:0] = skipped
    return report
