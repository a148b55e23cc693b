"""Synthetic scenes with a rule about arrangement, for families that must see defects that are only wrong in context.

A scene is a tray with a 4 x 4 grid of slots. Every slot but two (EMPTY_SLOTS) holds a part: a rounded square whose
colour is set by its column (red, green, blue, yellow from left to right) and whose dark notch points one way per
row (up, right, down, left from top to bottom). Parts sit a little off-centre, and colour, size and lighting vary a
little from scene to scene, as on a real fixture.

Parts are small and far apart by default (PART_HALF: a part is about a third of the slot pitch, so two thirds of
the pitch is bare tray between neighbours): a detector that judges a patch by what lies within its receptive field
(PatchCore's spans about one part and the tray around it) then sees only parts and tray it has seen before on a
context defect; only a model that relates parts a pitch apart can tell. `part_half=DENSE_PART_HALF` gives the packed
trays of the first version, where neighbouring parts lie within PatchCore's reach.

Defects, each with an exact mask:
- local (wrong in themselves): "scratch" (a thin bright line across a part), "spot" (a dark blot);
- context (every patch looks like one seen on a good tray; only the arrangement is wrong): "swapped" (two parts of
  a row change places; mask: both), "rotated" (a part turned by 90, 180 or 270 degrees, so its notch points as
  another row's do), "missing" (a slot that should hold a part is empty; mask: where the part belongs), "extra"
  (one of the two slots that must stay empty holds a part).

`python -m ml.synthetic_scenes OUT` writes OUT/context and OUT/local, two MVTec-layout folders with the same
training images, for `python -m ml bench --data OUT/context --model context` (and --model patchcore).
Deterministic for a given seed. Numpy and Pillow only.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LOCAL_KINDS = ("scratch", "spot")
CONTEXT_KINDS = ("swapped", "rotated", "missing", "extra")
DEFECT_KINDS = LOCAL_KINDS + CONTEXT_KINDS
GRID = 4
EMPTY_SLOTS = ((1, 2), (2, 1))  # (row, column) of the slots a good tray leaves empty
COLOURS = np.array([[0.85, 0.2, 0.15], [0.2, 0.7, 0.25], [0.2, 0.35, 0.85], [0.9, 0.8, 0.15]])  # by column
NOTCH_TURNS = (0, 1, 2, 3)  # by row: quarter turns clockwise from "notch up"
BACKGROUND = np.array([0.32, 0.33, 0.35])
PART_HALF = (0.15, 0.18)  # a part's half-side as a fraction of the slot pitch (drawn per scene): sparse trays
DENSE_PART_HALF = (0.33, 0.36)  # packed trays, neighbours about a third of a part apart


@dataclass
class Scene:
    image: np.ndarray  # H x W x 3 uint8 RGB
    mask: np.ndarray  # H x W bool, all False for a good scene
    defect: str | None  # one of DEFECT_KINDS, or None


@dataclass
class _Part:
    row: int
    column: int
    colour: np.ndarray  # RGB in [0, 1]
    turns: int  # quarter turns clockwise of the notch from "up"


def _good_parts(rng: np.random.Generator) -> list[_Part]:
    parts = []
    for row in range(GRID):
        for column in range(GRID):
            if (row, column) in EMPTY_SLOTS:
                continue
            colour = np.clip(COLOURS[column] + rng.normal(0, 0.03, 3), 0, 1)
            parts.append(_Part(row, column, colour, NOTCH_TURNS[row]))
    return parts


def _part_pixels(size: int, centre: tuple[float, float], half: float, turns: int) -> tuple[np.ndarray, np.ndarray]:
    """(body mask, notch mask) of a rounded square of half-side `half` at `centre` with its notch turned."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    dy, dx = yy - centre[0], xx - centre[1]
    corner = 0.3 * half
    qy, qx = np.maximum(np.abs(dy) - (half - corner), 0), np.maximum(np.abs(dx) - (half - corner), 0)
    body = (np.abs(dy) <= half) & (np.abs(dx) <= half) & (np.hypot(qy, qx) <= corner)
    # The notch in the part's own frame ("up"): a dark bar at the top edge, off to the left so that a half turn
    # is not a mirror image of the original.
    for _ in range(turns % 4):
        dy, dx = -dx, dy  # a quarter turn clockwise of the sampling frame
    notch = (dy < -0.45 * half) & (dy > -half) & (dx > -0.65 * half) & (dx < -0.05 * half)
    return body, notch & body


def _draw_part(canvas: np.ndarray, part: _Part, centre: tuple[float, float], half: float) -> np.ndarray:
    size = canvas.shape[0]
    body, notch = _part_pixels(size, centre, half, part.turns)
    canvas[body] = part.colour
    canvas[notch] = part.colour * 0.25
    return body


def _slot_centre(rng: np.random.Generator, size: int, row: int, column: int) -> tuple[float, float]:
    pitch = size / GRID
    jitter = 0.04 * pitch
    return (pitch * (row + 0.5) + rng.uniform(-jitter, jitter), pitch * (column + 0.5) + rng.uniform(-jitter, jitter))


def _scratch(rng: np.random.Generator, canvas: np.ndarray, centre: tuple[float, float], half: float) -> np.ndarray:
    size = canvas.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(0.9, 1.4) * half
    width = max(1.5, 0.18 * half)
    cy, cx = centre[0] + rng.uniform(-0.3, 0.3) * half, centre[1] + rng.uniform(-0.3, 0.3) * half
    along = (yy - cy) * np.sin(angle) + (xx - cx) * np.cos(angle)
    across = -(yy - cy) * np.cos(angle) + (xx - cx) * np.sin(angle)
    mask = (np.abs(along) < length / 2) & (np.abs(across) < width / 2)
    canvas[mask] = np.clip(canvas[mask] * 0.3 + 0.75, 0, 1)
    return mask


def _spot(rng: np.random.Generator, canvas: np.ndarray, centre: tuple[float, float], half: float) -> np.ndarray:
    size = canvas.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    cy, cx = centre[0] + rng.uniform(-0.4, 0.4) * half, centre[1] + rng.uniform(-0.4, 0.4) * half
    ry, rx = rng.uniform(0.3, 0.5, size=2) * half
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    canvas[mask] = canvas[mask] * 0.35 + np.array([0.12, 0.08, 0.04])
    return mask


def make_scene(
    seed: int, *, size: int = 256, defect: str | None = None, part_half: tuple[float, float] = PART_HALF
) -> Scene:
    """One tray. `defect=None` gives a good one; otherwise a defect of that kind (DEFECT_KINDS) with its mask.
    part_half: the range a part's half-side is drawn from, as a fraction of the slot pitch."""
    if defect is not None and defect not in DEFECT_KINDS:
        raise ValueError(f"unknown defect kind {defect!r}; expected one of {DEFECT_KINDS}")
    rng = np.random.default_rng(seed)
    light = rng.uniform(0.93, 1.07)
    canvas = np.ones((size, size, 3), np.float32) * BACKGROUND
    canvas += rng.normal(0, 0.015, (size // 8, size // 8, 1)).repeat(8, 0).repeat(8, 1)  # tray mottling
    parts = _good_parts(rng)
    half = size / GRID * rng.uniform(*part_half)
    mask = np.zeros((size, size), bool)
    marked: set[int] = set()  # indices of parts whose footprint is the defect
    placed = {(p.row, p.column): p for p in parts}

    if defect == "swapped":
        row = int(rng.integers(GRID))
        columns = [c for c in range(GRID) if (row, c) in placed]
        a, b = rng.choice(columns, size=2, replace=False)
        first, second = placed[(row, int(a))], placed[(row, int(b))]
        first.colour, second.colour = second.colour, first.colour
        marked |= {parts.index(first), parts.index(second)}
    elif defect == "rotated":
        index = int(rng.integers(len(parts)))
        parts[index].turns += int(rng.integers(1, 4))
        marked.add(index)
    elif defect == "missing":
        index = int(rng.integers(len(parts)))
        gone = parts.pop(index)
        centre = _slot_centre(rng, size, gone.row, gone.column)
        mask |= _part_pixels(size, centre, half, gone.turns)[0]
    elif defect == "extra":
        row, column = EMPTY_SLOTS[int(rng.integers(len(EMPTY_SLOTS)))]
        source = parts[int(rng.integers(len(parts)))]
        parts.append(_Part(row, column, source.colour.copy(), source.turns))
        marked.add(len(parts) - 1)

    centres = []
    for index, part in enumerate(parts):
        centre = _slot_centre(rng, size, part.row, part.column)
        centres.append(centre)
        body = _draw_part(canvas, part, centre, half)
        if index in marked:
            mask |= body
    if defect in LOCAL_KINDS:
        centre = centres[int(rng.integers(len(centres)))]
        mask |= (_scratch if defect == "scratch" else _spot)(rng, canvas, centre, half)

    canvas = canvas * light + rng.normal(0, 0.01, canvas.shape)
    image = (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)
    return Scene(image=image, mask=mask, defect=defect)


def make_scenes(
    *,
    n_good: int,
    kinds: tuple[str, ...] = (),
    per_kind: int = 0,
    size: int = 256,
    seed: int = 0,
    part_half: tuple[float, float] = PART_HALF,
) -> list[Scene]:
    """n_good good trays, then `per_kind` trays of each kind in `kinds`."""
    base = seed * 1_000_003
    scenes = [make_scene(base + i, size=size, part_half=part_half) for i in range(n_good)]
    for k, kind in enumerate(kinds):
        scenes += [
            make_scene(base + n_good + k * per_kind + i, size=size, defect=kind, part_half=part_half)
            for i in range(per_kind)
        ]
    return scenes


def write_mvtec_folders(
    out: Path | str,
    *,
    n_train: int = 200,
    n_test_good: int = 40,
    per_kind: int = 20,
    size: int = 256,
    seed: int = 0,
    part_half: tuple[float, float] = PART_HALF,
) -> tuple[Path, Path]:
    """Writes out/context (test: good + CONTEXT_KINDS) and out/local (test: good + LOCAL_KINDS) in MVTec layout
    (train/good, test/<kind>, ground_truth/<kind>/<name>_mask.png), both with the same training and good test
    trays. Returns the two folders."""
    from PIL import Image

    out = Path(out)
    train = make_scenes(n_good=n_train, size=size, seed=seed, part_half=part_half)
    good = make_scenes(n_good=n_test_good, size=size, seed=seed + 1, part_half=part_half)
    folders = []
    for name, kinds in (("context", CONTEXT_KINDS), ("local", LOCAL_KINDS)):
        root = out / name
        groups = {"train/good": train, "test/good": good}
        defects = make_scenes(n_good=0, kinds=kinds, per_kind=per_kind, size=size, seed=seed + 2, part_half=part_half)
        for kind in kinds:
            groups[f"test/{kind}"] = [scene for scene in defects if scene.defect == kind]
        for folder, scenes in groups.items():
            (root / folder).mkdir(parents=True, exist_ok=True)
            for index, scene in enumerate(scenes):
                Image.fromarray(scene.image).save(root / folder / f"{index:03d}.png")
                if scene.defect is not None:
                    masks = root / "ground_truth" / scene.defect
                    masks.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(scene.mask.astype(np.uint8) * 255).save(masks / f"{index:03d}_mask.png")
        folders.append(root)
    return folders[0], folders[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml.synthetic_scenes", description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder to write context/ and local/ into")
    parser.add_argument("--train", type=int, default=200, help="good training trays")
    parser.add_argument("--test-good", type=int, default=40, help="good test trays")
    parser.add_argument("--per-kind", type=int, default=20, help="test trays of each defect kind")
    parser.add_argument("--size", type=int, default=256, help="side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dense", action="store_true", help="packed trays (parts within PatchCore's reach)")
    args = parser.parse_args(argv)
    context, local = write_mvtec_folders(
        args.out, n_train=args.train, n_test_good=args.test_good, per_kind=args.per_kind, size=args.size,
        seed=args.seed, part_half=DENSE_PART_HALF if args.dense else PART_HALF,
    )  # fmt: skip
    print(f"wrote {context} and {local}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
