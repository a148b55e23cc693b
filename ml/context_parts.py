"""The pieces of the "context" family (ml.context): the student network, the relative-position classifier and the
loss and score formulas, each small enough to check on hand-made tensors.

Shapes: feature maps are N x C x h x w on the student's grid (the teacher's finest stride); error maps N x h x w.
The 8 relative positions are numbered as DIRECTIONS lists them, each a (row, column) step of `offset` cells.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (row step, column step) of each neighbour class, in grid cells before scaling by the offset.
DIRECTIONS: tuple[tuple[int, int], ...] = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))


class Student(nn.Module):
    """A small convolutional network with a deliberately small receptive field.

    Images N x 3 x S x S -> (hidden N x C x S/r x S/r, one map per teacher stage). `pools` max-poolings bring it to
    the teacher's finest stride r = 2**pools; a stage of stride r * 2**j is the head's output average-pooled by 2**j.
    Reflect padding, not zeros: zero borders tell a position classifier where the image edge is, which it would
    learn instead of the scene's arrangement (a uniform texture would then look arranged near its border).
    `pointwise` widths add 1 x 1 convolutions after the 3 x 3 ones: capacity to imitate the teacher's many channels
    without widening the receptive field, which the 3 x 3 widths would do at a cost growing with their square.
    """

    def __init__(
        self,
        channels: tuple[int, ...],
        pools: int,
        stage_channels: list[int],
        stage_factors: list[int],
        pointwise: tuple[int, ...] = (),
    ):
        super().__init__()
        if len(channels) < pools:
            raise ValueError(f"the student needs at least {pools} convolution blocks for stride {2**pools}")
        layers: list[nn.Module] = []
        previous = 3
        for index, width in enumerate(channels):
            layers += [nn.Conv2d(previous, width, 3, padding=1, padding_mode="reflect"), nn.LeakyReLU(0.1)]
            if index < pools:
                layers.append(nn.MaxPool2d(2))
            previous = width
        for width in pointwise:
            layers += [nn.Conv2d(previous, width, 1), nn.LeakyReLU(0.1)]
            previous = width
        self.body = nn.Sequential(*layers)
        self.out_channels = previous
        self.heads = nn.ModuleList(nn.Conv2d(previous, width, 1) for width in stage_channels)
        self.stage_factors = list(stage_factors)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        hidden = self.body(images)
        stages = []
        for head, factor in zip(self.heads, self.stage_factors, strict=True):
            out = head(hidden)
            stages.append(F.avg_pool2d(out, factor) if factor > 1 else out)
        return hidden, stages


class PositionClassifier(nn.Module):
    """Three fully connected layers: feature difference f(p0) - f(pk) (C) -> logits over the 8 DIRECTIONS.

    The first layer is linear, so W (a - b) = W a - W b: the dense score projects the whole map once and subtracts
    projections, instead of projecting 8 difference maps.
    """

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.project = nn.Linear(channels, hidden, bias=False)
        self.bias = nn.Parameter(torch.zeros(hidden))
        self.rest = nn.Sequential(nn.LeakyReLU(0.1), nn.Linear(hidden, hidden), nn.LeakyReLU(0.1))
        self.out = nn.Linear(hidden, len(DIRECTIONS))

    def logits_from_projections(self, centre: torch.Tensor, neighbour: torch.Tensor) -> torch.Tensor:
        """Projected features ... x hidden of p0 and pk -> logits ... x 8."""
        return self.out(self.rest(centre - neighbour + self.bias))

    def forward(self, difference: torch.Tensor) -> torch.Tensor:
        """Feature differences ... x C -> logits ... x 8."""
        return self.out(self.rest(self.project(difference) + self.bias))


def weighted_loss(
    rec: torch.Tensor, pos: torch.Tensor, log_lambda_rec: torch.Tensor, log_lambda_pos: torch.Tensor
) -> torch.Tensor:
    """L = L_rec / (2 lambda_rec^2) + L_pos / (2 lambda_pos^2) + log lambda_rec + log lambda_pos.

    The weights are learned as their logarithms (always positive, smooth): a term that stays large (positions on a
    texture cannot be told apart) drives its lambda up and so weighs itself down; at the optimum lambda^2 = L.
    """
    return (
        rec * torch.exp(-2 * log_lambda_rec) / 2
        + pos * torch.exp(-2 * log_lambda_pos) / 2
        + log_lambda_rec
        + log_lambda_pos
    )


def reconstruction_error(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """e_rec: per position of the finest grid, the squared L2 distance summed over stages (coarser stages'
    distances upsampled bilinearly). Stage maps N x C_l x h_l x w_l -> N x h x w."""
    size = student[0].shape[-2:]
    total = None
    for s, t in zip(student, teacher, strict=True):
        distance = ((s - t) ** 2).sum(dim=1, keepdim=True)
        if distance.shape[-2:] != size:
            distance = F.interpolate(distance, size=size, mode="bilinear", align_corners=False)
        total = distance if total is None else total + distance
    return total[:, 0]


def neighbour_validity(height: int, width: int, offset: int) -> torch.Tensor:
    """8 x h x w: 1 where the neighbour in that direction, `offset` cells away, lies inside the grid."""
    rows = torch.arange(height)[:, None]
    columns = torch.arange(width)[None, :]
    masks = []
    for dy, dx in DIRECTIONS:
        r, c = rows + dy * offset, columns + dx * offset
        masks.append(((r >= 0) & (r < height) & (c >= 0) & (c < width)).float())
    return torch.stack(masks)


def shifted(maps: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """N x C x h x w -> the map whose (y, x) holds maps[y + dy, x + dx], zero outside (static slices: ONNX-able)."""
    pad = max(abs(dy), abs(dx))
    if pad == 0:
        return maps
    h, w = maps.shape[-2:]
    padded = F.pad(maps, (pad, pad, pad, pad))
    return padded[:, :, pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def position_error(
    hidden: torch.Tensor, classifier: PositionClassifier, validity: torch.Tensor, offset: int, *, margin: bool = False
) -> torch.Tensor:
    """e_pos: per position, the mean over the neighbours inside the image of the classifier's error on the true
    direction; a position with no neighbour inside scores 0. hidden N x C x h x w, validity 8 x h x w -> N x h x w.

    margin=False is the paper's error, 1 - p(correct). margin=True (ml.context's default) is max_k p(k) - p(correct),
    how far the true direction falls short of the classifier's best guess: 0 where it is right and where it cannot
    tell (bare tray, a texture: p uniform), near 1 only where it is confidently wrong. With 1 - p(correct) every cell
    it cannot tell apart scores 7/8 on good images too, so a wrongly placed part (1) stands barely above a good
    scene's bare tray. It pays once the classifier is trained (0.88 held-out accuracy, 1,500 steps): sparse trays'
    context defects 0.997 against 0.953, local 0.997 against 1.000, screw 0.812 against 0.710; with a classifier at
    0.34 (100 steps) its few confident mistakes on good trays became large z-scores and local defects fell to 0.738
    (docs/benchmarks.md, issue 17).
    """
    projected = classifier.project(hidden.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # N x hidden x h x w
    centre = projected.permute(0, 2, 3, 1)
    errors = []
    for label, (dy, dx) in enumerate(DIRECTIONS):
        neighbour = shifted(projected, dy * offset, dx * offset).permute(0, 2, 3, 1)
        probabilities = classifier.logits_from_projections(centre, neighbour).softmax(dim=-1)
        best = probabilities.max(dim=-1).values if margin else 1
        errors.append(best - probabilities[..., label])
    errors = torch.stack(errors, dim=1) * validity  # N x 8 x h x w
    return errors.sum(dim=1) / validity.sum(dim=0).clamp_min(1)


def standardised_sum(e_rec: torch.Tensor, e_pos: torch.Tensor | None, statistics: torch.Tensor) -> torch.Tensor:
    """e = (e_rec - mu_rec) / sigma_rec + (e_pos - mu_pos) / sigma_pos, with statistics = [mu_rec, sigma_rec,
    mu_pos, sigma_pos] over all training pixels; without e_pos (the ablation) only the first term."""
    combined = (e_rec - statistics[0]) / statistics[1]
    if e_pos is not None:
        combined = combined + (e_pos - statistics[2]) / statistics[3]
    return combined


def sample_pairs(
    height: int, width: int, offset: int, count: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`count` random (centre index, neighbour index, label) triples on an h x w grid, flat indices.

    The direction is drawn first, then the centre among every position where that neighbour lies inside, so parts by
    the edge of a scene are centres too (scoring asks the classifier about them; drawing only centres with all 8
    neighbours inside left a tray's outer ring of parts unseen as centres).
    """
    labels = torch.randint(len(DIRECTIONS), (count,), generator=generator)
    steps = torch.tensor(DIRECTIONS)[labels] * offset
    low_r, high_r = (-steps[:, 0]).clamp_min(0), height - steps[:, 0].clamp_min(0)
    low_c, high_c = (-steps[:, 1]).clamp_min(0), width - steps[:, 1].clamp_min(0)
    if bool((high_r <= low_r).any() | (high_c <= low_c).any()):
        raise ValueError(f"neighbour offset {offset} does not fit a {height} x {width} feature grid")
    rows = low_r + (torch.rand(count, generator=generator) * (high_r - low_r)).long()
    cols = low_c + (torch.rand(count, generator=generator) * (high_c - low_c)).long()
    centres = rows * width + cols
    neighbours = (rows + steps[:, 0]) * width + cols + steps[:, 1]
    return centres, neighbours, labels
