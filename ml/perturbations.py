"""Perturbations of inspection images that mimic what changes on a production line, each at a few strengths.

A model is measured on test images taken under the light, position and background of its training images; the
line drifts from all three. Each `Perturbation` changes one thing by a strength in its own unit (a share of the
image side, a brightness factor, degrees, ...): strength 0 returns the image unchanged, and a larger strength is a
larger change of the same kind. The random choices (a direction, a sign, where clutter goes) are drawn from the
seed only, never from the strength, so the strengths of one perturbation on one image differ only in how far
they go. Geometric perturbations move the defect mask with the image.

Images are H x W x 3 uint8 RGB, masks H x W bool (or None), as in `ml.types`. Numpy, SciPy and Pillow only.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from ml.images import is_gray

Perturb = Callable[[np.ndarray, np.ndarray | None, float, np.random.Generator], tuple[np.ndarray, np.ndarray | None]]


@dataclass(frozen=True)
class Perturbation:
    """One kind of change. strengths: the non-zero strengths a report tries, increasing. label: what a strength
    means, formatted with `strength` and `shown` (the strength as a person reads it)."""

    name: str
    group: str  # position, lighting, background, focus, noise, compression: the advice is per group
    strengths: tuple[float, ...]
    label: str | Callable[[float], str]
    apply: Perturb
    geometric: bool = False
    percent: bool = False  # the strength is a share, shown as a percentage

    def describe(self, strength: float) -> str:
        if callable(self.label):
            return self.label(strength)
        shown = f"{strength * 100:g} %" if self.percent else f"{strength:g}"
        return self.label.format(strength=strength, shown=shown)


# ---------------------------------------------------------------------------------------------------------------
# Geometry: one affine warp for shift, crop-and-resize and rotation, the mask warped with nearest neighbours.


def _warp(
    image: np.ndarray, mask: np.ndarray | None, matrix: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray | None]:
    """Pillow's affine warp: output pixel (x, y) takes input (a x + b y + c, d x + e y + f).

    Pixels the warp uncovers take the image mirrored at its edge, so a textured backdrop stays textured: a flat
    fill (the border's median colour) reads as an anomaly of its own, and an edge copy as streaks; the camera
    and the backdrop stay put when a part moves. The mask is not mirrored (uncovered pixels are no defect)."""
    height, width = image.shape[:2]
    a, b, c, d, e, f = matrix
    # Mirror only as far as the warp reaches outside the image (its output corners show how far).
    xs = [a * x + b * y + c for x in (0, width) for y in (0, height)]
    ys = [d * x + e * y + f for x in (0, width) for y in (0, height)]
    reach = max(0.0, -min(xs), max(xs) - width, -min(ys), max(ys) - height)
    pad = min(int(np.ceil(reach)) + 2, min(height, width) - 1)
    mirrored = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    shifted = (a, b, c + pad, d, e, f + pad)
    warped = Image.fromarray(mirrored).transform(
        (width, height), Image.Transform.AFFINE, shifted, Image.Resampling.BILINEAR
    )
    moved_mask = None
    if mask is not None:
        moved = Image.fromarray(mask.astype(np.uint8) * 255).transform(
            (width, height), Image.Transform.AFFINE, matrix, Image.Resampling.NEAREST, fillcolor=0
        )
        moved_mask = np.asarray(moved) > 127
    return np.asarray(warped), moved_mask


def shift(image, mask, strength, rng):
    """The part moved by `strength` x the image side in a random direction."""
    angle = rng.uniform(0, 2 * np.pi)
    height, width = image.shape[:2]
    dx, dy = strength * width * np.cos(angle), strength * height * np.sin(angle)
    return _warp(image, mask, (1, 0, -dx, 0, 1, -dy))


def crop_resize(image, mask, strength, rng):
    """A window `1 - strength` of the side, at a random place, cut out and resized back: the camera closer."""
    u, v = rng.random(2)
    height, width = image.shape[:2]
    keep = 1 - strength
    return _warp(image, mask, (keep, 0, u * strength * width, 0, keep, v * strength * height))


def rotate(image, mask, strength, rng):
    """Turned by `strength` degrees about the centre, clockwise or anticlockwise."""
    theta = np.deg2rad(strength) * (1 if rng.random() < 0.5 else -1)
    height, width = image.shape[:2]
    cx, cy = (width - 1) / 2, (height - 1) / 2
    cos, sin = np.cos(theta), np.sin(theta)
    return _warp(image, mask, (cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy))


# ---------------------------------------------------------------------------------------------------------------
# Lighting: computed on [0, 1] floats, clipped back to uint8.


def _unit(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def _bytes(values: np.ndarray) -> np.ndarray:
    return (np.clip(values, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


def brightness(image, mask, strength, rng):
    """Every pixel times 1 +- strength (brighter or darker lamp)."""
    return _bytes(_unit(image) * (1 + _sign(rng) * strength)), mask


def contrast(image, mask, strength, rng):
    """Distances from the mean grey level times 1 +- strength."""
    values = _unit(image)
    mean = float(values.mean())
    return _bytes(mean + (values - mean) * (1 + _sign(rng) * strength)), mask


def gamma(image, mask, strength, rng):
    """A gamma of (1 + strength) or its inverse: mid-tones darker or lighter, black and white kept."""
    exponent = (1 + strength) ** _sign(rng)
    return _bytes(_unit(image) ** exponent), mask


def gradient(image, mask, strength, rng):
    """Light falling off across the image in a random direction: x (1 - strength) on one side to x (1 + strength)
    on the other."""
    angle = rng.uniform(0, 2 * np.pi)
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    along = (xx / max(1, width - 1) - 0.5) * np.cos(angle) + (yy / max(1, height - 1) - 0.5) * np.sin(angle)
    along /= max(1e-6, float(np.abs(along).max()))
    return _bytes(_unit(image) * (1 + strength * along)[..., None]), mask


# ---------------------------------------------------------------------------------------------------------------
# Background clutter: coloured rectangles and textures, only on the background, never on a defect.

BACKGROUND_SIDE = 256  # the part is found on a copy at most this many pixels on a side (the rule is coarse anyway)
PART_MARGIN = 0.03  # clutter keeps this share of the side away from the part and from defects
MIN_BACKGROUND = 0.05  # with less background than this share of the image, there is no room for clutter
# A ring whose grey levels spread more than this (robust standard deviation) is not a plain backdrop but a part or a
# texture filling the frame (MVTec screw's plate: 3-4.5; magnetic tiles: 13-28).
BUSY_RING = 10.0


def background_mask(image: np.ndarray, defect_mask: np.ndarray | None = None) -> np.ndarray:
    """H x W bool: pixels far from the part, where clutter may go.

    The rule is simple and conservative: the background's colour is the median of the image's outer ring; a pixel
    belongs to the part when it differs from it by more than 4 robust standard deviations of the ring (at least 25
    grey levels) or sits on a strong edge; the part is then closed, its holes filled and grown by PART_MARGIN.
    Defect pixels (grown the same way) are never background. An image whose ring is itself busy (a texture that
    fills the frame, BUSY_RING) has no background, and so gets no clutter.
    """
    height, width = image.shape[:2]
    factor = min(1.0, BACKGROUND_SIDE / max(height, width))
    small_size = (max(1, round(width * factor)), max(1, round(height * factor)))
    grey = np.asarray(Image.fromarray(image).convert("L").resize(small_size, Image.Resampling.BILINEAR), np.float32)
    ring = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    centre = float(np.median(ring))
    spread = 1.4826 * float(np.median(np.abs(ring - centre)))
    if spread > BUSY_RING:
        return np.zeros((height, width), dtype=bool)
    differs = np.abs(grey - centre) > max(25.0, 4 * spread)
    edges = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1)) > max(80.0, 16 * spread)
    part = ndimage.binary_opening(differs | edges, iterations=1)
    part = ndimage.binary_fill_holes(ndimage.binary_closing(part, iterations=3))
    margin = max(1, round(PART_MARGIN * max(small_size)))
    part = ndimage.binary_dilation(part, iterations=margin)
    full = np.asarray(Image.fromarray(part.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST))
    background = full < 128
    if defect_mask is not None and defect_mask.any():
        grown = ndimage.binary_dilation(defect_mask, iterations=max(1, round(PART_MARGIN * max(height, width))))
        background &= ~grown
    return background


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """h x w x 3 float [0, 1]: a solid colour, stripes, a checkerboard or coloured noise."""
    colour = rng.random(3)
    other = rng.random(3)
    kind = rng.integers(4)
    yy, xx = np.mgrid[0:height, 0:width]
    period = int(rng.integers(4, 16))
    if kind == 0:
        pattern = np.zeros((height, width), dtype=bool)
    elif kind == 1:
        pattern = ((xx + yy * rng.integers(0, 2)) // period) % 2 == 1
    elif kind == 2:
        pattern = ((xx // period) + (yy // period)) % 2 == 1
    else:
        return np.clip(colour + 0.25 * rng.standard_normal((height, width, 3)), 0, 1)
    return np.where(pattern[..., None], other, colour)


def clutter(image, mask, strength, rng):
    """Coloured rectangles and textures covering `strength` of the background (see `background_mask`).

    The same seed draws the same rectangles in the same order; a larger strength keeps adding them, so it covers a
    superset of what a smaller one covers."""
    background = background_mask(image, mask)
    height, width = image.shape[:2]
    if background.mean() < MIN_BACKGROUND:
        return image.copy(), mask
    target = strength * float(background.sum())
    out = _unit(image)
    covered = np.zeros((height, width), dtype=bool)
    for _ in range(400):  # enough rectangles for any strength up to 1; the loop ends long before on real images
        if covered.sum() >= target:
            break
        rh = max(2, int(rng.uniform(0.04, 0.16) * height))
        rw = max(2, int(rng.uniform(0.04, 0.16) * width))
        top, left = int(rng.integers(0, max(1, height - rh))), int(rng.integers(0, max(1, width - rw)))
        patch = _texture(rng, rh, rw)
        where = background[top : top + rh, left : left + rw] & ~covered[top : top + rh, left : left + rw]
        region = out[top : top + rh, left : left + rw]
        region[where] = patch[where]
        covered[top : top + rh, left : left + rw] |= where
    return _bytes(out), mask


# ---------------------------------------------------------------------------------------------------------------
# Focus, noise, compression.


def blur(image, mask, strength, rng):
    """Gaussian blur of sigma `strength` x the image side (out of focus, or a part moving)."""
    sigma = strength * max(image.shape[:2])
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius=sigma))), mask


def noise(image, mask, strength, rng):
    """Gaussian sensor noise of standard deviation `strength` grey levels (of 255), one pattern per seed; a grey
    camera's image gets grey noise."""
    grey = is_gray(image)
    pattern = rng.standard_normal(image.shape[:2] + ((1,) if grey else (3,)), dtype=np.float32)
    return np.clip(image.astype(np.float32) + strength * pattern + 0.5, 0, 255).astype(np.uint8), mask


def jpeg(image, mask, strength, rng):
    """Saved as JPEG at quality 100 - strength, and read back."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=int(round(100 - strength)))
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return np.asarray(decoded.convert("RGB")).copy(), mask


# ---------------------------------------------------------------------------------------------------------------

PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation("shift", "position", (0.05, 0.1, 0.2), "shifted by {shown} of the side", shift, True, True),
        Perturbation("crop", "position", (0.1, 0.2, 0.3), "cropped by {shown}, resized back", crop_resize, True, True),
        Perturbation("rotation", "position", (5.0, 10.0, 20.0), "rotated by {shown}°", rotate, True),
        Perturbation("brightness", "lighting", (0.1, 0.2, 0.4), "brightness ±{shown}", brightness, percent=True),
        Perturbation("contrast", "lighting", (0.1, 0.2, 0.4), "contrast ±{shown}", contrast, percent=True),
        Perturbation("gamma", "lighting", (0.2, 0.5, 1.0), lambda s: f"gamma {1 + s:g} or 1/{1 + s:g}", gamma),
        Perturbation("gradient", "lighting", (0.1, 0.2, 0.4), "light gradient ±{shown}", gradient, percent=True),
        Perturbation("clutter", "background", (0.05, 0.1, 0.2), "clutter on {shown} of backdrop", clutter, False, True),
        Perturbation("blur", "focus", (0.0025, 0.005, 0.01), "blur of {shown} of the side", blur, percent=True),
        Perturbation("noise", "noise", (4.0, 8.0, 16.0), "noise of {shown} grey levels", noise),
        Perturbation("jpeg", "compression", (20.0, 50.0, 80.0), lambda s: f"JPEG quality {round(100 - s)}", jpeg),
    )
}  # fmt: skip


def perturbation(name: str) -> Perturbation:
    try:
        return PERTURBATIONS[name]
    except KeyError:
        raise ValueError(f"unknown perturbation {name!r}; expected one of {', '.join(PERTURBATIONS)}") from None


def perturb(
    image: np.ndarray, mask: np.ndarray | None, name: str, strength: float, *, seed: int | np.random.SeedSequence = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """(image, mask) changed by perturbation `name` at `strength`; strength 0 returns unchanged copies.

    Deterministic: the same seed gives the same result, and the same random choices at every strength."""
    chosen = perturbation(name)
    if strength < 0:
        raise ValueError(f"strength must be 0 or more, got {strength}")
    if strength == 0:
        return image.copy(), None if mask is None else mask.copy()
    return chosen.apply(image, mask, float(strength), np.random.default_rng(seed))
