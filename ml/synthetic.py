"""Synthetic inspection images: a textured round part on a plain background, with drawn defects and exact masks.

Used by the test suite (every family must separate these in seconds on a CPU) and by the web app's sample project.
Deterministic for a given seed. Numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFECT_KINDS = ("scratch", "dent", "stain")


@dataclass
class SyntheticImage:
    image: np.ndarray  # H x W x 3 uint8 RGB
    mask: np.ndarray  # H x W bool, all False for a good part
    defect: str | None  # one of DEFECT_KINDS, or None


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bilinearly to size x size."""
    grid = rng.random((cells + 1, cells + 1))
    coords = np.linspace(0, cells, size, endpoint=False)
    i0 = coords.astype(int)
    frac = coords - i0
    rows = grid[i0] * (1 - frac)[:, None] + grid[i0 + 1] * frac[:, None]
    return rows[:, i0] * (1 - frac)[None, :] + rows[:, i0 + 1] * frac[None, :]


def good_part(rng: np.random.Generator, size: int) -> np.ndarray:
    """A brushed-metal disc with a bore, shifted and lit a little differently each time. H x W float in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy = size / 2 + rng.uniform(-0.02, 0.02) * size
    cx = size / 2 + rng.uniform(-0.02, 0.02) * size
    radius = np.hypot(yy - cy, xx - cx)
    part = radius < 0.40 * size
    bore = radius < 0.12 * size
    texture = 0.6 * _smooth_noise(rng, size, 8) + 0.4 * _smooth_noise(rng, size, 32)
    brushed = 0.5 + 0.5 * np.sin(radius * (0.9 + 0.05 * rng.random()))
    brightness = rng.uniform(0.95, 1.05)
    surface = (0.55 + 0.15 * texture + 0.05 * brushed) * brightness
    canvas = np.full((size, size), 0.15, dtype=np.float32) + 0.03 * _smooth_noise(rng, size, 4)
    canvas[part] = surface[part]
    canvas[bore] = 0.08
    return np.clip(canvas + rng.normal(0, 0.01, canvas.shape), 0, 1).astype(np.float32)


def _on_part(rng: np.random.Generator, size: int) -> tuple[float, float]:
    """A random point on the part's ring (between bore and rim), where defects are drawn."""
    angle = rng.uniform(0, 2 * np.pi)
    dist = rng.uniform(0.18, 0.33) * size
    return size / 2 + dist * np.sin(angle), size / 2 + dist * np.cos(angle)


def draw_defect(rng: np.random.Generator, gray: np.ndarray, kind: str) -> np.ndarray:
    """Draws a defect of `kind` into `gray` in place and returns its exact mask (H x W bool)."""
    size = gray.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = _on_part(rng, size)
    if kind == "scratch":
        angle = rng.uniform(0, np.pi)
        length = rng.uniform(0.12, 0.22) * size
        width = max(1.5, 0.012 * size)
        dy, dx = np.sin(angle), np.cos(angle)
        along = (yy - cy) * dy + (xx - cx) * dx
        across = -(yy - cy) * dx + (xx - cx) * dy
        mask = (np.abs(along) < length / 2) & (np.abs(across) < width / 2)
        gray[mask] = np.clip(gray[mask] + 0.35, 0, 1)
    elif kind == "dent":
        r = rng.uniform(0.035, 0.06) * size
        dist = np.hypot(yy - cy, xx - cx)
        mask = dist < r
        shade = 0.3 * (1 - dist / r) + 0.1
        gray[mask] = np.clip(gray[mask] - shade[mask], 0, 1)
    elif kind == "stain":
        ry, rx = rng.uniform(0.04, 0.08, size=2) * size
        mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
        gray[mask] = gray[mask] * 0.45
    else:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {DEFECT_KINDS}")
    return mask


def make_image(seed: int, *, size: int = 128, defect: str | None = None, color: bool = True) -> SyntheticImage:
    """One synthetic part. `defect=None` gives a good part; otherwise a defect of that kind with its mask."""
    rng = np.random.default_rng(seed)
    gray = good_part(rng, size)
    mask = np.zeros((size, size), dtype=bool) if defect is None else draw_defect(rng, gray, defect)
    if color:
        # A stain is the one defect with a tint, so colour carries information as on a real part.
        tint = np.stack([gray, gray * 0.97, gray * 0.92], axis=-1)
        if defect == "stain":
            tint[mask] = tint[mask] * np.array([1.0, 0.8, 0.55])
        rgb = tint
    else:
        rgb = np.repeat(gray[..., None], 3, axis=-1)
    return SyntheticImage(image=(np.clip(rgb, 0, 1) * 255).round().astype(np.uint8), mask=mask, defect=defect)


def make_dataset(
    *, n_good: int, n_defect: int, size: int = 128, seed: int = 0, kinds: tuple[str, ...] = DEFECT_KINDS
) -> list[SyntheticImage]:
    """n_good good parts followed by n_defect defective ones, cycling through `kinds`."""
    images = [make_image(seed * 100_003 + i, size=size) for i in range(n_good)]
    images += [
        make_image(seed * 100_003 + n_good + i, size=size, defect=kinds[i % len(kinds)]) for i in range(n_defect)
    ]
    return images
