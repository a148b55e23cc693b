"""Image plumbing shared by every family: any input to uint8 RGB, resizing, batches of model-ready tensors, and maps
back to an image's size.

Two resize paths, each the one its families were trained with (so saved models keep their numbers):
- `to_tensor` (PatchCore, Gaussian): Pillow's antialiased filters on uint8 RGB, then the backbone's mean/std;
- `image_to_tensor` / `images_to_batch` (autoencoder, U-Net): torch bilinear with antialiasing on [0, 1] floats,
  the same code path that training, prediction and ONNX callers share.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ml.backbones import Preprocessing

# ITU-R BT.601 luma weights, the usual RGB -> grey conversion.
LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(3, 1, 1)

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


def unit_tensor(image: np.ndarray) -> torch.Tensor:
    """One H x W, H x W x 1, H x W x 3 or H x W x 4 uint8 image as a 3 x H x W float32 tensor in [0, 1]."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float().div_(255.0)


def resize_unit(tensor: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A C x H x W tensor in [0, 1] resized to `shape` (bilinear, antialiased), kept in [0, 1]."""
    if tuple(tensor.shape[-2:]) == tuple(shape):
        return tensor
    resized = F.interpolate(tensor[None], size=tuple(shape), mode="bilinear", align_corners=False, antialias=True)
    return resized[0].clamp_(0.0, 1.0)


def image_to_tensor(image: np.ndarray, size: int, *, grayscale: bool = False) -> torch.Tensor:
    """One image (H x W x 3 or H x W, uint8) as a C x size x size float32 tensor in [0, 1].

    C is 1 when `grayscale` (BT.601 luma), else 3.
    """
    tensor = unit_tensor(image)
    if grayscale:
        tensor = (tensor * LUMA).sum(dim=0, keepdim=True)
    return resize_unit(tensor, (size, size))


def images_to_batch(images: Sequence[np.ndarray], size: int, *, grayscale: bool = False) -> torch.Tensor:
    """Images of any sizes as one N x C x size x size float32 batch in [0, 1]."""
    return torch.stack([image_to_tensor(image, size, grayscale=grayscale) for image in images])


def images_to_uint8_batch(images: Sequence[np.ndarray], size: int, *, grayscale: bool = False) -> torch.Tensor:
    """Like `images_to_batch` but N x C x size x size uint8, a quarter of the memory for a cached training set."""
    return torch.stack(
        [image_to_tensor(image, size, grayscale=grayscale).mul_(255.0).round_().to(torch.uint8) for image in images]
    )


def map_to_image_size(score_map: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """A model-resolution map (h x w tensor, any device) resized bilinearly to `shape` (H, W); float32 numpy."""
    return resize_map(score_map.detach().float(), shape).cpu().numpy()
