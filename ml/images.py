"""Image plumbing shared by every family: any input to uint8 RGB, resizing, and batches of model-ready tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ml.backbones import Preprocessing

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Any grayscale (H x W or H x W x 1), RGB, RGBA, 16-bit, float [0, 1] or bool image -> H x W x 3 uint8 RGB.

    16-bit images are scaled by 255 / 65535; floats are taken as [0, 1]; alpha is dropped (not composited).
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an H x W, H x W x 1, H x W x 3 or H x W x 4 image, got shape {image.shape}")
    image = image[..., :3]
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == bool:
        return image.astype(np.uint8) * 255
    if image.dtype == np.uint16:
        return (image.astype(np.float32) * (255.0 / 65535.0)).round().astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(image, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):  # e.g. int32 from PIL "I" mode holding 16-bit data
        scale = 255.0 / 65535.0 if image.max() > 255 else 1.0
        return np.clip(image.astype(np.float32) * scale, 0, 255).round().astype(np.uint8)
    raise ValueError(f"unsupported image dtype {image.dtype}")


def read_image(path: Path | str) -> np.ndarray:
    """Reads any Pillow-readable file (8/16-bit gray, RGB, RGBA, palette) as H x W x 3 uint8 RGB."""
    with Image.open(path) as pil:
        if pil.mode in ("I;16", "I;16B", "I;16L", "I"):
            return to_rgb(np.asarray(pil))
        return np.asarray(pil.convert("RGB")).copy()


def read_mask(path: Path | str) -> np.ndarray:
    """Reads a defect mask file (0 / non-zero) as H x W bool."""
    with Image.open(path) as pil:
        return np.asarray(pil.convert("L")) > 127


def is_gray(image: np.ndarray) -> bool:
    """Whether an H x W x 3 image has three equal channels (a grey camera's frames, read as RGB)."""
    first_row = image[0]
    if not (np.array_equal(first_row[:, 0], first_row[:, 1]) and np.array_equal(first_row[:, 1], first_row[:, 2])):
        return False  # colour images almost always differ in the first row: no full pass for them
    return np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])


def resize_image(image: np.ndarray, size: tuple[int, int], interpolation: str = "bilinear") -> np.ndarray:
    """H x W x 3 uint8 -> size[0] x size[1] x 3 uint8, with Pillow's antialiased filters.

    A grey image is resized as one channel and repeated: Pillow filters channels independently, so the result is
    the same, in about half the time (screw frames, 512 -> 320 px bicubic: 3.5 -> 1.9 ms, the check included).
    """
    if image.shape[:2] == tuple(size):
        return image
    target, resample = (size[1], size[0]), _PIL_FILTERS[interpolation]
    if is_gray(image):
        gray = np.asarray(Image.fromarray(np.ascontiguousarray(image[..., 0])).resize(target, resample))
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(Image.fromarray(image).resize(target, resample))


def resize_map(values: np.ndarray | torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of maps: h x w or N x h x w -> size[0] x size[1] (or N x ...), float32 tensor."""
    tensor = torch.as_tensor(values, dtype=torch.float32)
    squeeze = tensor.ndim == 2
    batch = tensor[None, None] if squeeze else tensor[:, None]
    resized = F.interpolate(batch, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    return resized[0] if squeeze else resized


def to_tensor(images: Sequence[np.ndarray], preprocessing: Preprocessing, size: tuple[int, int]) -> torch.Tensor:
    """A batch of images (any of `to_rgb`'s inputs, any sizes) -> N x 3 x size[0] x size[1] normalised float32."""
    batch = np.stack([resize_image(to_rgb(image), size, preprocessing.interpolation) for image in images])
    # (x / 255 - mean) / std as one scale and one shift, in place on one contiguous copy.
    tensor = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().float()
    mean = torch.tensor(preprocessing.mean).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std).view(1, 3, 1, 1)
    return tensor.mul_(1.0 / (255.0 * std)).sub_(mean / std)


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """1-D Gaussian weights of length 2 * ceil(4 sigma) + 1, summing to 1."""
    radius = max(1, math.ceil(4 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def blur_maps(maps: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of N x H x W maps with a 1-D `kernel`; edges replicated, so shapes are kept.

    Computed as B_H @ map @ B_W^T with banded matrices that fold the replicated edges in: the same numbers as
    padding and two 1-D convolutions, but matrix products, which ONNX Runtime runs several times faster than
    one-channel convolutions (in an onnxruntime profile of PatchCore on screw the blur went to 0.4 ms/image).
    """
    height, width = (int(side) for side in maps.shape[-2:])
    return blur_matrix(height, kernel) @ maps @ blur_matrix(width, kernel).T


def blur_matrix(size: int, kernel: torch.Tensor) -> torch.Tensor:
    """size x size matrix B such that B @ x is x (length `size`) correlated with `kernel`, edges replicated."""
    radius = len(kernel) // 2
    rows = torch.arange(size)[:, None]
    columns = (rows + torch.arange(len(kernel))[None, :] - radius).clamp(0, size - 1)
    matrix = torch.zeros(size, size, dtype=kernel.dtype, device=kernel.device)
    return matrix.scatter_add_(1, columns, kernel.expand(size, -1).contiguous())
