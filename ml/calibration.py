"""PatchCore scores of its own training images as if it had never seen them, so no good image is held back.

A training image's patches sit in the memory bank (or next to their own neighbours there), so its ordinary score
is near zero and says nothing about how an unseen good part scores. Leaving its own patches out of the search
gives the score it would get from a bank built without it (close to leave-one-out, without refitting): the bank
entries that are copies of one of the image's patches (distance zero, up to float rounding) are masked, and each
patch is matched against the rest. Those scores set the threshold (`ml.thresholds.calibrate`) while the model is
fitted on every good image. Limits: with `rotations` > 1 the image's rotated copies stay in the bank, so its scores
run a little low.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ml.nearest import nearest_entries
from ml.types import Sample

# A bank entry is a copy of one of the image's patches when they differ by less than this share of the entry's
# norm: features recomputed in another batch differ by ~1e-6 relative, neighbouring real patches by ~1e-1.
OWN_PATCH_TOLERANCE = 1e-3


def own_entries(bank: torch.Tensor, patches: torch.Tensor) -> torch.Tensor:
    """B bool: the bank entries that are copies of one of `patches` (P x D)."""
    distances, _ = nearest_entries(bank, patches)
    return distances <= OWN_PATCH_TOLERANCE * bank.norm(dim=1).clamp_min(1e-12)


def leave_own_out_distances(
    bank: torch.Tensor, patches: torch.Tensor, own_patches: torch.Tensor | None = None
) -> torch.Tensor:
    """P distances of `patches` (P x D) to their nearest bank entry that is not a copy of one of `own_patches`
    (default: `patches` themselves; pass the unaltered image's patches for an altered copy of a training image)."""
    own = own_entries(bank, patches if own_patches is None else own_patches)
    others = bank[~own]
    if len(others) == 0:
        raise ValueError("every bank entry comes from this image: leave-own-out needs at least two good images")
    return nearest_entries(patches, others)[0]


@torch.no_grad()
def patchcore_patch_distances(
    model, images: Sequence[np.ndarray], *, leave_own_out: bool, batch_size: int = 8
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features N x C x h x w, patch distances N x h x w) of a fitted, untiled PatchCore on `images`; with
    `leave_own_out`, each image's own bank entries are left out of its search."""
    features_out, distances_out = [], []
    bank = model.memory_bank
    for start in range(0, len(images), batch_size):
        features = model.embed(model._batch(images[start : start + batch_size]))
        n, c, h, w = features.shape
        patches = model.project(features.permute(0, 2, 3, 1).reshape(n, h * w, c))
        for image_patches in patches:
            if leave_own_out:
                distances = leave_own_out_distances(bank, image_patches)
            else:
                distances = nearest_entries(image_patches, bank)[0]
            distances_out.append(distances.view(h, w))
        features_out.append(features)
    return torch.cat(features_out), torch.stack(distances_out)


def calibration_scores(model, samples: Sequence[Sample], *, batch_size: int = 8) -> np.ndarray:
    """N image scores (the family's units) of `samples` with each image's own patches left out of the bank:
    what the training images would score had they been held back. Images that were not trained on (defects, new
    good images) score as in `predict`, up to the int8 search's rounding."""
    if getattr(model.config, "tile_working_size", 0) or model.config.score == "reweighted":
        raise ValueError("calibration scores need an untiled PatchCore with the max or top_mean score")
    scores = []
    for start in range(0, len(samples), batch_size):
        images = [samples[i].image for i in range(start, min(start + batch_size, len(samples)))]
        _, distances = patchcore_patch_distances(model, images, leave_own_out=True, batch_size=batch_size)
        scores.extend(model.pooled_scores(distances.flatten(1)).cpu().tolist())  # the model's own image score
    return np.asarray(scores, dtype=np.float64)
