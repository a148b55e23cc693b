"""Large images as overlapping tiles at a working scale, and tile maps stitched back without seams (issue 16).

A family that looks at `tile` x `tile` inputs handles a 2448 x 2048 image by (1) bringing it to its working scale
(the longer side at `working_size` px, never enlarged; Pillow shrinks in C, by whole factors first), (2) cutting
that into tiles which overlap by `overlap` px and together cover every pixel, (3) running on all tiles as one
batch, and (4) stitching the tile maps with weights that ramp down across each overlap, divided by the summed
weights, so a map that is the same in every tile stitches to exactly that map (no seams). A small defect keeps
`working_size / image side` of its pixels instead of `tile / image side`.

All functions are pure numpy / torch; sizes are (height, width) in pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ml.images import to_rgb

# Features of a defect narrower than this many working-scale pixels fade into their 8 px patch (PatchCore's finest
# stride): the working scale chosen from an outlined defect keeps the smallest one at least this wide.
MIN_DEFECT_PX = 12


@dataclass(frozen=True)
class TileGrid:
    """Where the tiles of one working-scale image lie: `origins` are the (top, left) corners of `tile` x `tile`
    squares inside an image of `shape` (an image smaller than a tile is padded out to one tile)."""

    shape: tuple[int, int]
    tile: int
    overlap: int
    origins: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.origins)


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile starts along one axis: evenly spread, first at 0 and last flush with the end, each step at most
    tile - overlap (so neighbours overlap at least `overlap` px)."""
    if length <= tile:
        return [0]
    count = math.ceil((length - overlap) / (tile - overlap))
    count = max(count, 2)
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def tile_grid(shape: tuple[int, int], *, tile: int, overlap: int) -> TileGrid:
    """The grid covering an image of `shape` with `tile` px squares overlapping by at least `overlap` px."""
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be at least 0 and less than the tile ({tile} px), not {overlap}")
    height, width = shape
    origins = tuple((y, x) for y in _starts(height, tile, overlap) for x in _starts(width, tile, overlap))
    return TileGrid(shape=(height, width), tile=tile, overlap=overlap, origins=origins)


def working_shape(shape: tuple[int, int], working_size: int) -> tuple[int, int]:
    """(h, w) of an image of `shape` with its longer side at `working_size` px (never enlarged)."""
    height, width = shape
    scale = min(1.0, working_size / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def working_size_for_defect(long_side: int, smallest_defect_px: float | None, *, tile: int, default: int) -> int:
    """The working size (longer side, px) for images whose longer side is `long_side`: `default` when no defect is
    outlined, else large enough that the smallest outlined defect (its shorter extent, px at full size) keeps
    MIN_DEFECT_PX px, never below one tile nor above the image itself."""
    wanted = default
    if smallest_defect_px:
        wanted = math.ceil(long_side * min(1.0, MIN_DEFECT_PX / smallest_defect_px))
    return int(min(long_side, max(tile, wanted)))


def downscale(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """H x W x 3 uint8 -> shape[0] x shape[1] x 3 uint8, antialiased; large factors go through Pillow's whole-factor
    `reduce` first (box filter in C, `reducing_gap`), then a bilinear step. A grey image is resized as one channel."""
    if image.shape[:2] == tuple(shape):
        return image
    target = (shape[1], shape[0])
    gray = image.ndim == 3 and np.array_equal(image[::97, ::89, 0], image[::97, ::89, 1])
    gray = gray and np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 1], image[..., 2])
    if gray:
        small = Image.fromarray(np.ascontiguousarray(image[..., 0])).resize(
            target, Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        return np.repeat(np.asarray(small)[..., None], 3, axis=2)
    return np.asarray(Image.fromarray(image).resize(target, Image.Resampling.BILINEAR, reducing_gap=2.0))


def cut_tiles(image: np.ndarray, grid: TileGrid) -> np.ndarray:
    """H x W x C -> len(grid) x tile x tile x C (copies); an image smaller than a tile is edge-padded first."""
    height, width = image.shape[:2]
    size = grid.tile
    if height < size or width < size:
        pad = ((0, max(0, size - height)), (0, max(0, size - width))) + ((0, 0),) * (image.ndim - 2)
        image = np.pad(image, pad, mode="edge")
    return np.stack([image[y : y + size, x : x + size] for y, x in grid.origins])


def blend_weights(tile: int, overlap: int) -> torch.Tensor:
    """tile x tile float32 weights: 1 inside, ramping linearly down to 1 / (overlap + 1) at each edge over
    `overlap` px, never 0 (a pixel that only one tile covers keeps that tile's value)."""
    if overlap <= 0:
        return torch.ones(tile, tile)
    position = torch.arange(tile, dtype=torch.float32)
    distance = torch.minimum(position, tile - 1 - position)  # to the nearest edge
    ramp = ((distance + 1) / (overlap + 1)).clamp(max=1.0)
    return ramp[:, None] * ramp[None, :]


def stitch(tile_maps: torch.Tensor, grid: TileGrid) -> torch.Tensor:
    """len(grid) x tile x tile maps -> one map of grid.shape: the weighted mean of the tiles over each pixel."""
    height, width = grid.shape
    size = grid.tile
    full_h, full_w = max(height, size), max(width, size)
    total = torch.zeros(full_h, full_w)
    weight_sum = torch.zeros(full_h, full_w)
    weights = blend_weights(size, grid.overlap)
    for (y, x), tile_map in zip(grid.origins, tile_maps.float().cpu(), strict=True):
        total[y : y + size, x : x + size] += tile_map * weights
        weight_sum[y : y + size, x : x + size] += weights
    return (total / weight_sum)[:height, :width]


@dataclass
class TiledBatch:
    """The tiles of a batch of images: `tiles` N_tiles x tile x tile x 3 uint8 (images in order, each image's
    tiles in its grid's order), one grid per image and each image's own (height, width)."""

    tiles: np.ndarray
    grids: list[TileGrid]
    shapes: list[tuple[int, int]]

    def tile_ranges(self) -> list[slice]:
        """Which rows of `tiles` (and of any per-tile output) belong to each image."""
        ranges, start = [], 0
        for grid in self.grids:
            ranges.append(slice(start, start + len(grid)))
            start += len(grid)
        return ranges


def tile_images(images: Sequence[np.ndarray], *, working_size: int, tile: int, overlap: int) -> TiledBatch:
    """Each image (any of `to_rgb`'s inputs) decoded to RGB once, brought to its working scale and cut into tiles."""
    all_tiles, grids, shapes = [], [], []
    for image in images:
        rgb = to_rgb(image)
        shapes.append(rgb.shape[:2])
        working = downscale(rgb, working_shape(rgb.shape[:2], working_size))
        grid = tile_grid(working.shape[:2], tile=tile, overlap=overlap)
        grids.append(grid)
        all_tiles.append(cut_tiles(working, grid))
    return TiledBatch(tiles=np.concatenate(all_tiles), grids=grids, shapes=shapes)


class PositionStatistics:
    """Per-position mean and spread of good images' stitched anomaly maps, for parts that sit in the same place in
    every frame (issue 16). Over a large frame the turning marks, edges and background of each region give good
    patches their own typical distance to the bank: the highest raw distance of a good 2048 px frame is wherever
    the bank is thinnest, not where a defect is. Standardising each position by its own good statistics,
    (map - mean) / spread, lets a small defect stand out against what that position normally scores.

    Maps are accumulated at `stride` px per cell (PatchCore's patch stride at the working scale), one running
    sum per cell, so memory is one small map whatever the number of images."""

    def __init__(self, stride: int):
        self.stride = stride
        self.count = 0
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None

    def add(self, stitched_map: torch.Tensor) -> None:
        """One good image's stitched map at the working scale (every image must share the working shape)."""
        cells = pool_cells(stitched_map, self.stride).double()
        if self.total is None:
            self.total, self.squares = torch.zeros_like(cells), torch.zeros_like(cells)
        if cells.shape != self.total.shape:
            raise ValueError(f"position statistics need one working shape, got {tuple(cells.shape)} and "
                             f"{tuple(self.total.shape)}")  # fmt: skip
        self.total += cells
        self.squares += cells * cells
        self.count += 1

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, spread) cell maps, float32. The spread is the standard deviation, floored at SPREAD_FLOOR of its
        median so that a flat region (plain background) does not turn float noise into large scores."""
        if not self.count:
            raise ValueError("no maps were added")
        mean = self.total / self.count
        spread = (self.squares / self.count - mean * mean).clamp_min(0).sqrt()
        spread = spread.clamp_min(SPREAD_FLOOR * float(spread.median()) + 1e-12)
        return mean.float(), spread.float()


# Position statistics come from at most this many training images, evenly spread (each is read a second time).
POSITION_IMAGES = 48
# A position's spread is counted as at least this share of the median spread over all positions.
SPREAD_FLOOR = 0.25


def pool_cells(full_map: torch.Tensor, stride: int) -> torch.Tensor:
    """H x W map -> ceil(H / stride) x ceil(W / stride) cell means (a partial last cell averages what it holds)."""
    return F.avg_pool2d(full_map[None, None].float(), stride, ceil_mode=True)[0, 0]


def standardise(full_map: torch.Tensor, mean: torch.Tensor, spread: torch.Tensor) -> torch.Tensor:
    """(map - mean) / spread, the cell maps stretched bilinearly over `full_map`'s shape (an image of another size
    than the training images' is compared with the statistics at its own scale)."""
    size = tuple(full_map.shape)
    stretch = lambda cells: F.interpolate(cells[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]  # noqa: E731
    return (full_map - stretch(mean)) / stretch(spread)


def standardised_score(standardised_map: torch.Tensor, stride: int, top: int) -> float:
    """An image's score from its standardised map: the mean of its `top` highest cells (`stride` px each, one
    patch), so a defect of a few patches counts whatever the frame's size."""
    cells = pool_cells(standardised_map, stride).flatten()
    return float(cells.topk(min(top, len(cells))).values.mean())
