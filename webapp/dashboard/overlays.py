"""Stored 8-bit maps turned into RGBA PNGs that lie over the original in the browser.

Every stored anomaly map reads the same way: 128 is the threshold the prediction was made with, and a higher byte
is a higher score (webapp.training.evaluation writes threshold-relative asinh bytes; maps written before it hold the
logistic normalised score x 255, same order, same 128). So one colour scale shows every prediction, the ones called
good included: blue (far below the threshold) through green to yellow just below it, orange to magenta above it,
with the outline of the area above the threshold (the predicted mask) drawn on top. Below the threshold the colour
stays translucent, so the part shows through; `legend_stops` gives the same scale to the legend on the page.
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image as PILImage
from scipy import ndimage

THRESHOLD_BYTE = 128
MASK_RGB = (0, 229, 255)
# (position on the scale 0..1, RGB): below the threshold, then above it; the hue jumps at the threshold.
BELOW_STOPS = ((0.0, (35, 45, 150)), (0.45, (40, 110, 235)), (0.8, (40, 190, 110)), (1.0, (250, 230, 40)))
ABOVE_STOPS = ((0.0, (255, 140, 0)), (0.5, (230, 30, 30)), (1.0, (190, 0, 130)))


def _ramp(stops, positions: np.ndarray) -> np.ndarray:
    at = [s[0] for s in stops]
    return np.stack([np.interp(positions, at, [s[1][c] for s in stops]) for c in range(3)], axis=1)


def _heat_lut() -> np.ndarray:
    below = np.arange(THRESHOLD_BYTE) / (THRESHOLD_BYTE - 1)
    above = np.arange(256 - THRESHOLD_BYTE) / (255 - THRESHOLD_BYTE)
    rgb = np.concatenate([_ramp(BELOW_STOPS, below), _ramp(ABOVE_STOPS, above)])
    alpha = np.concatenate([30 + 130 * below**1.5, 190 + 50 * above])
    return np.concatenate([rgb, alpha[:, None]], axis=1).round().astype(np.uint8)


HEAT_LUT = _heat_lut()


def legend_stops(count: int = 9) -> list[tuple[float, str]]:
    """(percent along the legend, CSS colour) of the heat scale, the threshold in the middle."""
    stops = []
    for half, lut_range in ((0, range(0, THRESHOLD_BYTE)), (50, range(THRESHOLD_BYTE, 256))):
        for value in np.linspace(lut_range.start, lut_range.stop - 1, count).round().astype(int):
            r, g, b, _ = HEAT_LUT[value]
            fraction = (value - lut_range.start) / (lut_range.stop - 1 - lut_range.start)
            stops.append((round(half + 50 * fraction, 2), f"rgb({r},{g},{b})"))
    return stops


def _png(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def _grey(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("L"))


def _recentred(map_png: bytes, threshold: float) -> np.ndarray:
    """The stored map's bytes relative to another threshold (the dashboard's slider), read back through the
    encoding its PNG names; a map without it (written before) keeps the threshold it was made with."""
    with PILImage.open(io.BytesIO(map_png)) as picture:
        values = np.asarray(picture.convert("L"))
        meta = json.loads(getattr(picture, "text", {}).get("kensa-map", "{}"))
    if meta.get("encoding") != "asinh-z":
        return values
    gain, scale = float(meta["gain"]), float(meta["scale"])
    raw = float(meta["threshold"]) + scale * np.sinh((values.astype(np.float64) - THRESHOLD_BYTE + 0.5) / gain)
    return np.clip(THRESHOLD_BYTE + np.floor(gain * np.arcsinh((raw - threshold) / scale)), 0, 255).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=max(1, min(mask.shape) // 96))


def heatmap_rgba_png(map_png: bytes, threshold: float | None = None) -> bytes:
    """The stored anomaly map PNG as a coloured RGBA overlay of the same size, outlined where it reaches the
    threshold: the one it was made with, or `threshold` (raw) when given."""
    values = _grey(map_png) if threshold is None else _recentred(map_png, threshold)
    rgba = HEAT_LUT[values]
    rgba[_outline(values >= THRESHOLD_BYTE)] = (*MASK_RGB, 255)
    return _png(rgba)


def mask_rgba_png(mask_png: bytes, rgb: tuple[int, int, int] = MASK_RGB, fill_alpha: int = 60) -> bytes:
    """A stored 0/255 mask as a translucent fill with a solid outline (cyan for a predicted mask)."""
    mask = _grey(mask_png) > 127
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = (*rgb, fill_alpha)
    rgba[_outline(mask)] = (*rgb, 255)
    return _png(rgba)
