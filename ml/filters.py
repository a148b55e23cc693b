"""Small image filters in torch, every family's: Gaussian smoothing (two edge rules) and SSIM, all ONNX-exportable.

- `gaussian_blur` / `ssim_map` (autoencoder, U-Net): N x C x H x W, reflect-padded convolutions, so outputs keep
  the input's size and borders are not darkened by zero padding (which would read as anomalous edges).
- `blur_maps` (PatchCore, Gaussian): N x H x W anomaly maps, edges replicated, as banded matrix products.
Each family keeps the rule it was trained and calibrated with; both share `gaussian_kernel1d`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_kernel1d(sigma: float, radius: int | None = None) -> torch.Tensor:
    """A normalised 1-D Gaussian of length 2 * radius + 1 (radius defaults to 3 sigma, rounded up)."""
    if radius is None:
        radius = max(1, int(3.0 * sigma + 0.5))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    return kernel / kernel.sum()


def _separable_filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolves every channel of `x` (N x C x H x W) with `kernel` along rows then columns, reflect-padded."""
    n, channels, height, width = x.shape
    radius = kernel.numel() // 2
    # Reflect padding needs the pad to be smaller than the side; tiny maps get a shorter reach instead.
    radius = min(radius, height - 1, width - 1)
    if radius <= 0:
        return x
    centre = kernel.numel() // 2
    kernel = kernel[centre - radius : centre + radius + 1]
    kernel = (kernel / kernel.sum()).to(x)
    # Channels are folded into the batch so the weight has a fixed shape (the ONNX exporter needs that).
    planes = x.reshape(-1, 1, height, width)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
    return planes.reshape(n, channels, height, width)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of each channel of `x` (N x C x H x W); sigma in pixels; sigma <= 0 returns `x`."""
    if sigma <= 0:
        return x
    return _separable_filter(x, gaussian_kernel1d(sigma))


def ssim_map(
    x: torch.Tensor, y: torch.Tensor, *, window: int = 11, sigma: float = 1.5, data_range: float = 1.0
) -> torch.Tensor:
    """Per-pixel structural similarity of `x` and `y` (both N x C x H x W, values in [0, data_range]).

    Gaussian-weighted local statistics over a `window` x `window` neighbourhood (Wang et al. 2004 constants).
    Returns N x C x H x W, 1 where the images agree locally, lower where they differ.
    """
    kernel = gaussian_kernel1d(sigma, radius=window // 2)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x = _separable_filter(x, kernel)
    mu_y = _separable_filter(y, kernel)
    var_x = _separable_filter(x * x, kernel) - mu_x * mu_x
    var_y = _separable_filter(y * y, kernel) - mu_y * mu_y
    cov_xy = _separable_filter(x * y, kernel) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return numerator / denominator


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """The anomaly-map kernel: 1-D Gaussian weights of length 2 * ceil(4 sigma) + 1, summing to 1."""
    return gaussian_kernel1d(sigma, radius=max(1, math.ceil(4 * sigma)))


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
