import numpy as np
import pytest
import torch

from ml.patchcore import PatchCore
from ml.synthetic import make_image
from ml.tiling import (
    PositionStatistics,
    blend_weights,
    cut_tiles,
    downscale,
    standardise,
    standardised_score,
    stitch,
    tile_grid,
    tile_images,
    working_shape,
    working_size_for_defect,
)
from ml.types import Sample


@pytest.mark.parametrize("shape", [(2048, 2448), (320, 320), (321, 1000), (100, 50), (700, 333)])
@pytest.mark.parametrize(("tile", "overlap"), [(320, 32), (256, 0), (96, 80)])
def test_tiles_cover_every_pixel_and_overlap_at_least_as_asked(shape, tile, overlap):
    # when
    grid = tile_grid(shape, tile=tile, overlap=overlap)
    # then: every pixel lies in a tile, no tile leaves the image (unless the image is smaller than one tile)
    covered = np.zeros(shape, dtype=int)
    for y, x in grid.origins:
        assert y >= 0 and x >= 0
        assert y + tile <= max(shape[0], tile) and x + tile <= max(shape[1], tile)
        covered[y : y + tile, x : x + tile] += 1
    assert covered.min() >= 1
    # neighbouring starts are at most tile - overlap apart
    for axis in (0, 1):
        starts = sorted({origin[axis] for origin in grid.origins})
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:], strict=False))


def test_a_constant_map_stitches_to_the_same_constant_without_seams():
    # given: the tiles of a 700 x 333 image, each carrying the same constant map
    grid = tile_grid((700, 333), tile=128, overlap=24)
    tile_maps = torch.full((len(grid), 128, 128), 3.25)
    # when
    stitched = stitch(tile_maps, grid)
    # then
    assert stitched.shape == (700, 333)
    assert torch.allclose(stitched, torch.tensor(3.25), atol=1e-6)


def test_a_smooth_map_cut_into_tiles_and_stitched_comes_back_unchanged():
    # given: a gradient image cut into tiles (tile maps are then views of one global map)
    ys, xs = np.mgrid[:500, :410]
    global_map = (np.sin(ys / 37.0) + xs / 100.0).astype(np.float32)
    grid = tile_grid(global_map.shape, tile=96, overlap=32)
    tile_maps = torch.from_numpy(cut_tiles(global_map[..., None], grid)[..., 0])
    # when
    stitched = stitch(tile_maps, grid)
    # then: the weighted mean of equal values is the value, at every pixel, across every overlap
    assert torch.allclose(stitched, torch.from_numpy(global_map), atol=1e-5)


def test_blend_weights_ramp_down_at_the_edges_but_never_reach_zero():
    weights = blend_weights(64, 16)
    assert weights.min() > 0
    assert weights[32, 32] == 1.0
    assert weights[0, 32] < weights[8, 32] < weights[16, 32]


def test_working_scale_never_enlarges_and_follows_the_smallest_defect():
    assert working_shape((2048, 2448), 1024) == (857, 1024)
    assert working_shape((300, 200), 1024) == (300, 200)
    # no outlined defect: the default; a 24 px defect: half scale keeps it 12 px; a 200 px one: one tile is enough
    assert working_size_for_defect(2448, None, tile=320, default=1024) == 1024
    assert working_size_for_defect(2448, 24, tile=320, default=1024) == 1224
    assert working_size_for_defect(2448, 200, tile=320, default=1024) == 320
    assert working_size_for_defect(2448, 3, tile=320, default=1024) == 2448


def test_downscale_keeps_grey_images_grey_and_matches_the_asked_shape():
    gray = np.repeat(np.random.default_rng(0).integers(0, 255, (400, 600, 1), dtype=np.uint8), 3, axis=2)
    small = downscale(gray, (100, 150))
    assert small.shape == (100, 150, 3)
    assert np.array_equal(small[..., 0], small[..., 2])
    # a flat image stays flat
    assert np.all(downscale(np.full((512, 512, 3), 77, np.uint8), (64, 64)) == 77)


def test_tile_images_knows_which_tiles_belong_to_which_image():
    images = [np.zeros((256, 512, 3), np.uint8), np.zeros((100, 100), np.uint8)]
    tiled = tile_images(images, working_size=512, tile=128, overlap=16)
    ranges = tiled.tile_ranges()
    assert [r.stop - r.start for r in ranges] == [len(g) for g in tiled.grids]
    assert len(tiled.tiles) == ranges[-1].stop
    assert tiled.shapes == [(256, 512), (100, 100)]
    assert tiled.tiles.shape[1:] == (128, 128, 3)


def test_standardising_by_position_lets_a_quiet_region_s_defect_outscore_a_noisy_region_s_normal_peaks():
    # given: good maps whose left half is normally high and noisy (turning marks), the right half low and steady
    rng = np.random.default_rng(0)

    def good_map():
        noisy = 5.0 + rng.normal(0, 1.0, (64, 32))
        quiet = 1.0 + rng.normal(0, 0.05, (64, 32))
        return torch.from_numpy(np.concatenate([noisy, quiet], axis=1)).float()

    statistics = PositionStatistics(stride=8)
    for _ in range(30):
        statistics.add(good_map())
    mean, spread = statistics.finish()
    good = good_map()
    defect = good_map()
    defect[24:40, 40:56] += 1.0  # small against the left half's normal peaks, large against its own region
    # raw, the good map's noisy peaks outscore the defect
    assert standardised_score(good, 8, 1) > standardised_score(defect[:, 32:], 8, 1)
    # when
    good_z, defect_z = standardise(good, mean, spread), standardise(defect, mean, spread)
    # then: statistics at one cell per 8 px; standardised, the defect is the highest score and the map's peak
    assert mean.shape == (8, 8) and spread.min() > 0
    assert standardised_score(defect_z, 8, 2) > 3 * standardised_score(good_z, 8, 2)
    peak = np.unravel_index(int(defect_z.argmax()), defect_z.shape)
    assert 24 <= peak[0] < 40 and 40 <= peak[1] < 56


def test_position_statistics_refuse_maps_of_another_shape():
    statistics = PositionStatistics(stride=4)
    statistics.add(torch.zeros(32, 32))
    with pytest.raises(ValueError):
        statistics.add(torch.zeros(32, 40))


def _tiny_patchcore(**config):
    settings = dict(
        pretrained=False,
        image_size=64,
        layers=(1, 2),
        batch_size=4,
        min_bank_size=16,
        device="cpu",
        rotations=1,
        **config,
    )
    torch.manual_seed(0)  # untrained weights: the same ones whatever ran before (a random draw failed 1 run in 6)
    model = PatchCore(**settings)
    model.features.engine = "torch"  # eager: no ONNX export for a few tiny images
    return model


def test_tiled_patchcore_keeps_its_bank_bounded_and_maps_at_each_images_size():
    # given: 4 good 160 px images, 64 px tiles at full scale (9 tiles each, thousands of patches)
    train = [Sample(image=make_image(seed, size=160, color=False).image) for seed in range(4)]
    model = _tiny_patchcore(tile_working_size=160, tile_overlap=16, max_bank_size=100, max_patches=2000)
    # when
    model.fit(train)
    predictions = model.predict([make_image(99, size=160).image, make_image(98, size=200).image[:150]])
    # then: the bank respects its cap however many tiles were seen; maps have each input's own size
    assert len(model.memory_bank) <= 100
    assert predictions[0].anomaly_map.shape == (160, 160)
    assert predictions[1].anomaly_map.shape == (150, 200)
    assert all(np.isfinite(p.score) and np.isfinite(p.anomaly_map).all() for p in predictions)


def test_tiled_patchcore_finds_a_small_defect_that_a_resize_loses(tmp_path):
    # given: 192 px parts, a few-pixel dark spot on the test part
    rng = np.random.default_rng(0)
    goods = [
        np.clip(128 + rng.normal(0, 6, (192, 192)), 0, 255).astype(np.uint8).repeat(3).reshape(192, 192, 3)
        for _ in range(4)
    ]
    test_good = np.clip(128 + rng.normal(0, 6, (192, 192)), 0, 255).astype(np.uint8).repeat(3).reshape(192, 192, 3)
    defect = test_good.copy()
    defect[120:126, 60:66] = 40
    tiled = _tiny_patchcore(tile_working_size=192, tile_overlap=16, max_bank_size=256, tile_standardise=True)
    tiled.fit([Sample(image=g) for g in goods])
    # when
    good_prediction, defect_prediction = tiled.predict([test_good, defect])
    # then: the defect scores above the good part, and the map peaks on it: within three cells of the stride-8
    # features (their 3 x 3 neighbourhood spans 24 px), where untrained weights put it (off by 2-21 px over seeds 0-9)
    assert defect_prediction.score > good_prediction.score
    peak = np.unravel_index(np.argmax(defect_prediction.anomaly_map), defect_prediction.anomaly_map.shape)
    assert abs(peak[0] - 123) < 24 and abs(peak[1] - 63) < 24
    # and the saved model tiles the same way
    tiled.save(tmp_path / "model")
    loaded = PatchCore.load(tmp_path / "model", device="cpu")
    loaded.features.engine = "torch"
    again = loaded.predict([defect])[0]
    assert loaded.config.tile_working_size == 192
    assert tiled.position_mean.numel() > 0 and torch.equal(loaded.position_spread, tiled.position_spread)
    assert again.score == pytest.approx(defect_prediction.score, rel=1e-3)


def test_tiles_are_searched_eagerly_in_cache_sized_chunks_with_the_one_piece_result(monkeypatch):
    # given: a tiled model (9 tiles of 64 px per 160 px image, 256 patches each) with a 100-entry bank
    import ml.nearest

    train = [Sample(image=make_image(seed, size=160, color=False).image) for seed in range(3)]
    model = _tiny_patchcore(tile_working_size=160, tile_overlap=16, max_bank_size=100, tile_standardise=False)
    model.fit(train)
    batch = model._batch([make_image(99, size=160).image])
    # the whole-model graph searches a tile in one piece: tiles must not go through it
    monkeypatch.setattr(model.runtime, "run", lambda *args, **kwargs: pytest.fail("tiles went through the graph"))
    monkeypatch.setattr(ml.nearest, "CPU_SEARCH_BYTES", 4 * len(model.memory_bank) * 70)
    steps = []
    addmm = torch.addmm
    monkeypatch.setattr(torch, "addmm", lambda *a, **k: steps.append(a[1].shape[0]) or addmm(*a, **k))
    # when
    scores, maps = model._scores_and_maps(batch)
    # then: blocks of at most 70 query rows, and the same scores and maps as searching in one piece
    monkeypatch.setattr(torch, "addmm", addmm)
    assert steps and max(steps) == 70
    monkeypatch.setattr(ml.nearest, "CPU_SEARCH_BYTES", 1 << 40)
    bank = model.memory_bank
    assert ml.nearest.search_rows(len(bank), bank.device, chunk=model.config.search_chunk) == model.config.search_chunk
    whole_scores, whole_maps = model(batch)
    torch.testing.assert_close(scores, whole_scores)
    torch.testing.assert_close(maps, whole_maps)
    assert scores.shape == (9,) and maps.shape == (9, 64, 64)
