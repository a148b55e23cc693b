"""Between contract images (H x W x 3 uint8, any size) and fixed-size model tensors, and back for maps.

Resizing is bilinear with antialiasing, done in torch so training, prediction and ONNX callers share one path
(`Autoencoder.preprocess` / `UNetSegmenter.preprocess` expose it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights, the usual RGB -> grey conversion.
LUMA = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32).view(3, 1, 1)


def image_to_tensor(image: np.ndarray, size: int, *, grayscale: bool = False) -> torch.Tensor:
    """One image (H x W x 3 or H x W, uint8) as a C x size x size float32 tensor in [0, 1].

    C is 1 when `grayscale` (BT.601 luma), else 3.
    """
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    tensor = torch.from_numpy(np.ascontiguousarray(array[..., :3])).permute(2, 0, 1).float().div_(255.0)
    if grayscale:
        tensor = (tensor * LUMA).sum(dim=0, keepdim=True)
    if tensor.shape[-2:] != (size, size):
        resized = F.interpolate(tensor[None], size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        tensor = resized[0].clamp_(0.0, 1.0)
    return tensor


def images_to_batch(images: Sequence[np.ndarray], size: int, *, grayscale: bool = False) -> torch.Tensor:
    """Images of any sizes as one N x C x size x size float32 batch in [0, 1]."""
    return torch.stack([image_to_tensor(image, size, grayscale=grayscale) for image in images])


def images_to_uint8_batch(images: Sequence[np.ndarray], size: int, *, grayscale: bool = False) -> torch.Tensor:
    """Like `images_to_batch` but N x C x size x size uint8, a quarter of the memory for a cached training set."""
    return torch.stack(
        [image_to_tensor(image, size, grayscale=grayscale).mul_(255.0).round_().to(torch.uint8) for image in images]
    )


def map_to_image_size(score_map: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """A model-resolution map (h x w tensor) resized bilinearly to `shape` (H, W); returns float32 numpy."""
    if tuple(score_map.shape[-2:]) != tuple(shape):
        score_map = F.interpolate(score_map[None, None], size=shape, mode="bilinear", align_corners=False)[0, 0]
    return score_map.detach().cpu().numpy().astype(np.float32, copy=False)
