"""PatchCore (Roth et al., "Towards Total Recall in Industrial Anomaly Detection", CVPR 2022) for CPUs.

Training keeps a memory bank of locally aggregated mid-level patch features from good images, thinned by a greedy
coreset; a test patch's anomaly score is its distance to the nearest bank entry. Nothing is learned by gradient,
so fitting is one pass of feature extraction plus the coreset.

Memory stays bounded whatever the number of training images: at most `max_patches` patches are kept for the
coreset (sampled evenly across images), the bank holds at most `max_bank_size` entries, and nearest-neighbour search
runs in blocks of at most `search_chunk` query patches (ml.nearest).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F

from ml import adaptive, rotation_check
from ml.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from ml.coreset import create_sampler
from ml.devices import resolve_device, resolve_saved_device
from ml.features import PatchFeatureConfig, patch_features_for
from ml.filters import blur_maps, gaussian_kernel
from ml.images import resize_map, to_tensor
from ml.nearest import DEFAULT_CHUNK, nearest_entries
from ml.runtime import GraphOwner, RuntimeGraph, forward_with
from ml.tiling import (
    POSITION_IMAGES,
    PositionStatistics,
    TiledBatch,
    standardise,
    standardised_score,
    stitch,
    tile_images,
)
from ml.types import GOOD, Prediction, ProgressCallback, Sample, no_progress

FAMILY = "patchcore"
# The most memory one nearest-neighbour search of the exported graph may take (its distance matrix), in bytes.
# Smaller is also faster, down to about one image: the matrix is swept several times, so it should stay near the
# cache (screw, 5,120 entries, batch 8: 30 ms/image at 256 MB, 25 at 64 MB, 24 at one image per run).
GRAPH_SEARCH_BYTES = 64 * 1024 * 1024
# The int8 search's nearest candidates per patch, re-ranked by their float32 distance (see _nearest_of_candidates).
INT8_CANDIDATES = 16


@dataclass
class PatchCoreConfig(PatchFeatureConfig):
    """Everything needed to rebuild a PatchCore; saved in its checkpoint. The shared feature settings (backbone,
    layers, image_size, neighbourhood, reduced_channels, blur_sigma, ...) are PatchFeatureConfig's.

    pca_dim: if set, patch features are projected onto their top principal components (fitted on the training
    patches) before the coreset and search; unlike channel averaging this keeps distances nearly intact while
    making the nearest-neighbour search proportionally cheaper.
    brightness: "match_mean" rescales each image so its mean intensity equals the training images' mean, which
    cancels lighting drift between training and production; "none" leaves images alone.
    rotations: each training image is also used rotated to this many equally spaced angles (4 = every 90 degrees,
    8 = every 45, edges extended): for parts whose orientation varies freely, such as loose screws, when training
    images are few. Keep 1 for fixtured parts, where a rotated part is itself a defect.
    image_size, rotations, coreset_ratio: None (the default) lets fit() choose them from the data (ml.adaptive:
    few good images get a larger working size and, for parts that appear at any angle, rotated copies); a value
    set by hand is kept. chosen: what that rule chose and its sentence for the app (empty for older models).
    score: "max" (the highest patch distance), "top_mean" (the mean of the `top_patches` highest: steadier than one
    patch, the rule's choice (ml.adaptive) unless set) or "reweighted" (the
    paper's Eq. 7, which discounts a far patch whose nearest bank entry lies in a sparse region). None: the rule's.
    tile_working_size: 0 resizes the whole image to image_size (the default, as before issue 16); above 0, the
    image's longer side is brought to this many pixels (never enlarged) and covered by image_size tiles that overlap
    by tile_overlap px (ml.tiling): features and nearest-neighbour search per tile against one bank shared by every
    tile, tile maps stitched without seams, the image score the highest tile score. For large images with small
    defects; the inference cost grows with the number of tiles.
    tile_standardise: tiled, and every training image of one working shape (aligned parts), each position of the
    stitched map is standardised by the good images' own mean and spread there (ml.tiling.PositionStatistics, from
    up to POSITION_IMAGES training images scored without their own patches: fit reads those twice), and the image
    score is taken over the standardised map. On by default: screw tiled at 512 px, image AUROC 0.875 -> 0.927; on
    the 2048 px set neutral (docs/benchmarks.md, issue 16); it doubles the fit's reading.
    search_precision: "float32" (the default) searches in float32 throughout, exactly; "int8" shortlists the
    INT8_CANDIDATES nearest bank entries by an 8-bit integer matrix product in the CPU runtime (ml.int8_search) and
    picks among them by float32 distance. The 8-bit product alone picked farther entries (MVTec screw, one fit:
    image AUROC 0.977 in float32, 0.922 by the int8 pick), and with the re-ranking int8 is no faster here (same fit,
    idle: 88 ms/image float32, 102 int8), so float32 is the default; int8 stays for checkpoints that chose it.
    """

    family: ClassVar[str] = FAMILY

    pca_dim: int | None = None
    brightness: str = "match_mean"
    sampler: str = "greedy_projected"
    projection_dim: int = 64
    image_size: int | None = None  # type: ignore[assignment]  (PatchFeatureConfig's, but "auto" by default)
    coreset_ratio: float | None = None
    min_bank_size: int = 2048
    max_bank_size: int = 16_384
    max_patches: int = 200_000
    rotations: int | None = None
    score: str | None = None
    top_patches: int = 10
    reweight_neighbours: int = 9
    search_chunk: int = DEFAULT_CHUNK
    search_precision: str = "float32"
    tile_working_size: int = 0
    tile_overlap: int = 32
    tile_standardise: bool = True
    bank_size: int = 0
    feature_shape: tuple[int, int, int] = (0, 0, 0)
    chosen: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.feature_shape = tuple(self.feature_shape)


class PatchCore(GraphOwner):
    """The "patchcore" family. `forward` maps a normalised batch to (scores N, maps N x S x S) for export."""

    family = FAMILY

    def __init__(
        self,
        *,
        pretrained: bool = True,
        weights_path: Path | str | None = None,
        resolved_device: torch.device | None = None,
        **config,
    ):
        super().__init__()
        self.config = PatchCoreConfig(**config)
        # Resolved once (load passes the device it settled on, see ml.devices.resolve_saved_device).
        self.device = resolved_device or resolve_device(self.config.device)
        self.preprocessing, self.features = patch_features_for(
            self.config, pretrained=pretrained, weights_path=weights_path
        )
        bank_width = self.config.pca_dim or self.features.channels
        pca_shape = (self.features.channels, self.config.pca_dim) if self.config.pca_dim else (0, 0)
        self.register_buffer("pca_mean", torch.zeros(pca_shape[0]))
        self.register_buffer("pca_components", torch.zeros(pca_shape))
        self.register_buffer("memory_bank", torch.zeros(0, bank_width))
        self.register_buffer("blur_kernel", gaussian_kernel(self.config.blur_sigma))
        # Mean intensity of the training images in [0, 1] (for brightness matching); 0 until fitted.
        self.register_buffer("reference_brightness", torch.zeros(()))
        # Tiled: the good images' mean and spread per position of the stitched map (empty: not standardised).
        self.register_buffer("position_mean", torch.zeros(0, 0))
        self.register_buffer("position_spread", torch.zeros(0, 0))
        mean = torch.tensor(self.preprocessing.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocessing.std).view(1, 3, 1, 1)
        self.register_buffer("input_mean", mean, persistent=False)
        self.register_buffer("input_std", std, persistent=False)
        # predict() runs the whole forward pass as one onnxruntime graph on a CPU (see ml.runtime).
        if self.config.search_precision not in ("float32", "int8"):
            raise ValueError(f"search_precision must be float32 or int8, not {self.config.search_precision!r}")
        rewrite = self._int8_search if self.config.search_precision == "int8" else None
        self.runtime = RuntimeGraph("forward", ["scores", "maps"], rewrite=rewrite)
        self.to(self.device)

    # ---- tensor path (also what ONNX export traces) ----

    def _match_brightness(self, images: torch.Tensor) -> torch.Tensor:
        """Rescales each image in [0, 1] space so its mean equals the training images' mean."""
        unit = images * self.input_std + self.input_mean
        mean = unit.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-3)
        return (unit * (self.reference_brightness / mean) - self.input_mean) / self.input_std

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images N x 3 x S x S -> patch features N x C x h x w (after brightness matching)."""
        # Tiles are matched per whole image before they get here (a tile of background is not a dark part).
        if self.config.brightness == "match_mean" and self.reference_brightness > 0 and not self.tiled:
            images = self._match_brightness(images)
        return self.features(images)

    def project(self, patches: torch.Tensor) -> torch.Tensor:
        """Patches ... x C -> ... x pca_dim on the principal components (unchanged without pca_dim)."""
        if not self.config.pca_dim:
            return patches
        return (patches - self.pca_mean) @ self.pca_components

    def nearest(self, patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches P x C -> (Euclidean distance to the nearest bank entry P, its bank index P)."""
        bank = self.memory_bank
        if not torch.onnx.is_in_onnx_export():
            return nearest_entries(patches, bank, chunk=self.config.search_chunk)
        # Exported graphs run one batch at a time, so they search in one piece (a traced split would fix its sizes),
        # through a MatMul with a constant (folded) right operand, the form onnxruntime's int8 rewrite recognises.
        approximate = (bank * bank).sum(1) + patches @ self._bank_operand()
        if self.config.search_precision == "int8":
            index = self._nearest_of_candidates(patches, approximate)
        else:
            index = approximate.argmin(dim=1)
        return (patches - bank[index]).norm(dim=1), index

    def _nearest_of_candidates(self, chunk: torch.Tensor, approximate: torch.Tensor) -> torch.Tensor:
        """The bank index nearest each patch among the INT8_CANDIDATES nearest by the int8 product, by their
        float32 distance. The 8-bit product alone picked a farther entry often enough to cost screw's image AUROC
        0.977 -> 0.922 (its error is as large as the gaps between a good patch's nearest entries)."""
        count = min(INT8_CANDIDATES, approximate.shape[1])
        candidates = approximate.topk(count, dim=1, largest=False).indices
        squared = (chunk[:, None, :] - self.memory_bank[candidates]).pow(2).sum(dim=2)
        return candidates.gather(1, squared.argmin(dim=1, keepdim=True))[:, 0]

    def _bank_operand(self) -> torch.Tensor:
        """-2 x bank^T: the constant the exported search multiplies by, and what the int8 rewrite looks for."""
        return self.memory_bank.T * -2

    def _int8_search(self, model_bytes: bytes) -> bytes:
        from ml.int8_search import quantize_bank_products

        return quantize_bank_products(model_bytes, self._bank_operand().cpu().numpy())

    def _image_scores(self, patches: torch.Tensor, distances: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Per-image score from N x P patch distances: the max, the mean of the highest, or the re-weighted max."""
        if self.config.score != "reweighted":
            return self.pooled_scores(distances)
        top, where = distances.max(dim=1)
        scores = []
        for image, (score, patch_index) in enumerate(zip(top, where, strict=True)):
            anchor = self.memory_bank[indices[image, patch_index]]
            k = min(self.config.reweight_neighbours, len(self.memory_bank))
            neighbours = torch.cdist(anchor[None], self.memory_bank)[0].topk(k, largest=False).indices
            to_neighbours = torch.cdist(patches[image, patch_index][None], self.memory_bank[neighbours])[0]
            weight = 1 - torch.softmax(to_neighbours, dim=0)[0]
            scores.append(weight * score)
        return torch.stack(scores)

    def pooled_scores(self, distances: torch.Tensor) -> torch.Tensor:
        """N x P patch distances -> N image scores by the max or top_mean rule (not the re-weighted one)."""
        if self.config.score == "top_mean":
            return distances.topk(min(self.config.top_patches, distances.shape[1]), dim=1).values.mean(dim=1)
        return distances.max(dim=1).values

    def anomaly_maps(self, patch_scores: torch.Tensor) -> torch.Tensor:
        """Patch scores N x h x w -> maps N x S x S: bilinear upsampling, then separable Gaussian blur."""
        size = self.config.image_size
        maps = F.interpolate(patch_scores[:, None], size=(size, size), mode="bilinear", align_corners=False)
        return blur_maps(maps[:, 0], self.blur_kernel)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images N x 3 x S x S -> (image scores N, anomaly maps N x S x S), in feature-distance units."""
        features = self.embed(images)
        n, c, h, w = features.shape
        patches = self.project(features.permute(0, 2, 3, 1).reshape(n, h * w, c))
        distances, indices = self.nearest(patches.reshape(n * h * w, -1))
        distances, indices = distances.view(n, h * w), indices.view(n, h * w)
        return self._image_scores(patches, distances, indices), self.anomaly_maps(distances.view(n, h, w))

    # ---- numpy API (the AnomalyModel protocol) ----

    @property
    def tiled(self) -> bool:
        return self.config.tile_working_size > 0

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """The model input of a batch of images: the images resized to image_size, or (tiled) all their tiles."""
        if self.tiled:
            return self._tile_tensor(self._tiles(images))
        size = (self.config.image_size, self.config.image_size)
        return to_tensor(images, self.preprocessing, size).to(self.device, non_blocking=True)

    def _tiles(self, images: Sequence[np.ndarray]) -> TiledBatch:
        config = self.config
        return tile_images(
            images, working_size=config.tile_working_size, tile=config.image_size, overlap=config.tile_overlap
        )

    def _tile_tensor(self, tiled: TiledBatch, rows: slice = slice(None)) -> torch.Tensor:
        """Normalised tiles (`rows` of them), each image's brightness matched to the training mean over all the
        image's tiles."""
        tiles = tiled.tiles[rows]
        unit = torch.from_numpy(tiles).permute(0, 3, 1, 2).float().div_(255.0)
        if self.config.brightness == "match_mean" and self.reference_brightness > 0:
            reference = float(self.reference_brightness)
            gains = np.concatenate(
                [np.full(r.stop - r.start, reference / max(tiled.tiles[r].mean() / 255.0, 1e-3))
                 for r in tiled.tile_ranges()]
            )[rows]  # fmt: skip
            unit *= torch.from_numpy(gains).float().view(-1, 1, 1, 1)
        unit = unit.sub_(self.input_mean.cpu()).div_(self.input_std.cpu())
        return unit.contiguous().to(self.device, non_blocking=True)

    @torch.no_grad()
    def fit(self, samples: Sequence[Sample], *, progress: ProgressCallback = no_progress) -> None:
        """Builds the memory bank from the good samples (defective ones are ignored). Progress: "features" per
        batch, then "coreset". An exception raised by `progress` stops fitting and propagates."""
        config = self.config
        labels = getattr(samples, "labels", None)  # LazySamples know labels without reading images
        if labels is None:
            labels = [sample.label for sample in samples]
        indices = [i for i, label in enumerate(labels) if label == GOOD]
        if not indices:
            raise ValueError("PatchCore needs at least one good image to fit")
        self._choose_settings(samples, indices)
        generator = torch.Generator().manual_seed(config.seed)
        kept: list[torch.Tensor] = []
        per_image = None
        copies = max(1, config.rotations)
        # Tiled, one image's tiles (times its rotated copies) are already a batch: the memory stays that of one image.
        step = 1 if self.tiled else config.batch_size
        for start in range(0, len(indices), step):
            images = [samples[i].image for i in indices[start : start + step]]
            batch = self._batch(images)
            if config.rotations > 1:
                batch = rotated_copies(batch, config.rotations)
            if config.brightness == "match_mean" and self.reference_brightness == 0:
                # The first batch's mean is the reference: every image, training or not, is then scaled to the
                # same brightness, without a second pass over the training set.
                self.reference_brightness.fill_(float((batch * self.input_std + self.input_mean).mean()))
            # Rotated copies multiply the batch: embed it batch_size images at a time to keep activations bounded.
            features = self._embed_in_parts(batch)
            n, c, h, w = features.shape
            if per_image is None:
                # Per model input: an image, or a tile (the first batch's tiles per image stand for all images').
                inputs_per_image = n // (len(images) * copies)
                per_image = min(h * w, max(1, config.max_patches // (len(indices) * copies * inputs_per_image)))
                config.feature_shape = (c, h, w)
            patches = features.permute(0, 2, 3, 1).reshape(n, h * w, c)
            if per_image < h * w:
                # Even subsampling across images bounds memory before the coreset (a cap, not a quality knob).
                choice = torch.stack([torch.randperm(h * w, generator=generator)[:per_image] for _ in range(n)])
                choice = choice.to(patches.device)
                patches = torch.gather(patches, 1, choice[..., None].expand(-1, -1, c))
            kept.append(patches.reshape(-1, c).contiguous())
            done = min(start + step, len(indices))
            # No time left in the message: the caller estimates it over all stages (the web app shows its own).
            progress("features", done / len(indices), f"read {done} of {len(indices)} images")
        bank_candidates = torch.cat(kept)
        del kept
        if config.pca_dim:
            self._fit_pca(bank_candidates)
            bank_candidates = self.project(bank_candidates)
        c, h, w = config.feature_shape
        # The ratio is of all patches seen (as in the paper), the floor keeps few-image banks from starving.
        # Counted per image, tiled or not: a bank that grew with the tiles would slow every tile's search (40 images
        # of 16 tiles would keep 10,240 entries, 5x the search, and a coreset of over 20 min at load 25; issue 16).
        seen = len(indices) * copies * h * w
        wanted = max(config.min_bank_size, math.ceil(config.coreset_ratio * seen))
        size = min(config.max_bank_size, len(bank_candidates), wanted)
        sampler = create_sampler(config.sampler, projection_dim=config.projection_dim, seed=config.seed)
        chosen = sampler.select(bank_candidates, size, progress)
        self.memory_bank = bank_candidates[chosen].contiguous()
        config.bank_size = len(self.memory_bank)
        self.runtime.reset()
        self.position_mean, self.position_spread = torch.zeros(0, 0), torch.zeros(0, 0)
        if self.tiled and config.tile_standardise:
            spaced = indices[:: math.ceil(len(indices) / POSITION_IMAGES)]
            self._fit_position_statistics([samples[i].image for i in spaced], progress)

    def _embed_in_parts(self, batch: torch.Tensor) -> torch.Tensor:
        """embed(batch), batch_size inputs at a time; tiled, as many tiles as batch_size inputs of DEFAULT_SIZE px
        hold (tiles may be larger: four 1,040 px tiles at once held 3.6 GB of activations)."""
        return torch.cat([self.embed(piece) for piece in batch.split(self._tiles_per_pass(batch))])

    def _tiles_per_pass(self, batch: torch.Tensor) -> int:
        """Inputs of `batch` embedded at once: batch_size, or (tiled) as many as batch_size DEFAULT_SIZE px hold."""
        part = self.config.batch_size
        if self.tiled:
            part = max(1, part * adaptive.DEFAULT_SIZE**2 // (batch.shape[-1] * batch.shape[-2]))
        return part

    def _fit_position_statistics(self, images: Sequence[np.ndarray], progress: ProgressCallback) -> None:
        """The good images' mean and spread per position of the stitched map, each image scored without its own
        bank entries (ml.calibration); left empty when the images differ in working shape (parts not aligned)."""
        from ml.calibration import leave_own_out_distances

        statistics = PositionStatistics(self.features.stride)
        for done, image in enumerate(images, start=1):
            tiled = self._tiles([image])
            batch = self._tile_tensor(tiled)
            features = self._embed_in_parts(batch)
            n, c, h, w = features.shape
            patches = self.project(features.permute(0, 2, 3, 1).reshape(n * h * w, c))
            distances = leave_own_out_distances(self.memory_bank, patches).view(n, h, w)
            try:
                statistics.add(stitch(self.anomaly_maps(distances).cpu(), tiled.grids[0]))
            except ValueError:
                return
            progress("statistics", done / len(images), f"scored {done} of {len(images)} images")
        self.position_mean, self.position_spread = (t.to(self.device) for t in statistics.finish())

    def _choose_settings(self, samples: Sequence[Sample], indices: list[int]) -> None:
        """Fills the settings left at None from the data (ml.adaptive), and records the choice in the config.
        Reads the good images' sizes (ml.adaptive.short_side_of, when the working size is the rule's) and, when
        rotations are the rule's to choose for few images, checks on PROBE_IMAGES of them whether the parts appear at
        any angle (ml.rotation_check)."""
        config = self.config
        for name in config.chosen.get("chosen", []):  # fitting again chooses again what the rule chose last time
            setattr(config, name, None)
        asked = {"image_size": config.image_size, "rotations": config.rotations, "coreset_ratio": config.coreset_ratio,
                 "score": config.score}  # fmt: skip
        if all(value is not None for value in asked.values()):
            return
        if getattr(config, "tile_working_size", 0) and config.image_size is None:  # tiles keep their measured size
            asked["image_size"] = config.image_size = adaptive.DEFAULT_SIZE
        short_side = None
        if config.image_size is None:
            short_side = adaptive.short_side_of(samples, indices)
        invariant, facts = None, {}
        if config.rotations is None and len(indices) <= adaptive.FEW_IMAGES:
            probe = [samples[i].image for i in indices[: rotation_check.PROBE_IMAGES]]
            size = (rotation_check.PROBE_SIZE, rotation_check.PROBE_SIZE)
            batch = to_tensor(probe, self.preprocessing, size).to(self.device)
            check = rotation_check.check_rotation(self.features, batch)
            if check is not None:
                invariant, facts = check.invariant, {"rotation_ratio": round(check.ratio, 3)}
        choice = adaptive.choose_settings(
            n_good=len(indices), short_side=short_side, rotation_invariant=invariant, requested=asked
        )
        config.image_size, config.rotations, config.coreset_ratio, config.score = (
            choice.image_size, choice.rotations, choice.coreset_ratio, choice.score
        )  # fmt: skip
        config.chosen = {**choice.to_dict(), "facts": {**choice.facts, **facts}}

    def _fit_pca(self, patches: torch.Tensor) -> None:
        """Principal axes of the training patches (eigenvectors of their covariance, largest first)."""
        mean = patches.mean(0)
        centred = patches - mean
        covariance = (centred.T @ centred).double() / max(len(patches) - 1, 1)
        _, vectors = torch.linalg.eigh(covariance)  # ascending eigenvalues
        self.pca_mean = mean
        self.pca_components = vectors[:, -self.config.pca_dim :].flip(1).float().contiguous()

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 8) -> list[Prediction]:
        """One Prediction per image; anomaly maps are resized to each image's own H x W."""
        if len(self.memory_bank) == 0:
            raise RuntimeError("PatchCore is not fitted: call fit() or load() first")
        if self.tiled:
            return self._predict_tiled(images, batch_size=batch_size)
        predictions = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            scores, maps = (tensor.float().cpu() for tensor in self._scores_and_maps(self._batch(chunk)))
            for image, score, anomaly_map in zip(chunk, scores, maps, strict=True):
                full = resize_map(anomaly_map, tuple(np.asarray(image).shape[:2])).numpy()
                predictions.append(Prediction(score=float(score), anomaly_map=full))
        return predictions

    def _predict_tiled(self, images: Sequence[np.ndarray], *, batch_size: int) -> list[Prediction]:
        """Tiled prediction: a batch of images' tiles goes through the model batch_size tiles at a time; each
        image's tile maps are stitched at its working scale and resized to its own H x W; its score is its highest
        tile score."""
        predictions = []
        for start in range(0, len(images), batch_size):
            tiled = self._tiles(images[start : start + batch_size])
            scores, maps = [], []
            for first in range(0, len(tiled.tiles), batch_size):
                rows = slice(first, first + batch_size)
                part_scores, part_maps = self._scores_and_maps(self._tile_tensor(tiled, rows))
                scores.append(part_scores.float().cpu())
                maps.append(part_maps.float().cpu())
            scores, maps = torch.cat(scores), torch.cat(maps)
            for rows, grid, shape in zip(tiled.tile_ranges(), tiled.grids, tiled.shapes, strict=True):
                stitched = stitch(maps[rows], grid)
                score = float(scores[rows].max())
                if len(self.position_mean):
                    stitched = standardise(stitched, self.position_mean.cpu(), self.position_spread.cpu())
                    score = standardised_score(stitched, self.features.stride, self._top_cells())
                full = resize_map(stitched, shape).numpy()
                predictions.append(Prediction(score=score, anomaly_map=full))
        return predictions

    def _top_cells(self) -> int:
        """How many cells of a standardised map make the image score: top_patches for top_mean, else one."""
        return self.config.top_patches if self.config.score == "top_mean" else 1

    def _scores_and_maps(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """forward(batch), through the onnxruntime graph where it applies. The graph searches the bank in one
        piece (patches x bank entries floats), so it is fed few enough images to keep that under GRAPH_SEARCH_BYTES.
        """
        # The re-weighted score loops over images in Python, which an exported graph would freeze.
        engine = self.features.engine if self.config.score != "reweighted" else "torch"
        if batch.device.type != "cpu":  # torch on a GPU: `nearest` sizes its own chunks from free memory
            return self(batch)
        if self.tiled and self.config.search_precision == "float32":
            # A large tile's search in the graph is one piece (16,900 patches of a 1,040 px tile x the bank), swept
            # out of cache; eagerly it runs in cache-sized chunks, the features still through their own graph
            # (2048 px frame in four 1,040 px tiles, bank 2,048, one thread: search 780 -> 540 CPU ms; issue 16).
            pieces = [self(part) for part in batch.split(self._tiles_per_pass(batch))]
            return torch.cat([scores for scores, _ in pieces]), torch.cat([maps for _, maps in pieces])
        _, h, w = self.config.feature_shape
        per_image = max(1, h * w * len(self.memory_bank) * 4)
        # The int8 search quantises its query patches per graph call: fed one image at a time, an image's score
        # does not depend on the batch it came in (the model bundle scores images one by one and must agree).
        images_per_run = 1 if self.config.search_precision == "int8" else max(1, GRAPH_SEARCH_BYTES // per_image)
        pieces = [forward_with(self.runtime, self, part, engine=engine) for part in batch.split(images_per_run)]
        return torch.cat([scores for scores, _ in pieces]), torch.cat([maps for _, maps in pieces])

    def save(self, directory: Path) -> None:
        """Writes the checkpoint (ml.checkpoint): config, and backbone weights, memory bank and buffers."""
        write_checkpoint(
            directory, Checkpoint(FAMILY, asdict(self.config), self.state_dict(), self.config.preprocessing)
        )

    @classmethod
    def load(cls, directory: Path, *, device: str | None = None) -> Self:
        """Restores a saved model on `device` (default: the saved spec, or the CPU where that cannot be had)."""
        checkpoint = read_checkpoint(directory, family=FAMILY)
        config = PatchCoreConfig.from_dict(checkpoint.config)
        resolved = resolve_saved_device(config.device, device)
        model = cls(pretrained=False, resolved_device=resolved, **asdict(config))
        state = checkpoint.tensors
        # Models saved before the tiled statistics existed have none (their tiles are not standardised).
        state = {"position_mean": torch.zeros(0, 0), "position_spread": torch.zeros(0, 0), **state}
        for name in ("memory_bank", "position_mean", "position_spread"):
            setattr(model, name, torch.empty_like(state[name], device=resolved))
        model.load_state_dict(state, strict=True)
        return model.eval()

    def calibration_scores(self, samples: Sequence[Sample], *, batch_size: int = 8) -> np.ndarray:
        """N image scores of `samples` with each image's own patches left out of the bank (ml.calibration): for
        the training images, what they would score had they been held back, so the threshold costs none of them."""
        from ml.calibration import calibration_scores

        return calibration_scores(self, samples, batch_size=batch_size)

    def to_onnx(self, path: Path) -> None:
        """Exports `forward` (brightness matching, backbone, aggregation, nearest-neighbour search, map) to ONNX."""
        from ml.onnx_export import export_module

        export_module(self, path, image_size=self.config.image_size)


def rotated_copies(images: torch.Tensor, count: int) -> torch.Tensor:
    """N x 3 x S x S -> (count * N) x 3 x S x S: the batch rotated by 0, 360/count, ... degrees about its centre.

    Multiples of 90 degrees are exact; other angles resample bilinearly and extend edge pixels into the corners.
    """
    copies = [images]
    for k in range(1, count):
        degrees = 360.0 * k / count
        if degrees % 90 == 0:
            copies.append(torch.rot90(images, int(degrees // 90), dims=(2, 3)))
            continue
        angle = math.radians(degrees)
        cos, sin = math.cos(angle), math.sin(angle)
        theta = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0]], device=images.device).expand(len(images), 2, 3)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        copies.append(F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False))
    return torch.cat(copies)
