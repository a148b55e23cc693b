#!/usr/bin/env python3
"""Peak extra memory of one predict, one upload (and its thumbnail) and one import, for worst-case inputs within
the default limits (KENSA_MAX_IMAGE_PIXELS 64 M, KENSA_MAX_DECODED_BYTES 256 MiB, KENSA_MAX_IMAGE_BYTES 100 MiB).

Each figure comes from a fresh Python process (`probe`, below) so that no memory freed by earlier work hides what
the operation takes: Django is set up, the operation runs once on a small input (imports, the model loaded,
database connections: what a running server already holds), then the kernel's peak-RSS mark is reset
(/proc/self/clear_refs) and the operation runs once on the input. The figure is the peak RSS (VmHWM) during it
minus the RSS just before it: everything the process touched, Pillow, numpy and torch included. The input's bytes
are read before (a server holds the request body already); an archive is read from disk as the server does.

    .venv/bin/python scripts/bench_memory.py            # all cases, a Markdown table; exit 1 over the target
    .venv/bin/python scripts/bench_memory.py --family patchcore

Everything lives in a temporary folder (benchlib's sandbox: SQLite, media, its own redis-server). The tests in
tests/webapp/test_memory_bounds.py run the same probe on smaller budgets.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
TARGET_BYTES = 1024**3  # issue 13: at most 1 GB of extra memory for one predict / upload / import
RESULT_PREFIX = "KENSA_PROBE_RESULT "
MB = 1024 * 1024


# --- measuring -----------------------------------------------------------------------------------------------


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}")


def peak_extra_rss(operation: Callable[[], object]) -> tuple[int, float, object]:
    """(peak RSS during `operation` minus RSS before it, in bytes; seconds; what it returned). Linux only."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    result = operation()
    seconds = time.perf_counter() - started
    return (_status_kib("VmHWM") - before) * 1024, seconds, result


# --- the probe: one operation in this (fresh) process -----------------------------------------------------------


def _results(report) -> list[list[str]]:
    return [[r.name, r.status, r.message] for r in report.results]


def _case_predict(spec: dict) -> Callable[[str], object]:
    from webapp.api import services
    from webapp.projects.models import Project
    from webapp.storage import stored_file_read

    project = Project.objects.get(pk=spec["project"])

    def run(path: str):
        data = Path(path).read_bytes()

        def predict():
            try:
                result = services.api_predict(project=project, data=data, name=Path(path).name)
            except services.ApiError as exc:
                return {"error": exc.message}
            with PILImage.open(io.BytesIO(stored_file_read(result.prediction.anomaly_map.name))) as stored_map:
                map_size = list(stored_map.size)
            boxes = [[box.x0, box.y0, box.x1, box.y1] for box in result.boxes]
            return {"score": result.prediction.normalised_score, "boxes": boxes, "map_size": map_size}

        return data, predict

    return run


def _case_upload(spec: dict) -> Callable[[str], object]:
    from webapp.images.intake.ingest import IncomingFile, images_ingest
    from webapp.projects.models import Project

    project = Project.objects.get(pk=spec["project"])

    def run(path: str):
        data = Path(path).read_bytes()

        def upload():
            report = images_ingest(project=project, user=None, files=[IncomingFile(Path(path).name, lambda: data)])
            return {"results": _results(report), "images": [r.image.id for r in report.results if r.image]}

        return data, upload

    return run


def _case_thumbnail(spec: dict) -> Callable[[str], object]:
    from webapp.images.models import Image
    from webapp.images.services import image_thumbnail_make

    def run(image_id: str):
        image = Image.objects.select_related("project").get(id=int(image_id))

        def thumbnail():
            image_thumbnail_make(image=image)
            image.refresh_from_db()
            return {"thumbnail_state": image.thumbnail_state}

        return None, thumbnail

    return run


def _case_import(spec: dict) -> Callable[[str], object]:
    from webapp.annotations.transfer import dataset_import
    from webapp.images.models import Annotation
    from webapp.projects.models import Project

    project = Project.objects.get(pk=spec["project"])

    def run(path: str):
        def import_():
            with open(path, "rb") as fileobj:
                report = dataset_import(
                    project=project, user=None, fileobj=fileobj, archive_name=Path(path).name, fmt=spec["format"]
                )
            return {
                "results": _results(report),
                "annotations": Annotation.objects.filter(image__project=project).count(),
            }

        return None, import_

    return run


CASES = {"predict": _case_predict, "upload": _case_upload, "thumbnail": _case_thumbnail, "import": _case_import}


def probe_main(case: str, spec: dict) -> None:
    """Runs in the fresh process: the warm-up input, then the measured one; prints one JSON result line."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    run = CASES[case](spec)
    if spec.get("warm"):
        _, warm = run(spec["warm"])
        warm()
    held, operation = run(spec["input"])  # noqa: F841 (`held`: the input's bytes, held as a server holds them)
    extra, seconds, outcome = peak_extra_rss(operation)
    print(RESULT_PREFIX + json.dumps({"peak_extra_bytes": extra, "seconds": seconds, "outcome": outcome}), flush=True)


def probe(case: str, spec: dict, *, env: dict[str, str], timeout: float = 600) -> dict:
    """Runs `probe_main(case, spec)` in a fresh Python process with `env` (Django settings, database, media,
    broker); returns its result: peak_extra_bytes, seconds, outcome."""
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), "probe", case, json.dumps(spec)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    raise RuntimeError(f"probe {case} failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}")


# --- worst-case inputs -------------------------------------------------------------------------------------------


def flat_image(width: int, height: int, mode: str, fmt: str = "PNG") -> bytes:
    """A mostly flat image (one darker square: something to find), tiny as a file however large its pixels:
    what an attacker sends, and what a clean part on a plain background compresses to."""
    channels = {"L": 1, "I;16": 1, "RGB": 3, "RGBA": 4}[mode]
    dtype, value = (np.uint16, 30000) if mode == "I;16" else (np.uint8, 200)
    pixels = np.full((height, width, channels), value, dtype)
    side = max(1, min(width, height) // 8)
    pixels[side : 2 * side, side : 2 * side] = value // 4
    if mode == "RGBA":
        pixels[..., 3] = 255
    picture = PILImage.fromarray(pixels[..., 0] if channels == 1 else pixels)  # mode from dtype and shape
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def coco_zip(image: bytes, *, declared: tuple[int, int], rle: bool) -> bytes:
    """A COCO zip of one image that the annotation file declares `declared` (width, height) pixels, with one
    mask on it: a polygon, or (`rle`) an uncompressed RLE mask of the declared size."""
    width, height = declared
    if rle:
        first = (width // 8) * height  # column-major: the first eighth of the columns is background
        segmentation = {"size": [height, width], "counts": [first, height // 4, width * height - first - height // 4]}
    else:
        segmentation = [[width / 8, height / 8, width / 4, height / 8, width / 4, height / 4, width / 8, height / 4]]
    document = {
        "images": [{"id": 1, "file_name": "images/part.png", "width": width, "height": height}],
        "categories": [{"id": 1, "name": "scratch"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": segmentation, "iscrowd": int(rle)}],
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("annotations.json", json.dumps(document))
        archive.writestr("images/part.png", image)
    return buffer.getvalue()


def mvtec_zip(image: bytes, mask: bytes) -> bytes:
    """An MVTec AD zip with one defect image of class `scratch` and its mask."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("test/scratch/part.png", image)
        archive.writestr("ground_truth/scratch/part_mask.png", mask)
    return buffer.getvalue()


def colour_mask(width: int, height: int) -> bytes:
    """A Lookout-style colour mask PNG: black, with one red (#ff0000) square."""
    pixels = np.zeros((height, width, 3), np.uint8)
    side = max(1, min(width, height) // 8)
    pixels[side : 2 * side, side : 2 * side, 0] = 255
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def lookout_zip(image: bytes, mask: bytes) -> bytes:
    """A Lookout for Vision zip: one anomalous image with a segmentation mask whose class `scratch` is red."""
    colour_map = {
        "0": {"class-name": "BACKGROUND", "hex-color": "#ffffff"},
        "1": {"class-name": "scratch", "hex-color": "#ff0000"},
    }
    line = {
        "source-ref": "images/part.png",
        "anomaly-label": 1,
        "anomaly-mask-ref": "masks/part.png",
        "anomaly-mask-ref-metadata": {"internal-color-map": colour_map},
    }
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("test.manifest", json.dumps(line) + "\n")
        archive.writestr("images/part.png", image)
        archive.writestr("masks/part.png", mask)
    return buffer.getvalue()


# --- the benchmark -----------------------------------------------------------------------------------------------


def _write(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


def bench_cases(folder: Path) -> list[tuple[str, str, dict]]:
    """(case label, probe case, spec without project) for every worst case, the files written to `folder`."""
    side = 8000  # 64,000,000 pixels: the default pixel limit
    small = _write(folder, "warm.png", flat_image(64, 64, "RGB"))
    inputs = {
        "PNG 16-bit grey 8000×8000 (128 MB decoded)": _write(folder, "grey16.png", flat_image(side, side, "I;16")),
        "PNG RGBA 8000×8000 (256 MB decoded)": _write(folder, "rgba.png", flat_image(side, side, "RGBA")),
        "JPEG RGB 8000×8000 (256 MB decoded)": _write(folder, "rgb.jpg", flat_image(side, side, "RGB", "JPEG")),
    }
    cases = [(f"predict: {label}", "predict", {"warm": small, "input": path}) for label, path in inputs.items()]
    cases += [(f"upload: {label}", "upload", {"warm": small, "input": path}) for label, path in inputs.items()]
    tiny = flat_image(100, 100, "L")
    big_grey = flat_image(side, side, "L")
    warm_coco = _write(folder, "warm-coco.zip", coco_zip(flat_image(64, 64, "L"), declared=(64, 64), rle=False))
    warm_mvtec = _write(folder, "warm-mvtec.zip", mvtec_zip(flat_image(64, 64, "L"), flat_image(64, 64, "L")))
    warm_lookout = _write(folder, "warm-lookout.zip", lookout_zip(flat_image(64, 64, "L"), colour_mask(64, 64)))
    imports = [
        (
            "COCO: 100×100 image declared 30000×30000, polygon",
            "coco",
            coco_zip(tiny, declared=(30000, 30000), rle=False),
        ),
        ("COCO: 100×100 image declared 30000×30000, RLE", "coco", coco_zip(tiny, declared=(30000, 30000), rle=True)),
        ("COCO: 8000×8000 image, polygon", "coco", coco_zip(big_grey, declared=(side, side), rle=False)),
        ("COCO: 8000×8000 image, RLE", "coco", coco_zip(big_grey, declared=(side, side), rle=True)),
        ("MVTec: 100×100 image, 13000×13000 mask", "mvtec", mvtec_zip(tiny, flat_image(13000, 13000, "L"))),
        ("MVTec: 8000×8000 image and mask", "mvtec", mvtec_zip(big_grey, flat_image(side, side, "L"))),
        ("Lookout: 100×100 image, 13000×13000 mask", "lookout", lookout_zip(tiny, colour_mask(13000, 13000))),
        ("Lookout: 8000×8000 image and mask", "lookout", lookout_zip(big_grey, colour_mask(side, side))),
    ]
    warm_by_format = {"coco": warm_coco, "mvtec": warm_mvtec, "lookout": warm_lookout}
    for index, (label, fmt, data) in enumerate(imports):
        warm = warm_by_format[fmt]
        cases.append(
            (
                f"import {label}",
                "import",
                {"format": fmt, "warm": warm, "input": _write(folder, f"import{index}.zip", data)},
            )
        )
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="gaussian", choices=["gaussian", "patchcore"])
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args()
    sys.path.insert(0, str(SCRIPT.parent))
    import benchlib

    sandbox = benchlib.sandbox_start("kensa-bench-memory-")
    try:
        from webapp.projects.services import project_create

        started = time.monotonic()
        owner, project, version = benchlib.sample_model(family=args.family, image_size=args.image_size)
        print(f"# trained {version} in {time.monotonic() - started:.1f} s; {benchlib.machine_line()}")
        folder = Path(tempfile.mkdtemp(dir=sandbox.scratch))
        rows, over = [], False
        for index, (label, case, spec) in enumerate(bench_cases(folder)):
            # Each upload and import into a project of its own, so no input is a duplicate of an earlier one.
            target = project if case == "predict" else project_create(name=f"memory {index}", owner=owner)
            result = probe(case, {**spec, "project": target.pk}, env=sandbox.env)
            rows.append(_row(label, result))
            over |= result["peak_extra_bytes"] > TARGET_BYTES
            if case == "upload":
                from webapp.images.models import Image

                warm_id, input_id = Image.objects.filter(project=target).order_by("id").values_list("id", flat=True)
                thumb = probe("thumbnail", {"warm": str(warm_id), "input": str(input_id)}, env=sandbox.env)
                rows.append(_row(label.replace("upload:", "thumbnail:"), thumb))
                over |= thumb["peak_extra_bytes"] > TARGET_BYTES
        print(benchlib.markdown_table(["case", "peak extra RSS", "time", "outcome"], rows))
        return 1 if over else 0
    finally:
        sandbox.close()


def _row(label: str, result: dict) -> list[str]:
    outcome = result["outcome"]
    if "results" in outcome:
        text = "; ".join(f"{status}{': ' + message if message else ''}" for _, status, message in outcome["results"])
        if "annotations" in outcome:
            text += f" ({outcome['annotations']} annotation(s))"
    else:
        shown = {**outcome, "boxes": len(outcome["boxes"])} if "boxes" in outcome else outcome
        text = ", ".join(f"{key} {value}" for key, value in shown.items())
    return [label, f"{result['peak_extra_bytes'] / MB:,.0f} MiB", f"{result['seconds']:.2f} s", text]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "probe":
        probe_main(sys.argv[2], json.loads(sys.argv[3]))
    else:
        sys.exit(main())
