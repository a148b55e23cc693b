"""What a file's path says about it: the MVTec AD layout gives label, split, defect class and masks.

MVTec AD layout (optionally under one or more root folders):
    train/good/<name>                      good, train split
    validation/good/<name>                 good, validation split (not in MVTec itself; some exports have it)
    test/good/<name>                       good, test split
    test/<defect>/<name>                   defect of class <defect>, test split
    ground_truth/<defect>/<stem>_mask.png  mask of test/<defect>/<stem>.*
Any other path is an unlabelled image whose split Kensa assigns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

SPLIT_FOLDERS = {"train": "train", "validation": "validation", "test": "test"}
MASK_FOLDER = "ground_truth"
GOOD_FOLDER = "good"
MASK_SUFFIX = "_mask"


@dataclass(frozen=True)
class PlannedImage:
    path: str
    label: str | None = None  # "good" / "defect" / None (unlabelled)
    split: str | None = None  # None: Kensa assigns one
    defect_class: str | None = None
    mask_path: str | None = None


@dataclass(frozen=True)
class Plan:
    images: list[PlannedImage]
    orphan_masks: list[str]  # masks whose image is not in the upload
    is_mvtec: bool


def _locate(path: str) -> tuple[str, str, str, str] | None:
    """(root, top folder, class folder, file name) when the path ends in <top>/<class>/<file>."""
    parts = PurePosixPath(path).parts
    if len(parts) < 3:
        return None
    top, folder, name = parts[-3], parts[-2], parts[-1]
    if top not in SPLIT_FOLDERS and top != MASK_FOLDER:
        return None
    return "/".join(parts[:-3]), top, folder, name


def plan_layout(paths: list[str]) -> Plan:
    """Decides label, split, class and mask for every path of one upload or folder."""
    masks: dict[tuple[str, str, str], str] = {}
    for path in paths:
        located = _locate(path)
        if located and located[1] == MASK_FOLDER:
            root, _, defect, name = located
            stem = PurePosixPath(name).stem
            if stem.endswith(MASK_SUFFIX):
                stem = stem[: -len(MASK_SUFFIX)]
            masks[(root, defect, stem)] = path

    used_masks: set[str] = set()
    images: list[PlannedImage] = []
    is_mvtec = False
    for path in paths:
        located = _locate(path)
        if located is None:
            images.append(PlannedImage(path=path))
            continue
        root, top, folder, name = located
        if top == MASK_FOLDER:
            continue
        is_mvtec = True
        split = SPLIT_FOLDERS[top]
        if folder == GOOD_FOLDER:
            images.append(PlannedImage(path=path, label="good", split=split))
            continue
        mask_path = masks.get((root, folder, PurePosixPath(name).stem))
        if mask_path:
            used_masks.add(mask_path)
        images.append(PlannedImage(path=path, label="defect", split=split, defect_class=folder, mask_path=mask_path))
    orphans = sorted(set(masks.values()) - used_masks)
    return Plan(images=images, orphan_masks=orphans, is_mvtec=is_mvtec or bool(masks))
