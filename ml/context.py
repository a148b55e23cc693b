"""The "context" family: a teacher-student model with a relative-position classifier, for defects that are only wrong
in context (a part swapped, rotated, missing or extra) as well as local ones (after Xiang and Ito, "Anomaly
Localization in Images Using Position-Classifier").

- Teacher: the frozen pretrained backbone, read at `teacher_layers` (each channel standardised over the training
  images, so no stage or channel dominates the distance).
- Student: a small network with a small receptive field (ml.context_parts.Student), trained on good images so its
  maps match the teacher's: L_rec, the squared L2 distance per position summed over stages (averaged over positions
  and images, a constant factor the learned weights absorb).
- Position classifier: from the student's features of a centre cell and one of its 8 neighbours `neighbour_offset`
  cells away it predicts which of the 8 directions the neighbour lies in (L_pos, cross-entropy, `pairs_per_image`
  random pairs per image). Because it only sees features of small patches, it can only succeed by learning what
  normally lies beside what: a swapped, rotated, missing or extra part makes it fail there.
- The two losses are weighted by learned weights (ml.context_parts.weighted_loss), so on a texture, where directions
  cannot be told apart, the position term weighs itself down.
- Score per cell: e_rec (teacher-student distance) and e_pos (mean over the neighbours inside the image of the
  classifier's error on the true direction: by default how far its probability falls short of the best guess, or
  the paper's 1 - p(correct); see ml.context_parts.position_error), each standardised with its mean and standard
  deviation over all training cells, added; the map is upsampled and smoothed and the image score is its maximum.

`position_term=False` is the ablation: no classifier trained, no e_pos (the plain teacher-student baseline).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar, Self

import numpy as np
import torch
import torch.nn.functional as F

from ml.backbones import DEFAULT_BACKBONE, Preprocessing, create_feature_extractor, preprocessing_for
from ml.checkpoint import Checkpoint, read_checkpoint, write_checkpoint
from ml.context_parts import (
    PositionClassifier,
    Student,
    neighbour_validity,
    position_error,
    reconstruction_error,
    sample_pairs,
    standardised_sum,
    weighted_loss,
)
from ml.devices import check_device_spec, resolve_device, resolve_saved_device
from ml.filters import blur_maps, gaussian_kernel
from ml.images import resize_map, to_tensor
from ml.runtime import GraphOwner, RuntimeGraph, checked_engine, forward_with, runtime_applies
from ml.training import TrainingSummary, autocast, grad_scaler, with_oom_fallback
from ml.types import GOOD, Prediction, ProgressCallback, Sample, no_progress

FAMILY = "context"
HISTORY_EVERY = 50  # steps between entries of the training history


@dataclass
class ContextConfig:
    """Everything needed to rebuild a context model; saved in its checkpoint.

    teacher_layers: backbone feature indices the student imitates (lite0: 2 = stride 8, 3 = stride 16); the finest
    one sets the grid every score lives on. Stage 2 alone by default: the student's small receptive field cannot
    imitate stage 3's wide one, and its error there lit up the whole of every screw (image AUROC 0.700 with (2, 3)
    against 0.836 with (2,) and a mirrored border, e_rec alone, 1,500 steps; docs/benchmarks.md, issue 17).
    teacher_padding: pixels mirrored around the image for the teacher (see Teacher; a multiple of its coarsest
    stride). student_channels: widths of the student's 3x3 convolutions (one max-pooling after each of the first
    log2(stride) of them); student_pointwise: widths of 1 x 1 convolutions after them (capacity without a wider
    receptive field). neighbour_offset: cells between a centre and its neighbours (8 cells at stride 8 = 64 px at
    256, about the student's receptive field, as in the paper).
    pairs_per_image: (centre, neighbour) pairs per image and step. steps: optimiser steps of batch_size images.
    position_term: False trains and scores without the position classifier (the ablation).
    position_margin: e_pos as max_k p(k) - p(correct) (True, the default) or the paper's 1 - p(correct) (False);
    with a classifier trained to 0.88 held-out accuracy the margin scored sparse trays' context defects 0.997
    against 0.953 and screw 0.812 against 0.710; see ml.context_parts.position_error.
    train_crop: if set, the student trains on random square crops of this side (a multiple of the teacher's
    coarsest stride) instead of whole images: the student is convolutional with a small receptive field, so crops
    teach it the same thing at a fraction of the cost.
    """

    family: ClassVar[str] = FAMILY

    backbone: str = DEFAULT_BACKBONE
    teacher_layers: tuple[int, ...] = (2,)
    image_size: int = 256
    teacher_padding: int = 32
    student_channels: tuple[int, ...] = (16, 32, 64, 96, 96)
    student_pointwise: tuple[int, ...] = ()
    classifier_hidden: int = 128
    neighbour_offset: int = 8
    pairs_per_image: int = 256
    steps: int = 1500
    batch_size: int = 8
    learning_rate: float = 1e-3
    weight_decay: float = 1e-5
    position_term: bool = True
    position_margin: bool = True
    train_crop: int | None = None
    blur_sigma: float = 4.0
    mixed_precision: bool = True
    seed: int = 0
    preprocessing: dict = field(default_factory=dict)
    device: str = "auto"

    def __post_init__(self) -> None:
        self.teacher_layers = tuple(self.teacher_layers)  # JSON and the command line give lists
        self.student_channels = tuple(self.student_channels)
        self.student_pointwise = tuple(self.student_pointwise)
        self.device = check_device_spec(self.device)
        for name in ("position_term", "position_margin"):  # --set position_term=off
            if isinstance(value := getattr(self, name), str):
                setattr(self, name, value.strip().lower() in ("1", "true", "yes", "on"))

    def to_dict(self) -> dict:
        return {"family": self.family, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        """Unknown keys (such as "family", or settings of a newer version) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


class Teacher(GraphOwner):
    """The frozen backbone: normalised images N x 3 x S x S -> one raw feature map per requested layer.

    `padding` pixels of the image are mirrored around it before the backbone runs, and the maps cropped back to
    the image: the backbone's own zero padding makes its border cells unlike any inside, which a small student
    (reflect-padded) cannot imitate, so without it the highest error of every image sat in a corner.
    On a CPU without gradients it runs in ONNX Runtime (as ml.features.PatchFeatures does)."""

    def __init__(
        self,
        backbone: str,
        layers: tuple[int, ...],
        *,
        pretrained: bool,
        weights_path,
        padding: int = 0,
        engine: str = "auto",
    ):
        super().__init__()
        self.engine = checked_engine(engine)
        self.extractor = create_feature_extractor(
            backbone, out_indices=layers, pretrained=pretrained, weights_path=weights_path
        )
        self.extractor.requires_grad_(False)
        self.reductions = list(self.extractor.feature_info.reduction())
        self.channels = list(self.extractor.feature_info.channels())
        if padding % max(self.reductions):
            raise ValueError(f"teacher_padding {padding} must be a multiple of the teacher's strides {self.reductions}")
        self.padding = padding
        self.runtime = RuntimeGraph("compute", [f"stage{i}" for i in range(len(layers))])

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        if runtime_applies(self.engine, images):
            return self.runtime.run(self, images)
        return self.compute(images)

    def compute(self, images: torch.Tensor) -> list[torch.Tensor]:
        if not self.padding:
            return list(self.extractor(images))
        pad = self.padding
        stages = self.extractor(F.pad(images, (pad, pad, pad, pad), mode="reflect"))
        cells = [pad // r for r in self.reductions]
        return [stage[:, :, c:-c, c:-c] for stage, c in zip(stages, cells, strict=True)]

    def train(self, mode: bool = True) -> Self:
        # Frozen: its batch norms keep their ImageNet statistics whatever mode the family is put in.
        return super().train(False)


class ContextModel(GraphOwner):
    """`forward` maps a normalised batch N x 3 x S x S to (scores N, maps N x S x S), in standardised units."""

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
        self.config = ContextConfig(**config)
        config_ = self.config
        self.device = resolved_device or resolve_device(config_.device)
        if not config_.preprocessing:
            config_.preprocessing = preprocessing_for(config_.backbone).to_dict()
        self.preprocessing = Preprocessing.from_dict(config_.preprocessing)
        self.teacher = Teacher(
            config_.backbone,
            config_.teacher_layers,
            pretrained=pretrained,
            weights_path=weights_path,
            padding=config_.teacher_padding,
        )
        stride = self.teacher.reductions[0]
        pools = int(math.log2(stride))
        if config_.teacher_padding >= config_.image_size:
            raise ValueError(
                f"teacher_padding {config_.teacher_padding} must be below image_size {config_.image_size} "
                "(the border is mirrored from the image itself)"
            )
        if 2**pools != stride or config_.image_size % max(self.teacher.reductions):
            raise ValueError(
                f"image_size {config_.image_size} must be a multiple of the teacher's strides {self.teacher.reductions}"
            )
        factors = [reduction // stride for reduction in self.teacher.reductions]
        self.student = Student(
            config_.student_channels, pools, self.teacher.channels, factors, pointwise=config_.student_pointwise
        )
        self.classifier = PositionClassifier(self.student.out_channels, config_.classifier_hidden)
        self.log_lambda_rec = torch.nn.Parameter(torch.zeros(()))
        self.log_lambda_pos = torch.nn.Parameter(torch.zeros(()))
        self.grid = config_.image_size // stride
        self.stride = stride
        if config_.position_term and self.grid <= config_.neighbour_offset:
            raise ValueError(
                f"neighbour_offset {config_.neighbour_offset} cells does not fit the {self.grid} x {self.grid} grid "
                f"of image_size {config_.image_size}: lower it or raise image_size"
            )
        for index, channels in enumerate(self.teacher.channels):
            self.register_buffer(f"teacher_mean_{index}", torch.zeros(1, channels, 1, 1))
            self.register_buffer(f"teacher_std_{index}", torch.ones(1, channels, 1, 1))
        # [mu_rec, sigma_rec, mu_pos, sigma_pos] over every training cell (see standardised_sum).
        self.register_buffer("statistics", torch.tensor([0.0, 1.0, 0.0, 1.0]))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("blur_kernel", gaussian_kernel(config_.blur_sigma))
        validity = neighbour_validity(self.grid, self.grid, config_.neighbour_offset)
        self.register_buffer("validity", validity, persistent=False)  # derived from sizes, so not saved
        self.summary = TrainingSummary()
        self.runtime = RuntimeGraph("forward", ["scores", "maps"])
        self.to(self.device)

    # ---- tensor path (also what ONNX export traces) ----

    def teacher_targets(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Normalised images -> the teacher's maps, each channel standardised with the training statistics."""
        return [
            (stage - getattr(self, f"teacher_mean_{i}")) / getattr(self, f"teacher_std_{i}")
            for i, stage in enumerate(self.teacher(images))
        ]

    def error_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(e_rec N x h x w, e_pos N x h x w or None without the position term) on the student's grid."""
        hidden, stages = self.student(images)
        e_rec = reconstruction_error(stages, self.teacher_targets(images))
        if not self.config.position_term:
            return e_rec, None
        return e_rec, position_error(
            hidden, self.classifier, self.validity, self.config.neighbour_offset, margin=self.config.position_margin
        )

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images N x 3 x S x S -> (image scores N, anomaly maps N x S x S): the standardised sum of
        e_rec and e_pos, upsampled, smoothed; the score is the map's maximum."""
        e_rec, e_pos = self.error_maps(images)
        return self.scored_maps(standardised_sum(e_rec, e_pos, self.statistics))

    def scored_maps(self, cells: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps on the student's grid N x h x w -> (image scores N, maps N x S x S): upsampled to the image size,
        smoothed, scored by their maximum (also how scripts score e_rec or e_pos alone)."""
        size = self.config.image_size
        maps = F.interpolate(cells[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]
        maps = blur_maps(maps, self.blur_kernel)
        return maps.flatten(1).max(dim=1).values, maps

    # ---- numpy API (the AnomalyModel protocol) ----

    def _batch(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        size = (self.config.image_size, self.config.image_size)
        return to_tensor(images, self.preprocessing, size)

    def fit(self, samples: Sequence[Sample], *, progress: ProgressCallback = no_progress) -> None:
        """Trains the student and the classifier on the good samples, then measures the error statistics.
        Progress: "teacher" per batch read, "train" per 10 steps, "statistics" per batch. An exception raised by
        `progress` stops fitting and propagates."""
        started = time.perf_counter()
        labels = getattr(samples, "labels", None)
        if labels is None:
            labels = [sample.label for sample in samples]
        indices = [i for i, label in enumerate(labels) if label == GOOD]
        if len(indices) < 1:
            raise ValueError("the context model needs at least one good image to fit")
        images, targets = self._read_training_images(samples, indices, progress)
        self._standardise_teacher(targets)

        def train(batch_size: int) -> TrainingSummary:
            return self._train(images, targets, batch_size, progress)

        summary = with_oom_fallback(train, self.config.batch_size)
        self._measure_statistics(images, progress)
        summary.seconds = time.perf_counter() - started
        summary.n_train = len(indices)
        summary.device = str(self.device)
        self.summary = summary
        self.fitted.fill_(True)
        self.runtime.reset()

    def _read_training_images(self, samples, indices, progress) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The good images, resized and normalised (float16, on the CPU), and the teacher's raw maps of each."""
        images, targets = [], []
        batch_size = self.config.batch_size
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            batch = self._batch([samples[i].image for i in chunk])
            with torch.no_grad():
                stages = self.teacher(batch.to(self.device))
            images.append(batch.half())
            targets.append([stage.float().cpu().half() for stage in stages])
            done = start + len(chunk)
            progress("teacher", done / len(indices), f"read {done} of {len(indices)} images")
        stage_targets = [torch.cat([t[i] for t in targets]) for i in range(len(self.teacher.channels))]
        return torch.cat(images), stage_targets

    def _standardise_teacher(self, targets: list[torch.Tensor]) -> None:
        for index, stage in enumerate(targets):
            values = stage.float()
            mean = values.mean(dim=(0, 2, 3), keepdim=True)
            std = values.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-4)
            getattr(self, f"teacher_mean_{index}").copy_(mean)
            getattr(self, f"teacher_std_{index}").copy_(std)
            stage.sub_(mean.half()).div_(std.half())

    def _reset_trainables(self) -> None:
        """Fresh student, classifier and weights from the seed (with_oom_fallback starts over after an OOM)."""
        torch.manual_seed(self.config.seed)
        for module in (self.student, self.classifier) if self.config.position_term else (self.student,):
            for layer in module.modules():
                if hasattr(layer, "reset_parameters") and layer is not module:
                    layer.reset_parameters()
        torch.nn.init.zeros_(self.classifier.bias)
        with torch.no_grad():
            self.log_lambda_rec.zero_()
            self.log_lambda_pos.zero_()

    def _crop(self, images, targets, generator) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One random crop of side train_crop for the whole batch, aligned to the teacher's coarsest stride."""
        crop, size = self.config.train_crop, self.config.image_size
        if not crop or crop >= size:
            return images, targets
        coarsest = max(self.teacher.reductions)
        if crop % coarsest:
            raise ValueError(f"train_crop {crop} must be a multiple of the teacher's coarsest stride {coarsest}")
        top, left = (int(v) * coarsest for v in torch.randint((size - crop) // coarsest + 1, (2,), generator=generator))
        images = images[:, :, top : top + crop, left : left + crop]
        cropped = []
        for reduction, stage in zip(self.teacher.reductions, targets, strict=True):
            t, lft, c = top // reduction, left // reduction, crop // reduction
            cropped.append(stage[:, :, t : t + c, lft : lft + c])
        return images, cropped

    def _train(self, images, targets, batch_size: int, progress) -> TrainingSummary:
        config = self.config
        self._reset_trainables()
        generator = torch.Generator().manual_seed(config.seed)
        parameters = list(self.student.parameters())
        if config.position_term:
            parameters += [*self.classifier.parameters(), self.log_lambda_rec, self.log_lambda_pos]
        optimiser = torch.optim.Adam(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
        scaler = grad_scaler(self.device, config.mixed_precision)
        summary = TrainingSummary(batch_size=batch_size)
        order = torch.randperm(len(images), generator=generator)
        cursor = 0
        running: dict[str, float] = {}
        for step in range(1, config.steps + 1):
            if cursor + batch_size > len(order):
                order, cursor = torch.randperm(len(images), generator=generator), 0
            chosen = order[cursor : cursor + batch_size]
            cursor += batch_size
            batch, batch_targets = self._crop(images[chosen], [t[chosen] for t in targets], generator)
            batch = batch.to(self.device, non_blocking=True).float()
            batch_targets = [t.to(self.device, non_blocking=True).float() for t in batch_targets]
            with autocast(self.device, config.mixed_precision):
                hidden, stages = self.student(batch)
                rec = sum(((s.float() - t) ** 2).sum(dim=1).mean() for s, t in zip(stages, batch_targets, strict=True))
                if config.position_term:
                    pos, accuracy = self._position_loss(hidden.float(), generator)
                    loss = weighted_loss(rec, pos, self.log_lambda_rec, self.log_lambda_pos)
                else:
                    pos, accuracy, loss = torch.zeros(()), torch.zeros(()), rec
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            for key, value in (("loss", loss), ("rec", rec), ("pos", pos), ("accuracy", accuracy)):
                running[key] = running.get(key, 0.0) + float(value.detach())
            if step % HISTORY_EVERY == 0 or step == config.steps:
                count = HISTORY_EVERY if step % HISTORY_EVERY == 0 else step % HISTORY_EVERY
                entry = {"step": step, **{key: value / count for key, value in running.items()}}
                entry["lambda_rec"] = float(self.log_lambda_rec.detach().exp())
                entry["lambda_pos"] = float(self.log_lambda_pos.detach().exp())
                summary.history.append(entry)
                running = {}
            if step % 10 == 0 or step == config.steps:
                progress("train", step / config.steps, f"step {step} of {config.steps}")
        summary.epochs_run = math.ceil(config.steps * batch_size / len(images))
        return summary

    def _position_loss(
        self, hidden: torch.Tensor, generator: torch.Generator, count: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of the classifier on `count` (default pairs_per_image) random pairs per image, and its
        accuracy."""
        n, c, h, w = hidden.shape
        count = count or self.config.pairs_per_image
        centres, neighbours, labels = sample_pairs(h, w, self.config.neighbour_offset, n * count, generator)
        rows = torch.arange(n).repeat_interleave(count)
        flat = hidden.flatten(2).transpose(1, 2)  # N x hw x C
        labels = labels.to(hidden.device)
        logits = self.classifier(flat[rows, centres.to(hidden.device)] - flat[rows, neighbours.to(hidden.device)])
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return F.cross_entropy(logits, labels), accuracy.detach()

    @torch.no_grad()
    def position_accuracy(self, images: Sequence[np.ndarray], *, pairs_per_image: int = 256, seed: int = 99) -> float:
        """The classifier's accuracy on random (centre, neighbour) pairs of `images` (drawn as in training)."""
        generator = torch.Generator().manual_seed(seed)
        correct = []
        for start in range(0, len(images), self.config.batch_size):
            hidden, _ = self.student(self._batch(images[start : start + self.config.batch_size]).to(self.device))
            correct.append(self._position_loss(hidden.float(), generator, pairs_per_image)[1])
        return float(torch.stack(correct).mean())

    @torch.no_grad()
    def _measure_statistics(self, images: torch.Tensor, progress) -> None:
        """Mean and standard deviation of e_rec and e_pos over every cell of every training image."""
        sums = torch.zeros(4, dtype=torch.float64)  # sum rec, sum rec^2, sum pos, sum pos^2
        count = 0
        batch_size = self.config.batch_size
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].to(self.device).float()
            e_rec, e_pos = self.error_maps(batch)
            e_rec = e_rec.double().cpu()
            sums[0] += e_rec.sum()
            sums[1] += (e_rec**2).sum()
            if e_pos is not None:
                e_pos = e_pos.double().cpu()
                sums[2] += e_pos.sum()
                sums[3] += (e_pos**2).sum()
            count += e_rec.numel()
            done = min(start + batch_size, len(images))
            progress("statistics", done / len(images), f"measured {done} of {len(images)} images")
        means = sums[[0, 2]] / count
        stds = (sums[[1, 3]] / count - means**2).clamp_min(0).sqrt().clamp_min(1e-6)
        self.statistics.copy_(torch.stack([means[0], stds[0], means[1], stds[1]]).float())

    @torch.no_grad()
    def predict(self, images: Sequence[np.ndarray], *, batch_size: int = 8) -> list[Prediction]:
        """One Prediction per image; maps resized to each image's own H x W."""
        if not bool(self.fitted):
            raise RuntimeError("ContextModel is not fitted: call fit() or load() first")
        predictions = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            batch = self._batch(chunk).to(self.device, non_blocking=True)
            scores, maps = forward_with(self.runtime, self, batch, engine=self.teacher.engine)
            scores, maps = scores.float().cpu(), maps.float().cpu()
            for image, score, anomaly_map in zip(chunk, scores, maps, strict=True):
                full = resize_map(anomaly_map, tuple(np.asarray(image).shape[:2])).numpy()
                predictions.append(Prediction(score=float(score), anomaly_map=full))
        return predictions

    def save(self, directory: Path) -> None:
        """Writes the checkpoint (ml.checkpoint): config, training record and every tensor (teacher included, so a
        saved model does not depend on the backbone weights installed where it is loaded)."""
        write_checkpoint(
            directory,
            Checkpoint(
                FAMILY,
                asdict(self.config),
                self.state_dict(),
                self.config.preprocessing,
                training=asdict(self.summary),
            ),
        )

    @classmethod
    def load(cls, directory: Path, *, device: str | None = None) -> Self:
        """Restores a saved model on `device` (default: the saved spec, or the CPU where that cannot be had)."""
        checkpoint = read_checkpoint(directory, family=FAMILY)
        # Saved before the teacher's border was mirrored: keep the teacher those tensors were fitted against.
        config = ContextConfig.from_dict({"teacher_padding": 0, **checkpoint.config})
        resolved = resolve_saved_device(config.device, device)
        model = cls(pretrained=False, resolved_device=resolved, **asdict(config))
        model.load_state_dict(checkpoint.tensors, strict=True)
        model.summary = TrainingSummary.from_dict(checkpoint.training)
        return model.eval()

    def to_onnx(self, path: Path) -> None:
        """Exports `forward` (teacher, student, classifier, standardised map) to ONNX."""
        from ml.onnx_export import export_module

        export_module(self, path, image_size=self.config.image_size)
