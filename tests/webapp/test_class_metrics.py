"""Per defect class F1 and IoU (issue 20), and the samples that carry the classes and boxes to the families."""

import numpy as np
import pytest

from ml.types import DEFECT, GOOD, Box, Detection, Sample
from ml.types import Prediction as MlPrediction
from webapp.images.models import Annotation, Image, Label
from webapp.projects.services import defect_class_get_or_create
from webapp.samples import sample_project_create
from webapp.training.class_metrics import ClassMetrics
from webapp.training.datasets import ProjectSamples

CLASSES = ("dent", "scratch")


def defect(name: str, box: tuple[int, int, int, int]) -> Sample:
    class_mask = np.zeros((20, 20), np.int32)
    x0, y0, x1, y1 = box
    class_mask[y0:y1, x0:x1] = CLASSES.index(name) + 1
    return Sample(np.zeros((20, 20, 3), np.uint8), DEFECT, class_mask > 0, class_mask=class_mask, classes=CLASSES)


def region(box: tuple[int, int, int, int]) -> np.ndarray:
    mask = np.zeros((20, 20), bool)
    mask[box[1] : box[3], box[0] : box[2]] = True
    return mask


def test_a_one_class_model_is_judged_per_class_against_the_good_images():
    # given PatchCore-like predictions (no classes): one dent caught exactly, one scratch missed, one good called
    metrics = ClassMetrics(threshold=1.0)
    empty = np.zeros((20, 20), bool)
    metrics.add(defect("dent", (0, 0, 10, 10)), MlPrediction(2.0, np.zeros((20, 20))), region((0, 0, 10, 10)))
    metrics.add(defect("dent", (5, 5, 15, 15)), MlPrediction(2.0, np.zeros((20, 20))), region((5, 5, 10, 10)))
    metrics.add(defect("scratch", (0, 0, 4, 4)), MlPrediction(0.5, np.zeros((20, 20))), empty)
    metrics.add(Sample(np.zeros((20, 20, 3), np.uint8), GOOD), MlPrediction(1.5, np.zeros((20, 20))), empty)
    metrics.add(Sample(np.zeros((20, 20, 3), np.uint8), GOOD), MlPrediction(0.1, np.zeros((20, 20))), empty)
    # then
    result = metrics.result()
    assert result["dent"] == {"n": 2, "precision": pytest.approx(2 / 3), "recall": 1.0,
                              "f1": pytest.approx(0.8), "mean_iou": pytest.approx((1 + 0.25) / 2)}  # fmt: skip
    assert result["scratch"]["recall"] == 0.0 and result["scratch"]["f1"] == 0.0
    assert result["scratch"]["mean_iou"] == 0.0


def test_a_model_that_names_classes_loses_a_defect_it_names_wrong():
    # given a class-aware model that calls a scratch a dent (by its detection's label)
    metrics = ClassMetrics(threshold=0.5)
    called_dent = MlPrediction(0.9, np.zeros((20, 20)), detections=[Detection(Box(0, 0, 4, 4, "dent"), 0.9)])
    metrics.add(defect("scratch", (0, 0, 4, 4)), called_dent, region((0, 0, 4, 4)))
    right = MlPrediction(0.9, np.zeros((20, 20)), detections=[Detection(Box(0, 0, 9, 9, "dent"), 0.9)])
    metrics.add(defect("dent", (0, 0, 9, 9)), right, region((0, 0, 9, 9)))
    # then the scratch is a miss, and the dent named on it a false alarm of dent
    result = metrics.result()
    assert (result["scratch"]["recall"], result["scratch"]["f1"]) == (0.0, 0.0)
    assert result["dent"]["recall"] == 1.0 and result["dent"]["precision"] == 0.5


@pytest.mark.django_db
def test_project_samples_carry_class_maps_and_boxes(owner):
    # given the sample project (three classes, masks) and one defect boxed with a second class
    project = sample_project_create(owner=owner, n_good=4, n_defect=3, size=32)
    boxed = Image.objects.filter(project=project, label=Label.DEFECT).order_by("id").first()
    Annotation.objects.filter(image=boxed).delete()
    Annotation.objects.create(image=boxed, defect_class=defect_class_get_or_create(project=project, name="dent"),
                              boxes=[[2, 3, 10, 12]])  # fmt: skip
    samples = ProjectSamples(Image.objects.filter(project=project).order_by("id"))
    # then every sample names the project's classes the same way, masks become class maps, boxes stay boxes
    assert samples.classes == ("scratch", "dent", "stain")
    by_id = {image.id: samples[k] for k, image in enumerate(samples.images)}
    box_sample = by_id[boxed.id]
    assert box_sample.boxes == [Box(2, 3, 10, 12, "dent")] and box_sample.mask[3:12, 2:10].all()
    assert set(np.unique(box_sample.class_mask)) == {0, 2}
    outlined = [s for k, s in by_id.items() if k != boxed.id and s.label == DEFECT]
    assert outlined and all(s.boxes is None and s.class_mask is not None for s in outlined)
    assert all(s.class_mask is None for s in by_id.values() if s.label == GOOD)
