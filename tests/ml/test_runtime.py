"""predict() through one onnxruntime graph gives what eager PyTorch gives, and follows refits and loads."""

import numpy as np
import pytest

from ml.gaussian import GaussianBaseline
from ml.patchcore import PatchCore
from ml.synthetic import make_dataset
from ml.types import Sample

SIZE = 64


@pytest.fixture(scope="module")
def parts():
    """6 good training parts, then 3 good and 3 defective held-out parts."""
    train = make_dataset(n_good=6, n_defect=0, size=SIZE, seed=11)
    held_out = make_dataset(n_good=3, n_defect=3, size=SIZE, seed=12)
    return [Sample(image=p.image) for p in train], [p.image for p in held_out]


def eager_predict(model, images):
    engine = model.features.engine
    model.features.engine = "torch"
    try:
        return model.predict(images)
    finally:
        model.features.engine = engine


def assert_same(fast, eager):
    np.testing.assert_allclose([p.score for p in fast], [p.score for p in eager], rtol=1e-4, atol=1e-4)
    for a, b in zip(fast, eager, strict=True):
        np.testing.assert_allclose(a.anomaly_map, b.anomaly_map, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "make",
    [
        # float32 search: the int8 one (the default) may pick another near-tie entry; tests/ml/test_int8_search.py
        lambda: PatchCore(image_size=SIZE, coreset_ratio=0.2, min_bank_size=16, search_precision="float32"),
        lambda: GaussianBaseline(image_size=SIZE, grid=4, reduced_channels=16, pretrained=True),
    ],
    ids=["patchcore", "gaussian"],
)
def test_the_graph_predicts_what_pytorch_predicts_and_follows_a_refit(make, parts, tmp_path):
    train, held_out = parts
    model = make()
    model.fit(train)
    fast = model.predict(held_out, batch_size=4)  # batches of 4 then 2: the graph's batch axis is free
    assert model.runtime.session is not None
    assert_same(fast, eager_predict(model, held_out))
    # fitted again on other images: the graph must not keep the old bank or statistics
    model.fit(train[3:] + [Sample(image=image) for image in held_out[:3]])
    assert model.runtime.session is None
    refit = model.predict(held_out)
    assert_same(refit, eager_predict(model, held_out))
    assert not np.allclose([p.score for p in refit], [p.score for p in fast])
    # loaded elsewhere: its own graph, the same answers
    model.save(tmp_path)
    loaded = type(model).load(tmp_path)
    assert_same(loaded.predict(held_out), refit)


def test_the_search_is_split_to_bound_the_graphs_memory(parts, monkeypatch):
    import ml.patchcore

    train, held_out = parts
    model = PatchCore(image_size=SIZE, coreset_ratio=0.2, min_bank_size=16, search_precision="float32")
    model.fit(train)
    whole = model.predict(held_out, batch_size=6)
    # room for one image's search at a time: six graph runs of one image each, the same answers
    _, h, w = model.config.feature_shape
    monkeypatch.setattr(ml.patchcore, "GRAPH_SEARCH_BYTES", h * w * len(model.memory_bank) * 4)
    assert_same(model.predict(held_out, batch_size=6), whole)
