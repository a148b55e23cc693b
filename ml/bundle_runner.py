"""Kensa model bundle runner: scores images with an exported Kensa model, exactly as Kensa does, without Kensa.

Needs only Python 3.9+, onnxruntime, numpy and Pillow:

    pip install onnxruntime numpy Pillow
    python kensa_runner.py part.png                     # one image; JSON on stdout
    python kensa_runner.py parts/ --out results.json    # every image in a folder (and below it)
    python kensa_runner.py parts/ --maps maps/          # also writes each anomaly map and mask as PNG
    python kensa_runner.py --verify                     # only checks the bundle's files against manifest.json

The bundle is the folder this file sits in (unpacked from the zip Kensa gave you), or `--bundle PATH` (a folder or
the zip itself). Before scoring anything, every file is checked against the SHA-256 sums in manifest.json.

Each result says:
  score             the raw anomaly score (the model family's own units; higher = more anomalous)
  normalised_score  logistic((score - threshold) / scale) in (0, 1): the operating threshold maps to 0.5
  call              "defect" when score >= threshold, else "good"
and, with --maps, the paths of the anomaly map (an 8-bit grey PNG as Kensa stores it: 128 is the threshold,
128 + floor(gain * asinh((raw - threshold) / scale)), gain in scoring.json) and of the predicted mask (255 = defect).

As a library: `Bundle.open(path).score(image)` with a file path, a PIL image or an H x W x 3 uint8 array.

Source of truth: Kensa's ml/bundle_runner.py, shipped in every bundle as kensa_runner.py. It must import nothing
but the standard library, onnxruntime, numpy and Pillow (a test runs it in a virtualenv holding only those).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

BUNDLE_FORMAT = "kensa-model-bundle"
MANIFEST = "manifest.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
CONVERTED_BEFORE_SHRINKING = ("RGBA", "LA", "PA", "P", "1")  # made RGB before they are shrunk
# EXIF orientation -> the transpose that shows the image as a person sees it.
ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class BundleError(Exception):
    """A bundle that cannot be used: a missing or altered file, or a format this runner does not know."""


# ---- reading the bundle ----


class _Files:
    """The bundle's files by name, from a folder or straight from the zip (whose files sit in one top folder)."""

    def __init__(self, path: Path):
        self.path = path
        self.archive = None
        self.prefix = ""
        if path.is_file():
            self.archive = zipfile.ZipFile(path)
            manifests = [name for name in self.archive.namelist() if name.rsplit("/", 1)[-1] == MANIFEST]
            if not manifests:
                raise BundleError(f"{path} holds no {MANIFEST}: not a Kensa model bundle")
            self.prefix = min(manifests, key=len)[: -len(MANIFEST)]
        elif not (path / MANIFEST).is_file():
            raise BundleError(f"{path} holds no {MANIFEST}: not a Kensa model bundle")

    def read(self, name: str) -> bytes:
        try:
            if self.archive is not None:
                return self.archive.read(self.prefix + name)
            return (self.path / name).read_bytes()
        except (KeyError, FileNotFoundError):
            raise BundleError(f"the bundle lacks {name}") from None


def _json(files: _Files, name: str) -> dict:
    return json.loads(files.read(name).decode("utf-8"))


def verify(files: _Files, manifest: dict) -> list[str]:
    """Checks every file listed in the manifest against its SHA-256; returns the names checked."""
    listed = manifest.get("files") or {}
    if not listed:
        raise BundleError(f"{MANIFEST} lists no files")
    for name, entry in listed.items():
        digest = hashlib.sha256(files.read(name)).hexdigest()
        if digest != entry["sha256"]:
            raise BundleError(f"{name} does not match its SHA-256 in {MANIFEST}: the bundle was altered or damaged")
    return sorted(listed)


# ---- images in, as Kensa reads them ----


def read_image(source, max_side: int | None = None) -> np.ndarray:
    """A file path, bytes, PIL image or array -> H x W x 3 uint8 RGB as Kensa's predictions see it: EXIF
    orientation applied, 16-bit grey stretched from the whole image's min..max to 8 bits, alpha dropped, any mode
    converted to RGB; with `max_side`, an image whose longer side exceeds it is shrunk to it first, as Kensa shrinks
    uploads (a JPEG decoded at 1/2, 1/4 or 1/8 scale when that still reaches it; alpha and palette images first
    reduced by the whole factor that keeps them at least `max_side`; then bicubic)."""
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        picture = source
    else:
        data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
        picture = Image.open(io.BytesIO(data))
        if max_side and picture.format == "JPEG":
            picture.draft(None, (max_side, max_side))
        picture.load()
    try:
        orientation = picture.getexif().get(0x0112, 1)
    except (OSError, ValueError, SyntaxError):
        orientation = 1
    value_range = picture.getextrema() if picture.mode in SIXTEEN_BIT_MODES else None  # of the whole image
    if max_side:
        if picture.mode in CONVERTED_BEFORE_SHRINKING:
            factor = max(1, max(picture.size) // max_side)
            picture = picture.convert("RGB")
            picture = picture.reduce(factor) if factor > 1 else picture
        scale = max_side / max(picture.size)
        if scale < 1:
            size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
            picture = picture.resize(size, Image.Resampling.BICUBIC)
    if picture.mode in SIXTEEN_BIT_MODES:
        low, high = (float(v) for v in value_range)
        pixels = np.asarray(picture, dtype=np.float64)
        scaled = np.clip(((pixels - low) / (high - low) * 255).round(), 0, 255) if high > low else 0 * pixels
        picture = Image.fromarray(scaled.astype(np.uint8), "L")
    picture = picture.convert("RGB")
    transpose = ORIENTATION_TRANSPOSE.get(orientation)
    return np.asarray(picture.transpose(transpose) if transpose is not None else picture).copy()


def _array_to_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W (x 3 or 4) uint8 image, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image[..., :3])


# ---- resizing, as torch and Pillow do it inside Kensa ----


def _is_gray(image: np.ndarray) -> bool:
    return np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])


def pillow_resize(image: np.ndarray, size: tuple[int, int], filter_name: str) -> np.ndarray:
    """H x W x 3 uint8 -> size (h, w) with Pillow's filter; a grey image is resized as one channel (same pixels)."""
    if image.shape[:2] == tuple(size):
        return image
    target, resample = (size[1], size[0]), PIL_FILTERS[filter_name]
    if _is_gray(image):
        gray = np.asarray(Image.fromarray(np.ascontiguousarray(image[..., 0])).resize(target, resample))
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(Image.fromarray(image).resize(target, resample))


def _bilinear_weights(out_size: int, in_size: int) -> np.ndarray:
    """out x in matrix of torch's bilinear interpolation (align_corners=False, no antialiasing)."""
    scale = in_size / out_size
    source = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(source.astype(np.int64), in_size - 1)
    high = np.minimum(low + 1, in_size - 1)
    fraction = source - low
    weights = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    np.add.at(weights, (rows, low), 1.0 - fraction)
    np.add.at(weights, (rows, high), fraction)
    return weights


def _antialiased_weights(out_size: int, in_size: int) -> np.ndarray:
    """out x in matrix of torch's antialiased bilinear interpolation (a triangle filter widened by the downscale
    factor, edges renormalised: Pillow's algorithm, which torch adopted)."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0
    inverse = 1.0 / scale if scale >= 1.0 else 1.0
    weights = np.zeros((out_size, in_size))
    for row in range(out_size):
        centre = scale * (row + 0.5)
        first = max(int(centre - support + 0.5), 0)
        last = min(int(centre + support + 0.5), in_size)
        taps = np.arange(first, last)
        tap_weights = np.maximum(0.0, 1.0 - np.abs((taps - centre + 0.5) * inverse))
        total = tap_weights.sum()
        weights[row, first:last] = tap_weights / total if total > 0 else tap_weights
    return weights


def resize_planes(planes: np.ndarray, size: tuple[int, int], *, antialias: bool) -> np.ndarray:
    """... x H x W float -> ... x size[0] x size[1] float32, bilinear as torch's F.interpolate (align_corners=False)."""
    height, width = planes.shape[-2:]
    if (height, width) == tuple(size):
        return planes.astype(np.float32, copy=False)
    make = _antialiased_weights if antialias else _bilinear_weights
    rows, columns = make(size[0], height), make(size[1], width)
    return (rows @ planes.astype(np.float64) @ columns.T).astype(np.float32)


# ---- the model's input ----


def _pad_reflect(planes: np.ndarray, height: int, width: int) -> np.ndarray:
    """C x h x w -> C x height x width, reflected at the bottom and right (again and again if the pad is larger
    than the image; a one-pixel side is repeated instead), as Kensa's U-Net pads."""
    while planes.shape[-2] < height or planes.shape[-1] < width:
        need_h, need_w = max(0, height - planes.shape[-2]), max(0, width - planes.shape[-1])
        if (need_h and planes.shape[-2] == 1) or (need_w and planes.shape[-1] == 1):
            return np.pad(planes, ((0, 0), (0, need_h), (0, need_w)), mode="edge")
        step_h, step_w = min(need_h, planes.shape[-2] - 1), min(need_w, planes.shape[-1] - 1)
        planes = np.pad(planes, ((0, 0), (0, step_h), (0, step_w)), mode="reflect")
    return planes


@dataclass
class ModelInput:
    tensor: np.ndarray  # 1 x 3 x H x W float32, the graph's "images"
    crop: tuple[int, int]  # the part of the graph's map that covers the image (the rest is padding)


def model_input(image: np.ndarray, pre: dict) -> ModelInput:
    """One H x W x 3 uint8 image -> the graph's input, by the bundle's preprocessing.json."""
    kind = pre["kind"]
    if kind == "resize_normalise":  # PatchCore, Gaussian: Pillow resize, then (x / 255 - mean) / std
        size = tuple(pre["size"])
        resized = pillow_resize(image, size, pre["filter"])
        mean, std = np.asarray(pre["mean"], np.float32), np.asarray(pre["std"], np.float32)
        scale, shift = (np.float32(1.0) / (np.float32(255.0) * std)), mean / std
        planes = resized.transpose(2, 0, 1).astype(np.float32)
        tensor = planes * scale[:, None, None] - shift[:, None, None]
        return ModelInput(tensor[None].astype(np.float32), size)
    planes = image.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
    if kind == "resize_unit":  # autoencoder, U-Net (resized): antialiased bilinear to size, in [0, 1]
        size = tuple(pre["size"])
        if planes.shape[-2:] != size:
            planes = np.clip(resize_planes(planes, size, antialias=True), 0.0, 1.0)
        return ModelInput(planes[None], size)
    if kind == "native":  # U-Net (native): working resolution, standardised, padded to multiples of 32
        height, width = image.shape[:2]
        factor = min(pre["scale"], pre["max_side"] / max(height, width))
        shape = (height, width) if factor == 1.0 else (max(1, round(height * factor)), max(1, round(width * factor)))
        if shape != (height, width):
            planes = np.clip(resize_planes(planes, shape, antialias=True), 0.0, 1.0)
        mean = np.asarray(pre["standardise"]["mean"], np.float64)[:, None, None]
        std = np.asarray(pre["standardise"]["std"], np.float64)[:, None, None]
        spread = planes.std(dtype=np.float64, ddof=1) + pre["standardise"]["epsilon"]
        planes = ((planes - planes.mean(dtype=np.float64)) / spread * std + mean).astype(np.float32)
        multiple = pre["pad_multiple"]
        padded = _pad_reflect(planes, -(-shape[0] // multiple) * multiple, -(-shape[1] // multiple) * multiple)
        return ModelInput(padded[None], shape)
    raise BundleError(f"unknown preprocessing {kind!r}: this runner is older than the bundle")


# ---- scoring ----


def normalise(raw, *, threshold: float, scale: float):
    """logistic((raw - threshold) / scale), clipped to +-60 logits: Kensa's normalised score (threshold -> 0.5)."""
    z = np.clip((np.asarray(raw, dtype=np.float64) - threshold) / scale, -60, 60)
    return 1.0 / (1.0 + np.exp(-z))


@dataclass
class Result:
    score: float
    normalised_score: float
    is_anomalous: bool
    anomaly_map: np.ndarray  # H x W float32, raw units, at the image's size
    mask: np.ndarray  # H x W bool

    @property
    def call(self) -> str:
        return "defect" if self.is_anomalous else "good"

    def anomaly_map_png(self, scoring: dict) -> bytes:
        """The map as Kensa stores it: an 8-bit grey PNG, 128 = the threshold (see `map_bytes`)."""
        return _png(Image.fromarray(map_bytes(self.anomaly_map, scoring), "L"))

    def mask_png(self) -> bytes:
        return _png(Image.fromarray(self.mask.astype(np.uint8) * 255, "L"))


def map_bytes(anomaly_map: np.ndarray, scoring: dict) -> np.ndarray:
    """Raw map -> uint8 as scoring.json's "map_png" says: "asinh-z" is 128 + floor(gain * asinh(z)), clipped to
    0..255, with z = (raw - threshold) / scale, so a pixel is at or above the threshold exactly when its byte is."""
    encoding = scoring.get("map_png", {}).get("encoding")
    if encoding != "asinh-z":
        raise BundleError(f"unknown map encoding {encoding!r}: this runner is older than the bundle")
    calibration = _calibration(scoring)
    z = (anomaly_map.astype(np.float64) - calibration["threshold"]) / calibration["scale"]
    return np.clip(128 + np.floor(scoring["map_png"]["gain"] * np.arcsinh(z)), 0, 255).astype(np.uint8)


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _calibration(scoring: dict) -> dict:
    normalisation = scoring["normalisation"]
    if normalisation["kind"] != "logistic":
        raise BundleError(f"unknown normalisation {normalisation['kind']!r}: this runner is older than the bundle")
    return {"threshold": float(scoring["threshold"]), "scale": float(normalisation["scale"])}


class Bundle:
    """An opened, verified bundle: `score(image)` runs one image as Kensa would."""

    def __init__(self, path: Path | str, *, threads: int = 0):
        import onnxruntime  # here, not at the top: `--help` and `--verify` work without it

        files = _Files(Path(path))
        self.manifest = _json(files, MANIFEST)
        if self.manifest.get("format") != BUNDLE_FORMAT:
            raise BundleError(f"{MANIFEST} is not a {BUNDLE_FORMAT} manifest")
        self.verified = verify(files, self.manifest)
        self.preprocessing = _json(files, self.manifest["preprocessing"])
        self.scoring = _json(files, self.manifest["scoring"])
        self.classes = _json(files, self.manifest["classes"])
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        if threads:
            options.intra_op_num_threads = threads
        self.session = onnxruntime.InferenceSession(
            files.read(self.manifest["model"]), options, providers=["CPUExecutionProvider"]
        )
        self.threshold = float(self.scoring["threshold"])

    @classmethod
    def open(cls, path: Path | str, **options) -> Bundle:
        return cls(path, **options)

    def score(self, source) -> Result:
        """One image (path, bytes, PIL image or uint8 array) -> its Result."""
        image = read_image(source, self.preprocessing.get("decoding", {}).get("max_side"))
        prepared = model_input(image, self.preprocessing)
        scores, maps = self.session.run(["scores", "maps"], {"images": prepared.tensor})
        height, width = prepared.crop
        model_map = maps[0][:height, :width]
        full = resize_planes(model_map, image.shape[:2], antialias=False)
        raw = float(scores[0])
        mask_rule = self.scoring["mask"]
        # "map_above": the family's own mask (probabilities); else pixels as anomalous as the image threshold.
        mask = full > float(mask_rule["value"]) if mask_rule["rule"] == "map_above" else full >= self.threshold
        return Result(
            score=raw,
            normalised_score=float(normalise(raw, **_calibration(self.scoring))),
            is_anomalous=raw >= self.threshold,
            anomaly_map=full,
            mask=mask,
        )


def image_paths(targets: list[Path]) -> list[Path]:
    """The image files named, and those in (and below) the folders named, in a stable order."""
    paths = []
    for target in targets:
        if target.is_dir():
            paths += sorted(p for p in target.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            paths.append(target)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kensa_runner.py", description="Score images with a Kensa model bundle, exactly as Kensa does."
    )
    parser.add_argument("images", nargs="*", type=Path, help="image files or folders of images")
    parser.add_argument(
        "--bundle", type=Path, default=Path(__file__).resolve().parent, help="bundle folder or zip (default: here)"
    )
    parser.add_argument("--out", type=Path, help="write the JSON here instead of printing it")
    parser.add_argument("--maps", type=Path, help="folder for each image's anomaly map and mask PNGs")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (default: its own choice)")
    parser.add_argument("--verify", action="store_true", help="only check the files against manifest.json")
    args = parser.parse_args(argv)
    try:
        if args.verify:
            files = _Files(args.bundle)
            checked = verify(files, _json(files, MANIFEST))
            print(json.dumps({"verified": checked}, indent=2))
            return 0
        if not args.images:
            parser.error("name at least one image or folder (or --verify)")
        bundle = Bundle.open(args.bundle, threads=args.threads)
    except BundleError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results, failures = [], 0
    for number, path in enumerate(image_paths(args.images)):
        entry = {"image": str(path)}
        try:
            result = bundle.score(path)
        except (OSError, ValueError) as error:  # unreadable or unusable file: reported, the rest still scored
            failures += 1
            results.append({**entry, "error": f"{type(error).__name__}: {error}"})
            continue
        entry.update(
            score=result.score,
            normalised_score=result.normalised_score,
            call=result.call,
            is_anomalous=result.is_anomalous,
            defect_pixels=int(result.mask.sum()),
        )
        if args.maps:
            args.maps.mkdir(parents=True, exist_ok=True)
            stem = f"{number:05d}_{path.stem}"
            (args.maps / f"{stem}_map.png").write_bytes(result.anomaly_map_png(bundle.scoring))
            (args.maps / f"{stem}_mask.png").write_bytes(result.mask_png())
            entry.update(anomaly_map=str(args.maps / f"{stem}_map.png"), mask=str(args.maps / f"{stem}_mask.png"))
        results.append(entry)
    manifest = bundle.manifest
    document = {
        "model": {key: manifest.get(key) for key in ("name", "family", "version", "created_at")},
        "threshold": bundle.threshold,
        "verified_files": bundle.verified,
        "results": results,
    }
    text = json.dumps(document, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
