"""Stored 8-bit maps turned into RGBA PNGs that lie over the original in the browser.

The anomaly map holds normalised score x 255 (128 = the threshold at prediction time): low values are fully
transparent so the part stays visible, and colour runs from yellow to red above that. The predicted mask (0/255)
becomes a translucent cyan fill with an opaque outline, readable over both the part and the heatmap.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image as PILImage
from scipy import ndimage

# Values below this stay transparent (normalised 0.3: clearly normal).
HEAT_START = 77
MASK_RGB = (0, 229, 255)


def _heat_lut() -> np.ndarray:
    values = np.arange(256, dtype=np.float64) / 255
    ramp = np.clip((values - HEAT_START / 255) / (1 - HEAT_START / 255), 0, 1)
    red = np.full(256, 255.0)
    red[values > 0.5] = 255 - 55 * (values[values > 0.5] - 0.5) / 0.5
    green = np.clip(230 * (1 - ramp * 1.6), 0, 230)
    blue = np.zeros(256)
    alpha = np.where(values * 255 < HEAT_START, 0, 70 + 150 * ramp)
    return np.stack([red, green, blue, alpha], axis=1).round().astype(np.uint8)


HEAT_LUT = _heat_lut()


def _png(rgba: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(rgba, "RGBA").save(buffer, format="PNG")
    return buffer.getvalue()


def _grey(data: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(data)) as picture:
        return np.asarray(picture.convert("L"))


def heatmap_rgba_png(map_png: bytes) -> bytes:
    """The stored anomaly map PNG as a transparent-to-red RGBA overlay of the same size."""
    return _png(HEAT_LUT[_grey(map_png)])


def mask_rgba_png(mask_png: bytes) -> bytes:
    """The stored 0/255 mask as a cyan fill (translucent) with a solid outline."""
    mask = _grey(mask_png) > 127
    edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, min(mask.shape) // 96))
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[mask] = (*MASK_RGB, 60)
    rgba[edge] = (*MASK_RGB, 255)
    return _png(rgba)
