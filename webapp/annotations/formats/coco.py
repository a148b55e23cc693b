"""COCO JSON: images, categories and annotations with boxes and RLE masks.

One COCO annotation per (image, class) carries the class's whole mask as RLE (`iscrowd` 1, as COCO does for
RLE) and the bounding box of that mask; each drawn box is its own annotation with a box and no segmentation.
Kensa adds keys that COCO readers ignore: `label` and `split` on images, `color` on categories. Without them
an image with annotations reads as a defect and one without as unlabelled.

RLE (COCO's `counts`): the mask flattened column by column (Fortran order), as run lengths that alternate
background, foreground, background..., starting with background (so a mask whose first pixel is set starts
with a 0). The compressed string form (pycocotools' `rleToString`) stores each count, from the fourth on as
the difference from the count two before, in 5-bit groups with a continuation bit, offset by 48 into ASCII.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from webapp.annotations.formats import (
    DEFECT,
    GOOD,
    UNLABELLED,
    ClassDrawing,
    DatasetClass,
    DatasetItem,
    FormatError,
    member_for_reference,
)

ANNOTATIONS_FILE = "annotations.json"
IMAGES_FOLDER = "images"

NO_ANNOTATIONS_FILE = "The zip has no COCO annotation file (annotations.json or another .json file)."
NOT_COCO = "The annotation file is not COCO JSON: {problem}."
RLE_SIZE_MISMATCH = "An RLE mask for {name} covers {got} pixels, but the image has {expected}."
DECLARED_SIZE_MISMATCH = (
    "The COCO file gives {name} as {declared_w}x{declared_h} pixels, but the image is {w}x{h}: its {class_name} "
    "mask was not applied."
)


@dataclass
class CocoDrawing(ClassDrawing):
    """A class's drawing whose mask is still COCO segmentations (RLE or polygons) on the canvas the file declares.
    `mask_for` decodes it one image at a time, once the real image is known to have that size: a declared size
    is never trusted with memory (30000 x 30000 is 900 MB of mask), and a whole dataset's masks are never held."""

    segmentations: list = field(default_factory=list)
    declared_size: tuple[int, int] = (0, 0)  # width, height
    image_name: str = ""

    def mask_for(self, *, width: int, height: int) -> np.ndarray | None:
        """Decoded now, at the image's real size; FormatError when the file declared another size."""
        if not self.segmentations:
            return self.mask
        declared_w, declared_h = self.declared_size
        if (declared_w, declared_h) != (width, height):
            raise FormatError(
                DECLARED_SIZE_MISMATCH.format(
                    name=self.image_name,
                    declared_w=declared_w,
                    declared_h=declared_h,
                    w=width,
                    h=height,
                    class_name=self.class_name,
                )
            )
        mask = np.zeros((height, width), dtype=bool) if self.mask is None else self.mask.copy()
        for segmentation in self.segmentations:
            try:
                mask |= _segmentation_mask(segmentation, height, width, self.image_name)
            except FormatError:
                raise
            except (KeyError, TypeError, ValueError, IndexError):
                problem = f"a {self.class_name} mask of {self.image_name} cannot be decoded"
                raise FormatError(NOT_COCO.format(problem=problem)) from None
        return mask


def rle_encode(mask: np.ndarray) -> dict:
    """COCO uncompressed RLE of a boolean H x W mask: {"size": [H, W], "counts": [...]}, column-major."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(c) for c in counts]}


def rle_decode(rle: dict) -> np.ndarray:
    """A boolean H x W mask from COCO RLE, counts as a list or as the compressed string."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = rle_string_decode(counts)
    counts = [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != height * width:
        raise FormatError(RLE_SIZE_MISMATCH.format(name="an image", got=sum(counts), expected=height * width))
    values = np.arange(len(counts)) % 2 == 1  # runs alternate background, foreground
    flat = np.repeat(values, counts)
    return flat.reshape((height, width), order="F")


def rle_string_encode(counts: list[int]) -> str:
    """pycocotools' compressed counts string."""
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            c = x & 0x1F
            x >>= 5  # arithmetic shift: a negative difference ends in ...11111
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def rle_string_decode(text: str) -> list[int]:
    counts: list[int] = []
    position = 0
    while position < len(text):
        x, shift, more = 0, 0, True
        while more:
            if position >= len(text):
                raise FormatError(NOT_COCO.format(problem="an RLE counts string ends in the middle of a number"))
            c = ord(text[position]) - 48
            x |= (c & 0x1F) << shift
            more = bool(c & 0x20)
            position += 1
            shift += 5
            if not more and c & 0x10:
                x |= -1 << shift
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def mask_bbox(mask: np.ndarray) -> list[int]:
    """[x, y, width, height] of the set pixels (COCO's bbox), or zeros for an empty mask."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0, 0, 0, 0]
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def coco_write(items: list[DatasetItem], classes: list[DatasetClass]) -> dict:
    """The COCO document for `items`; image file names are their archive paths."""
    category_ids = {c.name: i for i, c in enumerate(classes, start=1)}
    document: dict = {
        "info": {"description": "Exported from Kensa"},
        "images": [],
        "categories": [
            {"id": i, "name": c.name, "supercategory": "defect", "color": c.colour}
            for c, i in zip(classes, category_ids.values())
        ],
        "annotations": [],
    }
    next_id = 1
    for image_id, item in enumerate(items, start=1):
        document["images"].append(
            {
                "id": image_id,
                "file_name": item.path,
                "width": item.width,
                "height": item.height,
                "label": item.label,
                "split": item.split,
            }
        )
        for drawing in item.drawings:
            category = category_ids[drawing.class_name]
            if drawing.mask is not None and drawing.mask.any():
                document["annotations"].append(
                    {
                        "id": next_id,
                        "image_id": image_id,
                        "category_id": category,
                        "iscrowd": 1,
                        "segmentation": rle_encode(drawing.mask),
                        "area": int(drawing.mask.sum()),
                        "bbox": mask_bbox(drawing.mask),
                    }
                )
                next_id += 1
            for x0, y0, x1, y1 in drawing.boxes:
                document["annotations"].append(
                    {
                        "id": next_id,
                        "image_id": image_id,
                        "category_id": category,
                        "iscrowd": 0,
                        "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "area": (x1 - x0) * (y1 - y0),
                    }
                )
                next_id += 1
    return document


def coco_read(document: dict, paths: list[str]) -> tuple[list[DatasetItem], list[DatasetClass]]:
    """Items and classes from a COCO document; file names are matched to the archive's `paths`.

    Polygons are filled into the mask; an annotation with only a bbox becomes a box. Images whose file is
    not in the archive are left out. Masks are not decoded here: drawings are CocoDrawings, see `CocoDrawing.mask_for`.
    """
    try:
        categories = {
            int(c["id"]): DatasetClass(str(c["name"]), str(c.get("color") or "")) for c in document["categories"]
        }
        images = {int(i["id"]): i for i in document["images"]}
        annotations = document.get("annotations") or []
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(NOT_COCO.format(problem=f"missing or bad {exc}")) from None
    by_image: dict[int, dict[str, ClassDrawing]] = {}
    for annotation in annotations:
        try:
            image = images[int(annotation["image_id"])]
            category = categories[int(annotation["category_id"])]
            height, width = int(image["height"]), int(image["width"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(NOT_COCO.format(problem="an annotation names an unknown image or category")) from None
        name = str(image.get("file_name"))
        drawing = by_image.setdefault(int(image["id"]), {}).setdefault(
            category.name, CocoDrawing(category.name, declared_size=(width, height), image_name=name)
        )
        segmentation = annotation.get("segmentation")
        if segmentation:
            if isinstance(segmentation, dict):  # an RLE's own size must be its image's, as before any decoding
                _rle_size_check(segmentation, height, width, name)
            drawing.segmentations.append(segmentation)
        elif annotation.get("bbox"):
            x, y, w, h = (round(float(v)) for v in annotation["bbox"])
            drawing.boxes.append([x, y, x + w, y + h])
    items = []
    for image_id, image in images.items():
        path = member_for_reference(str(image.get("file_name", "")), paths)
        if path is None:
            continue
        drawings = list(by_image.get(image_id, {}).values())
        label = image.get("label")
        if label not in (GOOD, DEFECT, UNLABELLED):
            label = DEFECT if drawings else UNLABELLED
        split = image.get("split") if image.get("split") in ("train", "validation", "test") else None
        items.append(DatasetItem(path, int(image["width"]), int(image["height"]), label, split, drawings))
    return items, list(categories.values())


def _rle_size_check(rle: dict, height: int, width: int, name: str) -> None:
    try:
        rle_height, rle_width = (int(v) for v in rle["size"])
    except (KeyError, TypeError, ValueError):
        raise FormatError(NOT_COCO.format(problem=f"the RLE mask of {name} has no size [height, width]")) from None
    if (rle_height, rle_width) != (height, width):
        raise FormatError(RLE_SIZE_MISMATCH.format(name=name, got=rle_height * rle_width, expected=height * width))


def _segmentation_mask(segmentation, height: int, width: int, name: str) -> np.ndarray:
    if isinstance(segmentation, dict):
        _rle_size_check(segmentation, height, width, name)
        return rle_decode(segmentation)
    from PIL import Image as PILImage
    from PIL import ImageDraw

    canvas = PILImage.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for polygon in segmentation:
        points = [(float(polygon[i]), float(polygon[i + 1])) for i in range(0, len(polygon) - 1, 2)]
        if len(points) >= 3:
            draw.polygon(points, fill=255)
    return np.asarray(canvas) > 0
