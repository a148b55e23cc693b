"""MVTec AD folders, written for export (the import side is webapp.images.intake.layout, which reads them):

    <split>/good/<name>                     good images (split: train, validation or test)
    <split>/<class>/<name>                  defect images of that class
    ground_truth/<class>/<stem>_mask.png    their masks, 0 and 255
    unlabelled/<name>                       images nobody has labelled yet (Kensa assigns splits on import)

MVTec has one class per image and no boxes: an image with masks of several classes is filed under the first class
that has a mask (the others are left out), boxes are left out, and a defect without a class goes under
`defect/`. A class named like the good folder (Kensa refuses such names now; older projects may have one) is
written as `<name>_class/` so that its images come back as defects. Masks are matched to images by stem, so file
names must be unique (see unique_names).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from webapp.annotations.formats import DEFECT, GOOD, DatasetItem, mask_png

GOOD_FOLDER = "good"
RESERVED_FOLDER_SUFFIX = "_class"
UNLABELLED_FOLDER = "unlabelled"
CLASSLESS_FOLDER = "defect"
MASK_FOLDER = "ground_truth"


def mvtec_write(items: list[DatasetItem]) -> tuple[list[str], dict[str, bytes]]:
    """The archive path of each item (in order) and the mask PNGs by archive path. Item paths are file names."""
    paths: list[str] = []
    masks: dict[str, bytes] = {}
    for item in items:
        name = PurePosixPath(item.path).name
        split = item.split or "train"
        if item.label == GOOD:
            paths.append(f"{split}/{GOOD_FOLDER}/{name}")
            continue
        if item.label != DEFECT:
            paths.append(f"{UNLABELLED_FOLDER}/{name}")
            continue
        with_mask = [d for d in item.drawings if d.mask is not None and d.mask.any()]
        drawing = (with_mask or item.drawings or [None])[0]
        folder = _folder_name(drawing.class_name) if drawing else CLASSLESS_FOLDER
        paths.append(f"{split}/{folder}/{name}")
        if with_mask:
            masks[f"{MASK_FOLDER}/{folder}/{PurePosixPath(name).stem}_mask.png"] = mask_png(drawing.mask)
    return paths, masks


def _folder_name(class_name: str) -> str:
    """A class name as one folder: slashes would make more folders, a leading dot a hidden one, and the good
    folder's name (in any case) would turn the class's images into good ones."""
    folder = class_name.replace("/", "_").replace("\\", "_").lstrip(".") or CLASSLESS_FOLDER
    return folder + RESERVED_FOLDER_SUFFIX if folder.casefold() == GOOD_FOLDER else folder
