"""Whether parts appear at any angle in the good images: the fact that decides if rotated copies help (issue 21).

Loose screws lie at any angle, so a screw turned by 90 degrees looks like another good screw: rotated copies of
the few good images fill the angles the camera has not seen yet. A fixtured part or a directional texture (a
magnetic tile lit from one side) turned by 90 degrees looks like nothing in the training set, and copies of it would
teach the model that a wrongly turned part is good.

The check: each probe image's patches are matched to the other probe images' patches (nearest feature distance,
averaged over the image), once as they are and once turned by 90 degrees. If turning makes an image look no more
unusual than about what it is, the parts are taken as rotation-invariant. Measured at 224 px on 16 images, three
draws (median ratio turned / as is): MVTec screw 1.08, 1.28, 1.14; magnetic tile 1.56, 1.56, 1.54.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

# Turned images at most this much farther from the others (relative) than unturned ones count as "any angle".
INVARIANT_RATIO = 1.4
PROBE_IMAGES = 16
PROBE_SIZE = 224


@dataclass(frozen=True)
class RotationCheck:
    ratio: float  # median over probe images of (mean distance turned) / (mean distance as is)
    invariant: bool


@torch.no_grad()
def check_rotation(embed: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor) -> RotationCheck | None:
    """images: N x 3 x S x S normalised probe images (N >= 3); embed maps such a batch to N x C x h x w features.
    None when there are too few images to compare."""
    if len(images) < 3:
        return None

    def patches(batch: torch.Tensor) -> torch.Tensor:
        features = torch.cat([embed(part) for part in batch.split(8)])
        n, c, h, w = features.shape
        return features.permute(0, 2, 3, 1).reshape(n, h * w, c)

    upright = patches(images)
    turned = patches(torch.rot90(images, 1, dims=(2, 3)))
    ratios = []
    for i in range(len(images)):
        others = torch.cat([upright[j] for j in range(len(images)) if j != i])
        as_is = torch.cdist(upright[i], others).min(dim=1).values.mean()
        rotated = torch.cdist(turned[i], others).min(dim=1).values.mean()
        ratios.append(float(rotated / as_is.clamp_min(1e-12)))
    ratio = float(torch.tensor(ratios).median())
    return RotationCheck(ratio=ratio, invariant=ratio <= INVARIANT_RATIO)
