"""The one rule by which the unsupervised families choose their settings from the data they are given (issue 21).

A user who starts a line with 20 good images gets a model tuned for 20 images, not the defaults tuned for hundreds:
with few images the fit is cheap, so the rule spends what many images would have cost on more pixels (a larger
working size, never above the images' own resolution) and, when the parts appear at any angle, on rotated copies
of every good image. Measured on MVTec screw, 20 good images (docs/benchmarks.md, "Few-shot defaults"): the
defaults of the many-image case gave image AUROC 0.66 (one draw), the rule's choice 0.917 (mean of 5 draws).

The rule is pure and cheap (counts and sizes in, settings and one plain sentence out), so the Train page can show
what training will choose before it starts; whether the parts are rotation-invariant is only known once the images
are read (`ml.rotation_check`), so before that the sentence says what happens either way. Settings a person sets
by hand are never changed: a config field left at None ("auto") is the rule's to fill.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

# The working size with many images (the family default before issue 21) and the largest the rule picks.
DEFAULT_SIZE = 320
FEW_SHOT_SIZE = 512
MIN_SIZE = 128
SIZE_STEP = 32
# The working size is capped by the shorter side of the smaller images, not of the typical one: at most this share
# of the good images is enlarged. Enlarging adds no detail, and where sizes vary (magnetic tiles, 100-630 px)
# the median would enlarge almost half the images and show the same texture at scales far apart. Magnetic tile,
# top-10 score, seed 0, all 762 images: 256 px (the median's cap) 0.936, 224 px 0.936, 192 px 0.950, 160 px 0.959,
# 128 px 0.947; 20 images 0.70 (288 px), 0.73 (224), 0.76 (192), 0.78 (160), 0.77 (128). The lower quartile
# (217 px over all tiles) sits on the 224/192 boundary and picked 224 from 64 spaced images; the tenth (135 px)
# gives 128-192. A tenth, not the smallest image, so one thumbnail among 512 px parts does not shrink the model.
# Where every image has one size (MVTec screw, 512 px) nothing changes.
SMALL_IMAGES_SHARE = 0.1
# How many good images' sizes a fit reads for that cap, evenly spaced over the set (files are often named by batch
# or source, so the first few are not a fair sample).
SIZE_PROBE_IMAGES = 64
# Up to this many good images is "few": the fit is cheap, and every extra pixel and angle is worth its cost.
FEW_IMAGES = 50
ROTATION_CHOICES = (16, 8, 4, 2)
# What a fit may cost, in images at DEFAULT_SIZE through the backbone: 320 images, the size of MVTec screw's
# training set, which fits in about 30 CPU-seconds here. Rotated copies are budgeted against it, so 20 images at
# 512 px get 8 angles and 10 images 16.
WORK_BUDGET = 420
DEFAULT_CORESET_RATIO = 0.01
# The mean of the 10 highest patch distances ranks parts more steadily than the single highest: with few images
# (screw, 20 images, 512 px, 8 angles, 5 draws) +0.010 to +0.035 image AUROC in every draw, mean 0.898 -> 0.917;
# with all images screw 0.975 -> 0.977 and magnetic tile (256 px) 0.898 -> 0.936.
DEFAULT_SCORE = "top_mean"


@dataclass(frozen=True)
class ChosenSettings:
    """What the rule chose (or what a person set, which it keeps), and why, in one sentence for the app.

    image_size: working side in pixels. rotations: copies of each good image at equally spaced angles (1: none).
    coreset_ratio: share of the training patches kept in the memory bank. score: how patch distances make the
    image score (PatchCoreConfig.score). chosen: the names of the settings the rule filled in (the others were set
    by hand). sentence: what a person reads on the Train and version pages.
    """

    image_size: int
    rotations: int
    coreset_ratio: float
    score: str = DEFAULT_SCORE
    chosen: tuple[str, ...] = ()
    sentence: str = ""
    facts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["chosen"] = list(self.chosen)
        return data

    def settings(self) -> dict:
        """The config values (what a family's config takes)."""
        return {
            "image_size": self.image_size,
            "rotations": self.rotations,
            "coreset_ratio": self.coreset_ratio,
            "score": self.score,
        }


def typical_short_side(sizes: Iterable[tuple[int, int]]) -> int | None:
    """The shorter side, in pixels, that all but the smallest SMALL_IMAGES_SHARE of (width, height) pairs reach;
    None when there are none. The working size is kept at or below it."""
    sides = sorted(min(width, height) for width, height in sizes)
    return sides[int(len(sides) * SMALL_IMAGES_SHARE)] if sides else None


def short_side_of(samples: Sequence, indices: Sequence[int]) -> int | None:
    """typical_short_side of the images at `indices`: of every one of them where `samples` can tell their sizes
    without decoding them (an `image_sizes(indices)` method giving (width, height) pairs: files' headers, the app's
    database), else of a probe of up to SIZE_PROBE_IMAGES decoded ones. Every image, not a probe, where it is cheap:
    a probe's 10th percentile depends on which images it meets (magnetic tile, whose shorter sides jump from 135 to
    180 px at that share: 130 px in one order, 196 in another), and the plan, the fit and the bench must agree."""
    sizes_of = getattr(samples, "image_sizes", None)
    if sizes_of is not None:
        return typical_short_side(sizes_of(list(indices)))
    shapes = (samples[index].image.shape[:2] for index in size_probe(indices))
    return typical_short_side((width, height) for height, width in shapes)


def size_probe(indices: Sequence[int]) -> list[int]:
    """Up to SIZE_PROBE_IMAGES of `indices`, evenly spaced (all of them when there are no more)."""
    if len(indices) <= SIZE_PROBE_IMAGES:
        return list(indices)
    step = len(indices) / SIZE_PROBE_IMAGES
    return [indices[int(k * step)] for k in range(SIZE_PROBE_IMAGES)]


def _wanted_size(n_good: int) -> int:
    return FEW_SHOT_SIZE if n_good <= FEW_IMAGES else DEFAULT_SIZE


def _size_for(n_good: int, short_side: int | None) -> int:
    wanted = _wanted_size(n_good)
    if short_side:
        # Enlarging adds no detail: each patch would only see less of the part.
        wanted = min(wanted, max(MIN_SIZE, short_side // SIZE_STEP * SIZE_STEP))
    return wanted


def _rotations_for(n_good: int, image_size: int) -> int:
    """The most angles the work budget allows for few images (1 when they are not few)."""
    if n_good > FEW_IMAGES:
        return 1
    per_copy = max(1, n_good) * (image_size / DEFAULT_SIZE) ** 2
    return next((r for r in ROTATION_CHOICES if r * per_copy <= WORK_BUDGET), 1)


def choose_settings(
    *,
    n_good: int,
    short_side: int | None = None,
    rotation_invariant: bool | None = None,
    requested: Mapping[str, object] | None = None,
) -> ChosenSettings:
    """The settings for fitting on `n_good` good images whose typical shorter side is `short_side` px.

    rotation_invariant: whether the parts appear at any angle (ml.rotation_check); None when not known yet (the
    Train page), in which case rotations are planned as if they were and the sentence says it depends.
    requested: the config as a person set it; a value that is not None there is kept and not chosen.
    """
    requested = requested or {}
    asked = {key: value for key, value in requested.items() if value is not None}
    chosen = []
    if "image_size" in asked:
        image_size = int(asked["image_size"])
    else:
        image_size = _size_for(n_good, short_side)
        chosen.append("image_size")
    if "rotations" in asked:
        rotations = int(asked["rotations"])
    else:
        rotations = _rotations_for(n_good, image_size) if rotation_invariant is not False else 1
        chosen.append("rotations")
    if "coreset_ratio" in asked:
        coreset_ratio = float(asked["coreset_ratio"])
    else:
        coreset_ratio = DEFAULT_CORESET_RATIO
        chosen.append("coreset_ratio")
    if "score" in asked:
        score = str(asked["score"])
    else:
        score = DEFAULT_SCORE
        chosen.append("score")
    facts = {"n_good": n_good, "short_side": short_side, "rotation_invariant": rotation_invariant}
    sentence = _sentence(n_good, image_size, rotations, rotation_invariant, chosen, asked)
    return ChosenSettings(image_size, rotations, coreset_ratio, score, tuple(chosen), sentence, facts)


def _sentence(
    n_good: int, image_size: int, rotations: int, invariant: bool | None, chosen: list[str], asked: Mapping
) -> str:
    images = f"{n_good} good image{'' if n_good == 1 else 's'}"
    size = f"works at {image_size} px" + ("" if "image_size" in chosen else " (your setting)")
    if "rotations" not in chosen:
        turned = f"adds {_copies(rotations)} of each" if rotations > 1 else "adds no rotated copies"
        turned += " (your setting)"
    elif rotations > 1 and invariant is None:
        turned = f"adds {_copies(rotations)} of each if the parts appear at any angle (it checks when training starts)"
    elif rotations > 1:
        turned = f"adds {_copies(rotations)} of each, because the parts appear at any angle"
    elif invariant is False and n_good <= FEW_IMAGES:
        turned = "adds no rotated copies, because the parts keep one orientation"
    else:
        turned = "" if n_good > FEW_IMAGES else "adds no rotated copies"
    why = ""
    if "image_size" in chosen and image_size < _wanted_size(n_good):
        why = "sized to the resolution of the images"  # no apostrophe: pages escape it, tests compare the text
    elif "image_size" in chosen and n_good <= FEW_IMAGES:
        why = "few enough to afford more detail"
    parts = [size + (f" ({why})" if why else "")] + ([turned] if turned else [])
    return f"{images}: Kensa " + " and ".join(parts) + "."


def _copies(rotations: int) -> str:
    extra = rotations - 1
    return f"{extra} rotated cop{'y' if extra == 1 else 'ies'}"


def explain(chosen: ChosenSettings | Mapping | None) -> str:
    """The sentence of a stored choice (a ChosenSettings or its dict); "" when there is none (older models)."""
    if chosen is None:
        return ""
    if isinstance(chosen, ChosenSettings):
        return chosen.sentence
    return str(chosen.get("sentence", ""))
