"""A defect head on PatchCore's view of the image (family "hybrid"): learns from drawn defects, keeps knowing good.

PatchCore is fitted on the good images as usual. A small convolutional head then reads, at every patch, the
frozen backbone's patch features plus PatchCore's distance to the nearest good patch (the prior, in units of the
good images' own distances), and is trained to say which patches are defective and of which class:
- positives: the drawn defects (masks, or boxes: inside a box only the patches PatchCore finds most unusual count,
  the rest of the box is left out of the loss, outside every box is good), plus cut-and-paste copies of the drawn
  defects onto good images at random places (more positives from a few drawings, on backgrounds that vary);
- negatives: every patch of a sample of good images (hard negatives: the patches PatchCore finds unusual on good
  parts teach the head what not to flag), scored with their own patches left out of the bank
  (`ml.calibration`), so a training image's prior looks like an unseen one's.
The prior also reaches the output directly (a learned scale and offset on the defect logit), so where the head has
learned nothing the model still behaves like PatchCore.

Where outlines were drawn and `refine_masks` is set, a small MaskRefiner then learns to sharpen the patch grid's
map (stride 8, pooled over neighbours: outlines several pixels too wide) from the image's own pixels at half the
working size. Where `guided_outline` is set, the upsampled map is then sharpened by a guided filter with the image
as guide (He, Sun and Tang, "Guided image filtering", 2010): in each small window the map is refitted as a linear
function of the image's grey level, so the outline follows the image's own edges. It learns nothing, costs a few box
filters per image and leaves the image score (from the patch grid) unchanged. Where `fine_outline` is set and outlines
were drawn, the outline is cut from a finer map: a FineOutline branch reads the backbone's stride-4 stage (the same
frozen weights, run again up to that stage) with the patch grid's log-odds upsampled to it, and learns from the drawn
outlines where, at 4-pixel resolution, the defect's edge runs (the grid, pooled over 3 x 3 patches of 8 px, capped
magnetic tile's mean IoU at about 0.50 in a model-free check; stride 4 at about 0.87); the guided filter follows.
The anomaly map stays the patch grid's (the fine branch's map lowered magnetic tile's AU-PRO 0.924 -> 0.912).

Output: anomaly_map = the defect probability at the image's resolution, mask = probability >= mask_threshold (the
fine branch's probability where it draws the outline), score = the highest probability of the (lightly smoothed)
patch grid, class_mask and detections (box, class, probability) where defects are found, from the mask.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ml.calibration import leave_own_out_distances, patchcore_patch_distances
from ml.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from ml.detections import box_iou, detections_from_map
from ml.devices import check_device_spec, resolve_device, resolve_saved_device
from ml.images import resize_image
from ml.patchcore import PatchCore
from ml.segmentation_scores import mask_iou
from ml.training import TrainingSummary
from ml.types import DEFECT, GOOD, Box, Prediction, ProgressCallback, Sample, no_progress

FAMILY = "hybrid"
PRIOR_PREFIX, HEAD_PREFIX, REFINER_PREFIX = "prior.", "head.", "refine."  # tensor name prefixes in the one checkpoint
FINE_PREFIX = "fine."
REFINE_CROP, REFINE_BATCH = 48, 32  # the refiner's training crops (pixels at its resolution) and batch
FINE_STRIDE, FINE_CROP = 4, 32  # the fine branch's stride (pixels per cell) and its training crops (cells)
# Outline cut points tried on the training defects: probabilities from even odds up to 1 - 1e-6 (a defect's core
# saturates, so the tight cuts that separate its edge from its core sit close to 1).
MASK_THRESHOLDS = (0.5, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999, 0.9997, 0.9999, 0.99997, 0.99999, 0.999997, 0.999999)


@dataclass
class HybridConfig:
    """Everything that defines a hybrid model; saved in its checkpoint.

    patchcore: the inner PatchCore's settings (image_size among them: the working size of both). head_good_images:
    good images whose patches are the head's negatives. synthetic_per_defect: cut-and-paste copies per drawn
    defect image. box_positive_share: inside a drawn box, the share of patches (most unusual first) taken as defect.
    refine_masks: where outlines were drawn, also train a MaskRefiner (at 1 / refine_stride of the working size) that
    sharpens the patch grid's map with the image's own pixels; boxes alone give no pixel truth to learn it from.
    Off by default: on glass (8 channels, 8 epochs) it lowered mean IoU 0.600 -> 0.532 (scripts/bench_hybrid_refiner.py,
    docs/benchmarks.md), and its 25 epochs cost about 10 CPU s each on glass's 72 outlined rows.
    guided_outline: sharpen the upsampled map with a guided filter (`guided_filter`: window radius guide_radius
    pixels at the working size, regularisation guide_eps in units of the image's own grey-level variance). On by
    default: on magnetic tile (150 good images, seed 0, one fit) mean IoU 0.397 -> 0.412, AU-PRO 0.925 -> 0.924,
    image AUROC unchanged (scripts/bench_hybrid_guided.py, docs/benchmarks.md).
    fine_outline: where outlines were drawn (and no refiner is asked for), train a FineOutline (fine_hidden_channels
    wide, fine_epochs epochs; with fine_jitter, on the head's log-odds scaled by U(0.5, 1.5) and shifted by
    U(-2, 2) per training crop, as the head is less sure on unseen images than on its training rows) that redraws
    the patch grid's map at stride 4 from the backbone's stride-4 stage, before the guided filter, for the outline
    (mask, detections) only: the anomaly map and the image score stay the patch grid's. Skipped where the patch
    grid is at stride 4 already or the backbone is not EfficientNet-style.
    On by default: on magnetic tile (150 good images, seed 0, one fit) mean IoU 0.411 -> 0.464 (validation 0.419 ->
    0.474; 20 epochs 16 wide: 0.446, validation 0.443), AU-PRO 0.924 and image AUROC unchanged; about 85 CPU s more
    per fit and 50 CPU ms more per 320 px image (scripts/bench_hybrid_fine.py, docs/benchmarks.md).
    fine_dice: train the fine branch on its per-cell loss plus a soft Dice loss per crop (`outline_loss`), which
    counts a defect's cells against its own size, so a small defect's outline weighs as much as a large one's.
    On by default: on magnetic tile (150 good images, seed 0, the fine branch retrained from one head with and
    without, same crops) validation mean IoU up in 5 of 6 pairs: one class, four pairs 0.484 -> 0.487 (-0.015 to
    +0.013), test 0.475 -> 0.498; defect types as classes (f235814), two pairs 0.421 -> 0.487, test 0.396 -> 0.432;
    the anomaly map and image score do not move (scripts/probe_outline_iou.py, docs/benchmarks.md, "Outline IoU per
    image, and a Dice loss (helper h20d)").
    """

    image_size: int = 320
    patchcore: dict = field(default_factory=dict)
    hidden_channels: int = 32
    head_good_images: int = 32
    synthetic_per_defect: float = 1.0
    box_positive_share: float = 0.5
    epochs: int = 30
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-3
    positive_weight: float = 4.0
    mask_threshold: float = 0.5
    classes: tuple[str, ...] = ()
    refine_masks: bool = False
    refine_stride: int = 2
    refine_hidden_channels: int = 16
    refine_epochs: int = 25
    guided_outline: bool = True
    guide_radius: int = 4
    guide_eps: float = 0.01
    fine_outline: bool = True
    fine_hidden_channels: int = 32
    fine_epochs: int = 60
    fine_jitter: bool = True
    fine_dice: bool = True
    seed: int = 0
    device: str = "auto"
    prior_scale: float = 1.0  # set by fit: the 99th percentile of good patch distances (leave-own-out)

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        self.device = check_device_spec(self.device)

    def to_dict(self) -> dict:
        return {"family": FAMILY, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


def _head_body(channels: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels + 1, hidden, 1),
        nn.ReLU(inplace=True),
        nn.Dropout2d(0.1),
        nn.Conv2d(hidden, hidden, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, hidden, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(hidden, outputs, 1),
    )


class DefectHead(nn.Module):
    """Patch features + prior (N x (C + 1) x h x w) -> logits N x (1 + classes) x h x w (channel 0: good).

    With several classes and `namer` (every fit since session 9), one body tells defect from good and a second one
    of the same shape, the namer, names the class: class k's logit is the defect logit plus log P(class k), so
    P(defect) is the body's alone and the class term of the loss trains only the namer. When one body did both
    (older checkpoints, which load that way), the class term, averaged over a line's few defect patches, outweighed
    the defect term and taught it classes more than defects: MVTec screw, half outlined, five types, test image
    AUROC 0.788 and AU-PRO 0.861 against 0.935 and 0.943 with one class (docs/benchmarks.md)."""

    def __init__(self, channels: int, hidden: int, classes: int, *, namer: bool = False):
        super().__init__()
        separate = namer and classes > 1
        self.body = _head_body(channels, hidden, 2 if separate else 1 + classes)
        self.namer = _head_body(channels, hidden, classes) if separate else None
        # The prior's direct path: defect logits += prior_gain * (prior - prior_offset), starting like PatchCore
        # (a patch at the good images' 99th percentile distance sits at even odds).
        self.prior_gain = nn.Parameter(torch.tensor(4.0))
        self.prior_offset = nn.Parameter(torch.tensor(1.0))

    def forward(self, features: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        inputs = torch.cat([features, prior[:, None]], dim=1)
        logits = self.body(inputs)
        if self.namer is not None:
            logits = torch.cat([logits[:, :1], logits[:, 1:] + F.log_softmax(self.namer(inputs), dim=1)], dim=1)
        direct = self.prior_gain * (prior - self.prior_offset)
        return torch.cat([logits[:, :1], logits[:, 1:] + direct[:, None]], dim=1)


def defect_log_probability(logits: torch.Tensor) -> torch.Tensor:
    """log P(defect) per patch from logits N x (1 + K) x h x w (the good class is channel 0)."""
    return torch.logsumexp(logits[:, 1:], dim=1) - torch.logsumexp(logits, dim=1)


def defect_log_odds(logits: torch.Tensor) -> torch.Tensor:
    """log P(defect) - log P(good) per patch from logits N x (1 + K) x h x w."""
    return torch.logsumexp(logits[:, 1:], dim=1) - logits[:, 0]


# The coarse log-odds reach the refiner clipped: a saturated core says no more about the edge than a confident one.
COARSE_CLIP = 12.0


class MaskRefiner(nn.Module):
    """(image pixels N x 4 x H x W, the patch grid's defect log-odds upsampled N x 1 x H x W) -> sharper log-odds.

    The patch grid (stride 8, each patch pooled over its neighbours) says where a defect is but draws it several
    pixels too wide; a few dilated convolutions over the image's own pixels (receptive field 31 px at this
    resolution) learn where its edge runs. The coarse log-odds pass through with a learned gain, so an untrained
    refiner is the coarse map."""

    def __init__(self, hidden: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(5, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=4, dilation=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=8, dilation=8),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )
        self.coarse_gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, pixels: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        coarse = coarse.clamp(-COARSE_CLIP, COARSE_CLIP)
        return self.coarse_gain * coarse + self.body(torch.cat([pixels, coarse / COARSE_CLIP], dim=1))


class FineOutline(nn.Module):
    """(the backbone's stride-4 features N x C x h x w, the patch grid's defect log-odds upsampled to them
    N x 1 x h x w) -> defect log-odds N x 1 x h x w at stride 4.

    The features are standardised per channel with the training rows' own mean and spread (saved as buffers), read
    by a 1 x 1 convolution and two 3 x 3 ones (one dilated: 7 cells, 28 px of context) with the clipped coarse
    log-odds; the coarse log-odds also pass through with a learned gain, and the last layer starts at zero, so an
    untrained branch is the patch grid's map."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(channels))
        self.register_buffer("feature_std", torch.ones(channels))
        self.body = nn.Sequential(
            nn.Conv2d(channels + 1, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)
        self.coarse_gain = nn.Parameter(torch.tensor(1.0))

    def forward(self, features: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        features = (features - self.feature_mean[:, None, None]) / self.feature_std[:, None, None]
        coarse = coarse.clamp(-COARSE_CLIP, COARSE_CLIP)
        return self.coarse_gain * coarse + self.body(torch.cat([features, coarse / COARSE_CLIP], dim=1))


@torch.no_grad()
def stride4_features(patchcore: PatchCore, images: Sequence[np.ndarray]) -> torch.Tensor:
    """The backbone's stride-4 stage N x C x S/4 x S/4 for images at the working size S: the PatchCore's own frozen
    extractor (brightness matched as its embed does) run eagerly from its stem through the last block before stride
    8, no further. EfficientNet-style extractors (conv_stem, bn1, blocks) only."""
    extractor = patchcore.features.extractor
    if not all(hasattr(extractor, name) for name in ("conv_stem", "bn1", "blocks")):
        raise ValueError("the fine outline needs an EfficientNet-style backbone (conv_stem, bn1, blocks)")
    batch = patchcore._batch(images)
    if patchcore.config.brightness == "match_mean" and patchcore.reference_brightness > 0:
        batch = patchcore._match_brightness(batch)
    size = batch.shape[-1]
    x = extractor.bn1(extractor.conv_stem(batch.contiguous(memory_format=torch.channels_last)))
    for block in extractor.blocks:
        strided = any(isinstance(m, nn.Conv2d) and max(m.stride) > 1 for m in block.modules())
        if strided and size // x.shape[-1] * 2 > FINE_STRIDE:
            break
        x = block(x)
    if size // x.shape[-1] != FINE_STRIDE:
        raise ValueError(f"the backbone has no stride-{FINE_STRIDE} stage before its patch grid")
    return x.contiguous()


def outline_crop_windows(
    coarse: torch.Tensor, truth: torch.Tensor, crop: int, rng: np.random.Generator
) -> list[tuple[int, slice, slice, slice]]:
    """Training crops for an outline network, as index windows (row, channels, rows, columns) into N x C x f x f
    maps: per row, one on the coarse map's peak (on a good image, its false alarm), one at random and, where the
    row has defect cells (truth >= 0.5), two centred on them."""
    fine = coarse.shape[-1]
    windows = []
    for k in range(len(coarse)):
        defect_cells = torch.nonzero(truth[k, 0] >= 0.5)
        centres = [divmod(int(coarse[k, 0].argmax()), fine), tuple(rng.integers(0, fine, 2))]
        for _ in range(2 if len(defect_cells) else 0):
            centres.append(tuple(defect_cells[int(rng.integers(len(defect_cells)))].tolist()))
        for cy, cx in centres:
            y0 = int(np.clip(cy - crop // 2, 0, fine - crop))
            x0 = int(np.clip(cx - crop // 2, 0, fine - crop))
            windows.append((k, slice(None), slice(y0, y0 + crop), slice(x0, x0 + crop)))
    return windows


def soft_dice_loss(logits: torch.Tensor, truth: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over crops (N x 1 x h x w) of 1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth), p the sigmoid of
    the logits, t the target share per cell. `smooth` (in cells) keeps a crop without defect from counting a few
    stray cells as a whole miss."""
    probability = logits.sigmoid().flatten(1)
    truth = truth.flatten(1)
    overlap = (probability * truth).sum(dim=1)
    return (1 - (2 * overlap + smooth) / (probability.sum(dim=1) + truth.sum(dim=1) + smooth)).mean()


def outline_loss(
    logits: torch.Tensor, truth: torch.Tensor, *, positive_weight: torch.Tensor | None = None, dice: bool = False
) -> torch.Tensor:
    """An outline network's training loss on crops: per-cell binary cross-entropy (defect cells weighted
    `positive_weight`), plus with `dice` the soft Dice loss per crop (`soft_dice_loss`)."""
    loss = F.binary_cross_entropy_with_logits(logits, truth, pos_weight=positive_weight)
    return loss + soft_dice_loss(logits, truth) if dice else loss


def guide_image(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Working-size H x W x 3 uint8 images -> N x 1 x size x size grey levels standardised per image (so the guided
    filter's eps is in units of the image's own contrast and a lighting change moves nothing)."""
    batch = torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2).float() / 255
    grey = F.interpolate(batch, size=(size, size), mode="area").mean(dim=1, keepdim=True)
    grey = grey - grey.mean(dim=(2, 3), keepdim=True)
    return grey / grey.std(dim=(2, 3), keepdim=True).clamp_min(0.02)


def guided_filter(guide: torch.Tensor, source: torch.Tensor, radius: int, eps: float) -> torch.Tensor:
    """He et al.'s guided filter: `source` (N x 1 x H x W) refitted in every (2 radius + 1)^2 window as a * guide + b
    by least squares (a shrunk towards 0 by eps), the coefficients then averaged over the windows that hold each
    pixel. Where the guide is flat the source is smoothed; where it has an edge the output follows that edge."""

    def mean(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t, 2 * radius + 1, stride=1, padding=radius, count_include_pad=False)

    mean_guide, mean_source = mean(guide), mean(source)
    covariance = mean(guide * source) - mean_guide * mean_source
    variance = mean(guide * guide) - mean_guide * mean_guide
    a = covariance / (variance + eps)
    b = mean_source - a * mean_guide
    return mean(a) * guide + mean(b)


def refiner_pixels(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Working-size H x W x 3 uint8 images -> N x 4 x size x size: the colours centred and scaled per image (so a
    lighting change moves nothing), and the grey level against its 9 x 9 surroundings (where edges and thin marks
    show)."""
    batch = torch.from_numpy(np.stack([np.asarray(image) for image in images])).permute(0, 3, 1, 2).float() / 255
    batch = F.interpolate(batch, size=(size, size), mode="area")
    centred = batch - batch.mean(dim=(1, 2, 3), keepdim=True)
    centred = centred / centred.std(dim=(1, 2, 3), keepdim=True).clamp_min(0.02)
    grey = centred.mean(dim=1, keepdim=True)
    local = grey - F.avg_pool2d(grey, 9, stride=1, padding=4, count_include_pad=False)
    return torch.cat([centred, local], dim=1)


class HybridSegmenter(nn.Module):
    """The "hybrid" family."""

    family = FAMILY

    def __init__(self, *, pretrained: bool = True, resolved_device: torch.device | None = None, **config):
        super().__init__()
        self.config = HybridConfig(**config)
        self.device = resolved_device or resolve_device(self.config.device)
        inner = {**self.config.patchcore, "image_size": self.config.image_size, "seed": self.config.seed}
        inner["device"] = str(self.device)
        pretrained = inner.pop("pretrained", pretrained)
        self.patchcore = PatchCore(pretrained=pretrained, resolved_device=self.device, **inner)
        self.config.patchcore = {k: v for k, v in inner.items() if k not in ("image_size", "seed", "device")}
        self.head: DefectHead | None = None
        self.refiner: MaskRefiner | None = None
        self.fine: FineOutline | None = None
        self.coarse_mask_threshold = None  # fit: the outline cut the patch grid alone would get (with a refiner)
        self._prior_adopted = False
        self.summary = TrainingSummary()

    @property
    def classes(self) -> tuple[str, ...]:
        return self.config.classes

    def adopt_prior(self, patchcore: PatchCore) -> bool:
        """Takes an already fitted, untiled PatchCore at this model's working size as the prior instead of fitting
        another one on the same good images (a comparison that trains PatchCore anyway saves that time). The
        caller vouches that it was fitted on the samples `fit` will get. Returns whether it was taken."""
        config = patchcore.config
        if config.image_size != self.config.image_size or getattr(config, "tile_working_size", 0):
            return False
        if len(patchcore.memory_bank) == 0:
            return False
        self.patchcore, self._prior_adopted = patchcore, True
        return True

    # ---- training ----

    def fit(self, samples: Sequence[Sample], *, progress: ProgressCallback = no_progress) -> None:
        """PatchCore on the good samples, then the head on drawn defects, pasted copies and good patches.
        Progress: the PatchCore's stages, then "features" (head data) and "epoch"."""
        started = time.perf_counter()
        config = self.config
        rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        labels = getattr(samples, "labels", None)
        labels = np.asarray(labels if labels is not None else [s.label for s in samples], dtype=int)
        good_indices = np.flatnonzero(labels == GOOD)
        if len(good_indices) < 2:
            raise ValueError("the hybrid model needs at least two good images")
        if not self._prior_adopted:
            self.patchcore.fit(samples, progress=progress)

        defects = [s for s in (samples[int(i)] for i in np.flatnonzero(labels == DEFECT)) if _drawn(s)]
        if not defects:
            raise ValueError("the hybrid model needs at least one defect image with a mask or boxes")
        config.classes = next((tuple(s.classes) for s in defects if s.classes), ())
        chosen_good = rng.permutation(good_indices)[: config.head_good_images]
        goods = [samples[int(i)] for i in chosen_good]

        size = (config.image_size, config.image_size)
        features, priors, targets, weights = [], [], [], []
        outlines = []  # per row: (working-size image, outline), the outline None where only boxes were drawn

        def add(images, masks, class_masks, boxes_list, own_images=None):
            feats, dist = self._patch_view(images, own_images=own_images)
            for k in range(len(images)):
                outlines.append((images[k], None if boxes_list[k] else masks[k]))
                target, weight = _patch_targets(
                    masks[k], class_masks[k], boxes_list[k], dist[k], dist.shape[-2:], config.box_positive_share
                )
                features.append(feats[k])
                priors.append(dist[k])
                targets.append(target)
                weights.append(weight)

        n_steps = len(goods) + len(defects)
        done = 0
        for start in range(0, len(goods), 8):
            part = goods[start : start + 8]
            images = [resize_image(s.image, size) for s in part]
            zeros = [np.zeros(size, bool)] * len(part)
            add(images, zeros, [None] * len(part), [None] * len(part), own_images=images)
            done += len(part)
            progress("features", done / n_steps, f"read {done} of {n_steps} images for the defect head")
        good_distances = torch.cat([p.flatten() for p in priors])
        config.prior_scale = float(torch.quantile(good_distances[:1_000_000], 0.99).clamp_min(1e-6))

        drawn = [_resized_labels(s, size, config.classes) for s in defects]
        for start in range(0, len(defects), 8):
            part = drawn[start : start + 8]
            add([d[0] for d in part], [d[1] for d in part], [d[2] for d in part], [d[3] for d in part])
            done += len(part)
            progress("features", done / n_steps, f"read {done} of {n_steps} images for the defect head")

        n_synthetic = int(round(config.synthetic_per_defect * len(defects)))
        for start in range(0, n_synthetic, 8):
            bases, pasted = [], []
            for _ in range(min(8, n_synthetic - start)):
                base = resize_image(goods[int(rng.integers(len(goods)))].image, size)
                donor = drawn[int(rng.integers(len(drawn)))]
                bases.append(base)
                pasted.append(_paste(base, donor, rng))
            add([p[0] for p in pasted], [p[1] for p in pasted], [p[2] for p in pasted], [p[3] for p in pasted], bases)

        x = torch.stack(features)
        prior = torch.stack(priors) / config.prior_scale
        target = torch.stack(targets)
        weight = torch.stack(weights)
        self.summary = TrainingSummary(
            epochs_run=config.epochs,
            n_good=len(goods),
            n_defect=len(defects),
            n_train=len(x),
            batch_size=config.batch_size,
            device=str(self.device),
        )
        self._train_head(x, prior, target, weight, progress)
        first = len(goods)  # the drawn defects' rows follow the good images' in x
        rows = slice(first, first + len(drawn))
        drawn_images = [image for image, _ in outlines[rows]]
        self.refiner, self.fine = None, None
        refine = config.refine_masks and any(mask is not None and mask.any() for _, mask in outlines)
        fine = config.fine_outline and not refine and self._fine_possible()
        fine = fine and any(m is not None and m.any() for _, m in outlines)
        if refine or fine or config.guided_outline:
            # The patch grid's own cut (no refiner, no guided filter) is recorded too, so what they gain is on file.
            guided, config.guided_outline = config.guided_outline, False
            self.coarse_mask_threshold = self._choose_mask_threshold(x[rows], prior[rows], drawn_images, drawn)
            config.guided_outline = guided
        if refine:
            self._train_refiner(x, prior, outlines, rng, progress)
        if fine:
            self._train_fine(self._coarse_log_odds(x, prior), outlines, rng, progress)
        config.mask_threshold = self._choose_mask_threshold(x[rows], prior[rows], drawn_images, drawn)
        self.summary.seconds = time.perf_counter() - started

    def _patch_view(self, images, *, own_images=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(features N x C x h x w, PatchCore distances N x h x w) of S x S images; with `own_images`, each image's
        distances leave out the bank entries copied from its own_images counterpart (a training image)."""
        if own_images is None or own_images is images:
            return patchcore_patch_distances(self.patchcore, images, leave_own_out=own_images is images)
        with torch.no_grad():
            feats = self.patchcore.embed(self.patchcore._batch(images))
            own_feats = self.patchcore.embed(self.patchcore._batch(own_images))
        n, c, h, w = feats.shape
        project = self.patchcore.project
        distances = []
        for k in range(n):
            patches = project(feats[k].permute(1, 2, 0).reshape(h * w, c))
            own = project(own_feats[k].permute(1, 2, 0).reshape(h * w, c))
            distances.append(leave_own_out_distances(self.patchcore.memory_bank, patches, own).view(h, w))
        return feats, torch.stack(distances)

    def _train_head(self, x, prior, target, weight, progress: ProgressCallback) -> None:
        config = self.config
        n_classes = max(1, len(config.classes))
        self.head = DefectHead(x.shape[1], config.hidden_channels, n_classes, namer=True).to(self.device)
        optimiser = torch.optim.AdamW(self.head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        steps = config.epochs * max(1, -(-len(x) // config.batch_size))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=steps)
        generator = torch.Generator().manual_seed(config.seed)
        self.head.train()
        for epoch in range(config.epochs):
            order = torch.randperm(len(x), generator=generator)
            total = 0.0
            for start in range(0, len(x), config.batch_size):
                rows = order[start : start + config.batch_size]
                xb, pb, tb, wb = x[rows], prior[rows], target[rows], weight[rows]
                if torch.rand((), generator=generator) < 0.5:  # flips: defects have no preferred side
                    xb, pb, tb, wb = (t.flip(-1) for t in (xb, pb, tb, wb))
                if torch.rand((), generator=generator) < 0.5:
                    xb, pb, tb, wb = (t.flip(-2) for t in (xb, pb, tb, wb))
                loss = _head_loss(self.head(xb, pb), tb, wb, config.positive_weight)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(rows)
            self.summary.history.append({"epoch": epoch + 1, "loss": total / len(x)})
            progress("epoch", (epoch + 1) / config.epochs, f"epoch {epoch + 1} of {config.epochs}")
        self.head.eval()

    def _train_outline_net(
        self, net: nn.Module, inputs: torch.Tensor, coarse: torch.Tensor, truth: torch.Tensor, *, epochs: int,
        seed: int, stage: str, label: str, progress: ProgressCallback, jitter: bool = False,
        positive_weight: torch.Tensor | None = None, dice: bool = False,
    ) -> None:  # fmt: skip
        """Trains an outline network (the MaskRefiner or the FineOutline) net(inputs, coarse log-odds) -> log-odds on
        crops against `truth`: AdamW with a one-cycle schedule, random flips; with `jitter`, the coarse log-odds
        scaled by U(0.5, 1.5) and shifted by U(-2, 2) per crop (the head's map on unseen images is less sure than on
        its training rows). The loss: `outline_loss` (with `dice`, plus the soft Dice loss per crop). Left in eval
        mode."""
        optimiser = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=self.config.weight_decay)
        steps = epochs * max(1, -(-len(inputs) // REFINE_BATCH))
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps)
        generator = torch.Generator().manual_seed(seed)
        net.train()
        for epoch in range(epochs):
            order = torch.randperm(len(inputs), generator=generator)
            total = 0.0
            for start in range(0, len(inputs), REFINE_BATCH):
                rows = order[start : start + REFINE_BATCH].to(inputs.device)
                ib, cb, tb = inputs[rows], coarse[rows], truth[rows]
                for dim in (-1, -2):
                    if torch.rand((), generator=generator) < 0.5:
                        ib, cb, tb = ib.flip(dim), cb.flip(dim), tb.flip(dim)
                if jitter:
                    gain = 0.5 + torch.rand((len(cb), 1, 1, 1), generator=generator).to(cb.device)
                    shift = 4 * torch.rand((len(cb), 1, 1, 1), generator=generator).to(cb.device) - 2
                    cb = cb.clamp(-COARSE_CLIP, COARSE_CLIP) * gain + shift
                loss = outline_loss(net(ib, cb), tb, positive_weight=positive_weight, dice=dice)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                total += loss.item() * len(rows)
            self.summary.history.append({f"{stage}_epoch": epoch + 1, "loss": total / len(inputs)})
            progress(stage, (epoch + 1) / epochs, f"{label} epoch {epoch + 1} of {epochs}")
        net.eval()

    def _train_refiner(self, x, prior, outlines, rng: np.random.Generator, progress: ProgressCallback) -> None:
        """Fits the MaskRefiner on crops of the outlined rows (drawn, pasted and good images): two centred on
        defect pixels, one on the coarse map's peak (on good images, its false alarm) and one at random."""
        config = self.config
        fine = config.image_size // config.refine_stride
        crop = min(fine, REFINE_CROP)
        coarse = self._coarse_log_odds(x, prior)
        rows = [i for i, (_, outline) in enumerate(outlines) if outline is not None]
        crops_pixels, crops_coarse, crops_truth = [], [], []
        for start in range(0, len(rows), 16):
            part = rows[start : start + 16]
            pixels = refiner_pixels([outlines[i][0] for i in part], fine)
            up = F.interpolate(coarse[part], size=(fine, fine), mode="bilinear", align_corners=False)
            masks = np.stack([outlines[i][1] for i in part]).astype(np.float32)
            truth = F.interpolate(torch.from_numpy(masks)[:, None], size=(fine, fine), mode="area")
            for window in outline_crop_windows(up, truth, crop, rng):
                crops_pixels.append(pixels[window])
                crops_coarse.append(up[window])
                crops_truth.append(truth[window])
        pixels, coarse_crops, truth = torch.stack(crops_pixels), torch.stack(crops_coarse), torch.stack(crops_truth)
        self.refiner = MaskRefiner(config.refine_hidden_channels).to(self.device)
        self._train_outline_net(
            self.refiner, pixels, coarse_crops, truth, epochs=config.refine_epochs, seed=config.seed + 1,
            stage="refine", label="outline", progress=progress,
        )  # fmt: skip

    def _train_fine(self, coarse, outlines, rng: np.random.Generator, progress: ProgressCallback) -> None:
        """Fits the FineOutline on crops (FINE_CROP cells) of the outlined rows' stride-4 maps (drawn, pasted and
        good images), `coarse` the head's log-odds N x 1 x h x w of every training row: two crops centred on defect
        pixels, one on the coarse map's peak (on good images, its false alarm) and one at random; the target is
        each cell's share of defect pixels."""
        started = time.perf_counter()
        config = self.config
        rows = [i for i, (_, outline) in enumerate(outlines) if outline is not None]
        crops_features, crops_coarse, crops_truth = [], [], []
        for start in range(0, len(rows), 8):
            part = rows[start : start + 8]
            features = stride4_features(self.patchcore, [outlines[i][0] for i in part])
            fine = features.shape[-1]
            crop = min(fine, FINE_CROP)
            up = F.interpolate(coarse[part], size=(fine, fine), mode="bilinear", align_corners=False)
            masks = torch.from_numpy(np.stack([outlines[i][1] for i in part]).astype(np.float32))
            truth = F.interpolate(masks[:, None], size=(fine, fine), mode="area").to(features.device)
            for window in outline_crop_windows(up, truth, crop, rng):
                crops_features.append(features[window])
                crops_coarse.append(up[window])
                crops_truth.append(truth[window])
        features, coarse_crops = torch.stack(crops_features), torch.stack(crops_coarse)
        truth = torch.stack(crops_truth)
        self.fine = FineOutline(features.shape[1], config.fine_hidden_channels).to(self.device)
        self.fine.feature_mean.copy_(features.mean(dim=(0, 2, 3)))
        self.fine.feature_std.copy_(features.std(dim=(0, 2, 3)).clamp_min(1e-3))
        # Defect cells weighted as the head's defect patches are, so a thin defect's few cells are not outvoted.
        positive_weight = torch.tensor(config.positive_weight, device=features.device)
        self._train_outline_net(
            self.fine, features, coarse_crops, truth, epochs=config.fine_epochs, seed=config.seed + 2,
            stage="fine", label="stride-4 outline", progress=progress, jitter=config.fine_jitter,
            positive_weight=positive_weight, dice=config.fine_dice,
        )  # fmt: skip
        self.summary.history.append({"fine_seconds": time.perf_counter() - started, "fine_crops": len(features)})

    @torch.no_grad()
    def _coarse_log_odds(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """The head's defect log-odds N x 1 x h x w on stored patch features, in batches."""
        self.head.eval()
        parts = [defect_log_odds(self.head(x[i : i + 64], prior[i : i + 64])) for i in range(0, len(x), 64)]
        return torch.cat(parts)[:, None]

    @torch.no_grad()
    def _defect_maps(
        self, logits: torch.Tensor, images: Sequence[np.ndarray], *, outline: bool = False
    ) -> torch.Tensor:
        """P(defect) N x S x S at the working size S from the head's logits and the working-size images: the
        patch grid upsampled, sharpened by the refiner where there is one, then by the guided filter if set. With
        `outline` (the map the outline is cut from), the fine branch, where there is one and fine_outline is set,
        redraws the patch grid's map at stride 4 first."""
        config = self.config
        size = config.image_size

        def up(t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)

        fine = outline and self._fine_active()
        if self.refiner is None and not fine and not config.guided_outline:
            return up(defect_log_probability(logits).exp()[:, None])[:, 0]
        if fine:
            features = stride4_features(self.patchcore, images)
            coarse = F.interpolate(
                defect_log_odds(logits)[:, None], size=features.shape[-2:], mode="bilinear", align_corners=False
            )
            log_odds = self.fine(features, coarse)
            if not config.guided_outline:
                return up(log_odds.sigmoid())[:, 0]
            log_odds = up(log_odds)
        elif self.refiner is None:
            log_odds = up(defect_log_odds(logits)[:, None])
        else:
            fine = size // config.refine_stride
            coarse = F.interpolate(
                defect_log_odds(logits)[:, None], size=(fine, fine), mode="bilinear", align_corners=False
            )
            log_odds = self.refiner(refiner_pixels(images, fine), coarse)
            if not config.guided_outline:
                return up(log_odds.sigmoid())[:, 0]
            log_odds = up(log_odds)
        # Filtered as clipped log-odds: a saturated core says no more about the edge than a confident one.
        log_odds = log_odds.clamp(-COARSE_CLIP, COARSE_CLIP)
        log_odds = guided_filter(
            guide_image(images, size).to(log_odds.device), log_odds, config.guide_radius, config.guide_eps
        )
        return log_odds.sigmoid()[:, 0]

    @torch.no_grad()
    def _choose_mask_threshold(self, x: torch.Tensor, prior: torch.Tensor, images, drawn) -> float:
        """The probability at which the outline (and its boxes) best matches the drawn defects: mean mask IoU for
        outlines, mean best-box IoU for boxes, over MASK_THRESHOLDS. The drawn defects were trained on, so this
        flatters the fit; it only sets where the outline is cut, not the image score."""
        maps = (
            torch.cat(
                [
                    self._defect_maps(self.head(x[i : i + 16], prior[i : i + 16]), images[i : i + 16], outline=True)
                    for i in range(0, len(x), 16)
                ]
            )
            .cpu()
            .numpy()
        )
        best, best_overlap = self.config.mask_threshold, -1.0
        for threshold in MASK_THRESHOLDS:
            overlaps = []
            for values, (_, mask, _, boxes) in zip(maps, drawn, strict=True):
                if boxes:
                    found = [d.box for d in detections_from_map(values, threshold)]
                    for x0, y0, x1, y1, _ in boxes:
                        drawn_box = Box(x0, y0, x1, y1)
                        overlaps.append(max((box_iou(drawn_box, f) for f in found), default=0.0))
                else:
                    overlaps.append(mask_iou(mask, values >= threshold))
            overlap = float(np.mean(overlaps)) if overlaps else 0.0
            if overlap > best_overlap + 1e-6:
                best, best_overlap = threshold, overlap
        self.summary.history.append({"mask_threshold": best, "training_overlap": best_overlap})
        return float(best)

    # ---- prediction ----

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 8) -> list[Prediction]:
        if self.head is None:
            raise RuntimeError("the hybrid model is not fitted: call fit() or load() first")
        predictions = []
        size = self.config.image_size
        for start in range(0, len(images), batch_size):
            chunk = list(images[start : start + batch_size])
            logits = self._head_logits(chunk)
            probability = defect_log_probability(logits).exp()
            scores = F.avg_pool2d(probability[:, None], 3, stride=1, padding=1, count_include_pad=False)
            scores = scores.flatten(1).max(dim=1).values
            pixels_needed = self.refiner is not None or self.fine is not None or self.config.guided_outline
            working = [resize_image(image, (size, size)) for image in chunk] if pixels_needed else chunk
            maps = self._defect_maps(logits, working)
            outlines = self._defect_maps(logits, working, outline=True) if self._fine_active() else None
            class_logits = F.interpolate(logits[:, 1:], size=(size, size), mode="bilinear", align_corners=False)
            for k, image in enumerate(chunk):
                outline = None if outlines is None else outlines[k]
                predictions.append(self._prediction(image, float(scores[k]), maps[k], class_logits[k], outline))
        return predictions

    @torch.no_grad()
    def _head_logits(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The head's logits N x (1 + K) x h x w on the patch grid of unseen images."""
        feats, dist = patchcore_patch_distances(self.patchcore, images, leave_own_out=False)
        return self.head(feats, dist / self.config.prior_scale)

    def _fine_possible(self) -> bool:
        """Whether a fine branch can redraw this model's patch grid: an untiled EfficientNet-style backbone whose
        patch grid is coarser than FINE_STRIDE (a grid at stride 4 already has nothing finer to learn from)."""
        extractor = self.patchcore.features.extractor
        efficientnet = all(hasattr(extractor, name) for name in ("conv_stem", "bn1", "blocks"))
        return efficientnet and not self.patchcore.tiled and self.patchcore.features.stride > FINE_STRIDE

    def _fine_active(self) -> bool:
        return self.fine is not None and self.config.fine_outline and self.refiner is None

    def _prediction(self, image, score: float, working_map, class_logits, working_outline=None) -> Prediction:
        """One image's Prediction from its working-size map and, where the fine branch draws the outline, the
        working-size map the outline is cut from (None: the same map)."""
        height, width = np.asarray(image).shape[:2]

        def full_size(values: torch.Tensor) -> np.ndarray:
            full = F.interpolate(values[None, None], size=(height, width), mode="bilinear", align_corners=False)
            return full[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32)

        anomaly_map = full_size(working_map)
        outline = anomaly_map if working_outline is None else full_size(working_outline)
        mask = outline >= self.config.mask_threshold
        classes = self.config.classes
        class_mask = None
        if classes:
            labels = F.interpolate(class_logits[None], size=(height, width), mode="bilinear", align_corners=False)
            class_mask = np.where(mask, labels[0].argmax(0).cpu().numpy() + 1, 0).astype(np.int32)
        detections = detections_from_map(outline, self.config.mask_threshold, class_mask=class_mask, classes=classes)
        return Prediction(
            score=score,
            anomaly_map=anomaly_map,
            mask=mask,
            detections=detections,
            class_mask=class_mask,
            classes=classes,
        )

    # ---- persistence ----

    def save(self, directory: Path) -> None:
        """One checkpoint (ml.checkpoint): the hybrid's config with the inner PatchCore's, and the tensors of both
        (the PatchCore's prefixed "prior.", the head's "head.")."""
        if self.head is None:
            raise RuntimeError("the hybrid model is not fitted: nothing to save")
        tensors = {f"{PRIOR_PREFIX}{k}": v for k, v in self.patchcore.state_dict().items()}
        tensors.update({f"{HEAD_PREFIX}{k}": v for k, v in self.head.state_dict().items()})
        if self.refiner is not None:
            tensors.update({f"{REFINER_PREFIX}{k}": v for k, v in self.refiner.state_dict().items()})
        if self.fine is not None:
            tensors.update({f"{FINE_PREFIX}{k}": v for k, v in self.fine.state_dict().items()})
        config = {**asdict(self.config), "prior_config": asdict(self.patchcore.config)}
        document = Checkpoint(
            FAMILY, config, tensors, self.patchcore.config.preprocessing, training=asdict(self.summary)
        )
        write_checkpoint(directory, document)

    @classmethod
    def load(cls, directory: Path, *, device: str | None = None) -> Self:
        """Restores a saved hybrid on `device` (default: the saved spec, or the CPU where that cannot be had)."""
        checkpoint = read_checkpoint(directory, family=FAMILY)
        # Checkpoints from before the guided filter or the fine branch chose their outline cut without them, so they
        # keep them off; those from before fine_dice trained their fine branch without it.
        old = {"guided_outline": False, "fine_outline": False, "fine_dice": False}
        config = HybridConfig.from_dict({**old, **checkpoint.config})
        resolved = resolve_saved_device(config.device, device)
        model = cls(pretrained=False, resolved_device=resolved, **asdict(config))
        prior_config = {**checkpoint.config["prior_config"], "device": str(resolved)}
        model.patchcore = PatchCore(pretrained=False, resolved_device=resolved, **prior_config)
        prior_state = {k[len(PRIOR_PREFIX) :]: v for k, v in checkpoint.tensors.items() if k.startswith(PRIOR_PREFIX)}
        model.patchcore.memory_bank = torch.empty_like(prior_state["memory_bank"], device=resolved)
        model.patchcore.load_state_dict(prior_state, strict=True)
        model.patchcore.eval()
        head_state = {k[len(HEAD_PREFIX) :]: v for k, v in checkpoint.tensors.items() if k.startswith(HEAD_PREFIX)}
        channels = head_state["body.0.weight"].shape[1] - 1
        namer = any(key.startswith("namer.") for key in head_state)  # older fits named classes with the body
        model.head = DefectHead(channels, config.hidden_channels, max(1, len(config.classes)), namer=namer)
        model.head.to(resolved)
        model.head.load_state_dict(head_state)
        model.head.eval()
        refiner_state = {
            k[len(REFINER_PREFIX) :]: v for k, v in checkpoint.tensors.items() if k.startswith(REFINER_PREFIX)
        }
        if refiner_state:
            model.refiner = MaskRefiner(config.refine_hidden_channels).to(resolved)
            model.refiner.load_state_dict(refiner_state)
            model.refiner.eval()
        fine_state = {k[len(FINE_PREFIX) :]: v for k, v in checkpoint.tensors.items() if k.startswith(FINE_PREFIX)}
        if fine_state:
            model.fine = FineOutline(len(fine_state["feature_mean"]), config.fine_hidden_channels).to(resolved)
            model.fine.load_state_dict(fine_state)
            model.fine.eval()
        model.summary = TrainingSummary.from_dict(checkpoint.training)
        return model


def _drawn(sample: Sample) -> bool:
    return bool(sample.boxes) or (sample.mask is not None and bool(np.any(sample.mask)))


def _resized_labels(sample: Sample, size: tuple[int, int], classes: tuple[str, ...]):
    """(image, mask, class_mask, boxes) of a drawn defect at the working size; boxes scaled, class_mask nearest."""
    height, width = sample.image.shape[:2]
    image = resize_image(sample.image, size)
    mask = sample.mask if sample.mask is not None else np.zeros((height, width), bool)
    mask = _resize_nearest(mask, size).astype(bool)
    class_mask = None
    if sample.class_mask is not None and classes:
        class_mask = _resize_nearest(sample.class_mask, size)
    boxes = None
    if sample.boxes:
        sy, sx = size[0] / height, size[1] / width
        boxes = [
            (int(b.x0 * sx), int(b.y0 * sy), max(int(np.ceil(b.x1 * sx)), int(b.x0 * sx) + 1),
             max(int(np.ceil(b.y1 * sy)), int(b.y0 * sy) + 1), classes.index(b.label) + 1 if b.label in classes else 1)
            for b in sample.boxes
        ]  # fmt: skip
    return image, mask, class_mask, boxes


def _resize_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rows = (np.arange(size[0]) * values.shape[0] / size[0]).astype(int)
    cols = (np.arange(size[1]) * values.shape[1] / size[1]).astype(int)
    return np.asarray(values)[rows][:, cols]


def _patch_targets(mask, class_mask, boxes, distances, grid, box_positive_share):
    """(target N_grid long: 0 good, k class; weight float) at the patch grid from a working-size mask or boxes.

    A patch is defective when at least a quarter of its pixels are; with boxes, the patches inside a box that
    PatchCore finds most unusual (`box_positive_share` of them) are defective, the rest of the box is ignored."""
    h, w = grid
    target = torch.zeros((h, w), dtype=torch.long)
    weight = torch.ones((h, w))
    size = mask.shape
    if boxes:
        for x0, y0, x1, y1, label in boxes:
            r0, r1 = int(y0 * h / size[0]), max(int(np.ceil(y1 * h / size[0])), int(y0 * h / size[0]) + 1)
            c0, c1 = int(x0 * w / size[1]), max(int(np.ceil(x1 * w / size[1])), int(x0 * w / size[1]) + 1)
            inside = distances[r0:r1, c0:c1]
            # The top share by rank (not by a quantile cut, which ties on flat boxes would make the whole box).
            count = max(1, int(np.ceil(box_positive_share * inside.numel())))
            positive = torch.zeros(inside.numel(), dtype=torch.bool)
            positive[inside.flatten().float().topk(count).indices] = True
            positive = positive.view(inside.shape)
            weight[r0:r1, c0:c1] = positive.float()
            target[r0:r1, c0:c1] = torch.where(positive, label, 0)
        return target, weight
    fraction = F.adaptive_avg_pool2d(torch.from_numpy(mask.astype(np.float32))[None, None], (h, w))[0, 0]
    defect = fraction >= 0.25
    if class_mask is not None:
        counts = [
            F.adaptive_avg_pool2d(torch.from_numpy((class_mask == k).astype(np.float32))[None, None], (h, w))[0, 0]
            for k in range(1, int(class_mask.max()) + 1)
        ]
        best = torch.stack(counts).argmax(0) + 1 if counts else torch.ones((h, w), dtype=torch.long)
        target = torch.where(defect, best, 0)
    else:
        target = defect.long()
    # Patches partly covered are neither: a blurry edge would teach the head to doubt the outline.
    weight = torch.where((fraction > 0) & ~defect, 0.0, 1.0)
    return target, weight


def _paste(base: np.ndarray, donor, rng: np.random.Generator):
    """(image, mask, class_mask, boxes): one drawn defect region (its mask's pixels, or a whole box, which then
    stays a box) copied onto a good image at a random place, randomly flipped."""
    image, mask, class_mask, boxes = donor
    label = 1
    if boxes:
        x0, y0, x1, y1, label = boxes[int(rng.integers(len(boxes)))]
        region = np.zeros(mask.shape, bool)
        region[y0:y1, x0:x1] = True
    else:
        region = mask
    ys, xs = np.nonzero(region)
    if len(ys) == 0:
        return base.copy(), np.zeros(base.shape[:2], bool), None, None
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    patch, keep = image[y0:y1, x0:x1], region[y0:y1, x0:x1]
    labels = class_mask[y0:y1, x0:x1] if class_mask is not None else None
    if rng.random() < 0.5:
        patch, keep = patch[:, ::-1], keep[:, ::-1]
        labels = labels[:, ::-1] if labels is not None else None
    if rng.random() < 0.5:
        patch, keep = patch[::-1], keep[::-1]
        labels = labels[::-1] if labels is not None else None
    height, width = base.shape[:2]
    ty = int(rng.integers(0, max(1, height - patch.shape[0] + 1)))
    tx = int(rng.integers(0, max(1, width - patch.shape[1] + 1)))
    out = base.copy()
    out_mask = np.zeros((height, width), bool)
    window = (slice(ty, ty + patch.shape[0]), slice(tx, tx + patch.shape[1]))
    out[window][keep] = patch[keep]
    out_mask[window] = keep
    out_classes = None
    if class_mask is not None:
        out_classes = np.zeros((height, width), np.int32)
        out_classes[window][keep] = labels[keep]
    if boxes:  # a pasted box teaches like a drawn box: only its most unusual patches count as defect
        return out, out_mask, out_classes, [(tx, ty, tx + patch.shape[1], ty + patch.shape[0], label)]
    return out, out_mask, out_classes, None


def _head_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, positive_weight: float):
    """Weighted binary cross-entropy on P(defect) (defect patches weighted `positive_weight`) plus, where several
    classes exist, cross-entropy of the class among the defect patches."""
    log_defect = defect_log_probability(logits)
    log_good = F.log_softmax(logits, dim=1)[:, 0]
    is_defect = target > 0
    per_patch = torch.where(is_defect, -positive_weight * log_defect, -log_good) * weight
    loss = per_patch.sum() / weight.sum().clamp_min(1.0)
    if logits.shape[1] > 2 and (is_defect & (weight > 0)).any():
        class_log = F.log_softmax(logits[:, 1:], dim=1)
        chosen = torch.gather(class_log, 1, (target.clamp_min(1) - 1)[:, None])[:, 0]
        loss = loss - (chosen * (is_defect & (weight > 0))).sum() / (is_defect & (weight > 0)).sum()
    return loss
