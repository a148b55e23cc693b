#!/usr/bin/env python3
"""Writes an MVTec-layout folder of large grey images with small defects and exact masks (issue 16's test data).

Each image is a machined part on a camera-sized frame: a disc with fine turning marks (concentric rings 10 px
apart), slow shading and sensor grain, all drawn at full resolution. A defect image carries one small smeared spot
or scratch, `--defect-px` pixels across, at its original size, where the turning marks are wiped out (and the grey
darkened by 4 levels); its mask is exactly the pixels the defect changed by a grey level or more. A 320 px resize
averages the marks away, and the defect with them (about three pixels, 4 levels darker); at full resolution, or
half of it, the wiped-out marks are plain.

With `--from-screw DIR` the defects are instead cut from MVTec screw defect images (DIR in MVTec layout, masks
beside them) at their original size and pasted onto the part, with their masks.

    .venv/bin/python scripts/make_large_defect_set.py /tmp/t16_large --size 2048 --train 300 --test-good 75 \\
        --test-defect 75

Data goes where you point it (never into the repository: it is generated, and large).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

PART_GREY = 150.0
RING_AMPLITUDE = 12.0  # grey levels of the turning marks (10 px apart)
DEFECT_DARKENING = 4.0
# A scratch is 3 px wide: wiping the marks over 3 px of a 10 px period (and 4 levels) left five of five scratches
# invisible to the eye at full resolution (session h16, 2026-12-05). A real scratch catches the light differently:
# this darkening puts its line 12 levels (three times the grain) below the darkest turning mark, plain to see
# whichever way it runs (at 16, one lying along a mark's trough was still hard to see).
SCRATCH_DARKENING = 24.0


def _smooth(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: a cells x cells random grid upsampled bicubically."""
    grid = rng.uniform(-1, 1, size=(cells, cells)).astype(np.float32)
    return np.asarray(Image.fromarray(grid, "F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def good_part(rng: np.random.Generator, height: int, width: int):
    """(H x W float32 grey levels (0-255) of a turned part: disc, rings, shading and grain; its rings alone;
    (centre y, centre x, radius) of the part)."""
    ys, xs = np.ogrid[:height, :width]
    cy = height / 2 + rng.uniform(-0.03, 0.03) * height
    cx = width / 2 + rng.uniform(-0.03, 0.03) * width
    radius = np.hypot((ys - cy).astype(np.float32), (xs - cx).astype(np.float32))
    part_radius = 0.42 * min(height, width)
    period = 10.0 + rng.uniform(-0.5, 0.5)
    image = np.full((height, width), 70.0, dtype=np.float32)  # background
    on_part = radius < part_radius
    rings = RING_AMPLITUDE * np.sin(2 * np.pi * radius / period + rng.uniform(0, 2 * np.pi))
    rings = np.where(on_part, rings, 0.0).astype(np.float32)
    image = np.where(on_part, PART_GREY + rings, image)
    edge = np.abs(radius - part_radius) < 0.004 * min(height, width)
    image[edge] = 40.0
    image += 10.0 * _smooth(rng, (height, width), 6)
    image += rng.normal(0.0, 4.0, size=(height, width)).astype(np.float32)
    return image, rings, (cy, cx, part_radius)


def draw_defect(rng: np.random.Generator, image: np.ndarray, rings: np.ndarray, where, size: int) -> None:
    """A smeared spot (a disc `size` px across) or a scratch (`size` px long, 3 px wide) somewhere on the part, in
    place: the turning marks there are flattened to the part's grey and darkened by DEFECT_DARKENING grey levels
    (a scratch by SCRATCH_DARKENING).
    The mean grey barely moves, so a resize that averages the marks away also averages the defect away."""
    cy, cx, part_radius = where
    angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.8) * part_radius
    y, x = int(cy + distance * np.sin(angle)), int(cx + distance * np.cos(angle))
    half = size
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    darkening = DEFECT_DARKENING
    if rng.uniform() < 0.5:
        depth = np.clip(size / 2 - np.hypot(ys, xs) + 0.5, 0, 1)  # a disc with a one-pixel soft edge
    else:
        darkening = SCRATCH_DARKENING
        theta = rng.uniform(0, np.pi)
        along = xs * np.cos(theta) + ys * np.sin(theta)
        across = -xs * np.sin(theta) + ys * np.cos(theta)
        depth = np.clip(1.5 - np.abs(across) + 0.5, 0, 1) * (np.abs(along) <= size / 2)
    window = (slice(y - half, y + half + 1), slice(x - half, x + half + 1))
    image[window] -= (rings[window] + darkening) * depth


def pasted_screw_defect(rng: np.random.Generator, image: np.ndarray, where, screw: Path) -> None:
    """Pastes one MVTec screw defect (the mask's bounding box plus a margin) at its original size onto the part."""
    masks = sorted((screw / "ground_truth").glob("*/*_mask.png"))
    mask_path = masks[rng.integers(len(masks))]
    kind, stem = mask_path.parent.name, mask_path.name.removesuffix("_mask.png")
    source = np.asarray(Image.open(screw / "test" / kind / f"{stem}.png").convert("L"), dtype=np.float32)
    mask = np.asarray(Image.open(mask_path).convert("L")) > 127
    rows, cols = np.nonzero(mask)
    y0, y1 = max(0, rows.min() - 4), min(mask.shape[0], rows.max() + 5)
    x0, x1 = max(0, cols.min() - 4), min(mask.shape[1], cols.max() + 5)
    patch, patch_mask = source[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    cy, cx, part_radius = where
    angle, distance = rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.7) * part_radius
    y, x = int(cy + distance * np.sin(angle)), int(cx + distance * np.cos(angle))
    target = image[y : y + patch.shape[0], x : x + patch.shape[1]]
    # Only the defect's own pixels, shifted to the part's local grey level.
    target[patch_mask] = patch[patch_mask] - patch[~patch_mask].mean() + target[~patch_mask].mean()


def write_image(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(image, 0, 255).round().astype(np.uint8), "L").save(path, compress_level=1)


def make_set(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(args.seed)
    height, width = args.height or args.size, args.size
    root = args.out
    for i in range(args.train):
        write_image(root / "train" / "good" / f"{i:04d}.png", good_part(rng, height, width)[0])
    for i in range(args.test_good):
        write_image(root / "test" / "good" / f"{i:04d}.png", good_part(rng, height, width)[0])
    kind = "pasted" if args.from_screw else "small"
    for i in range(args.test_defect):
        image, rings, where = good_part(rng, height, width)
        before = np.clip(image, 0, 255).round()
        if args.from_screw:
            pasted_screw_defect(rng, image, where, args.from_screw)
        else:
            draw_defect(rng, image, rings, where, args.defect_px)
        mask = np.abs(np.clip(image, 0, 255).round() - before) >= 1
        mask = ndimage.binary_closing(mask, iterations=1)  # one region, not a speckle of changed pixels
        write_image(root / "test" / kind / f"{i:04d}.png", image)
        mask_path = root / "ground_truth" / kind / f"{i:04d}_mask.png"
        mask_path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(mask_path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder to write (MVTec layout)")
    parser.add_argument("--size", type=int, default=2048, help="image width in pixels")
    parser.add_argument("--height", type=int, default=None, help="image height (default: square)")
    parser.add_argument("--train", type=int, default=300)
    parser.add_argument("--test-good", type=int, default=75)
    parser.add_argument("--test-defect", type=int, default=75)
    parser.add_argument("--defect-px", type=int, default=20, help="defect size in pixels")
    parser.add_argument("--from-screw", type=Path, default=None, help="paste MVTec screw defects from this folder")
    parser.add_argument("--seed", type=int, default=0)
    make_set(parser.parse_args())


if __name__ == "__main__":
    main()
