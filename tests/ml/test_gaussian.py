import numpy as np
import pytest

from ml.gaussian import GaussianBaseline
from ml.metrics import image_auroc
from ml.registry import load_model
from ml.synthetic import make_dataset
from ml.types import DEFECT, GOOD, Sample

SIZE = 96


@pytest.fixture(scope="module")
def parts():
    train = make_dataset(n_good=12, n_defect=0, size=SIZE, seed=1)
    test = make_dataset(n_good=6, n_defect=6, size=SIZE, seed=2)
    return [Sample(image=p.image) for p in train], test


@pytest.fixture(scope="module")
def fitted(parts):
    model = GaussianBaseline(image_size=SIZE, grid=12, reduced_channels=48, pretrained=True)
    model.fit(parts[0])
    return model


def test_defects_score_above_good_parts(fitted, parts):
    # given
    _, test = parts

    # when
    predictions = fitted.predict([p.image for p in test])

    # then
    labels = np.array([DEFECT if p.defect else GOOD for p in test])
    assert image_auroc(labels, np.array([p.score for p in predictions])) >= 0.9
    defect, anomaly_map = test[-1], predictions[-1].anomaly_map
    assert anomaly_map.shape == (SIZE, SIZE)
    assert anomaly_map[defect.mask].mean() > anomaly_map[~defect.mask].mean()


def test_save_and_load_give_the_same_scores(fitted, parts, tmp_path):
    images = [p.image for p in parts[1]]
    before = [p.score for p in fitted.predict(images)]
    fitted.save(tmp_path)
    loaded = load_model(tmp_path)
    assert isinstance(loaded, GaussianBaseline)
    assert np.allclose(before, [p.score for p in loaded.predict(images)], atol=1e-4)


def test_unfitted_model_refuses_to_predict():
    with pytest.raises(RuntimeError, match="not fitted"):
        GaussianBaseline(image_size=64, grid=4, pretrained=False).predict([np.zeros((64, 64, 3), np.uint8)])
