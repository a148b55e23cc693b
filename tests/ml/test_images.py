import numpy as np
import pytest
import torch
from PIL import Image

from ml.backbones import Preprocessing
from ml.filters import blur_maps, gaussian_kernel
from ml.images import is_gray, read_image, resize_image, resize_map, to_rgb, to_tensor


@pytest.mark.parametrize(
    ("image", "expected_corner"),
    [
        (np.full((4, 5), 200, np.uint8), 200),
        (np.full((4, 5, 1), 200, np.uint8), 200),
        (np.full((4, 5, 4), 200, np.uint8), 200),
        (np.full((4, 5), 65535, np.uint16), 255),
        (np.full((4, 5, 3), 0.5, np.float32), 128),
        (np.ones((4, 5), bool), 255),
    ],
)
def test_to_rgb_gives_uint8_rgb(image, expected_corner):
    rgb = to_rgb(image)
    assert rgb.shape == (4, 5, 3)
    assert rgb.dtype == np.uint8
    assert rgb[0, 0, 0] == expected_corner


def test_to_rgb_rejects_odd_shapes():
    with pytest.raises(ValueError):
        to_rgb(np.zeros((4, 5, 2), np.uint8))


def test_read_image_handles_16_bit_gray(tmp_path):
    # given
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((6, 7), 65535, np.uint16)).save(path)

    # when
    rgb = read_image(path)

    # then
    assert rgb.shape == (6, 7, 3)
    assert rgb.max() == 255


def test_to_tensor_resizes_and_normalises():
    # given
    preprocessing = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    images = [np.full((10, 12), 255, np.uint8), np.zeros((20, 20, 3), np.uint8)]

    # when
    batch = to_tensor(images, preprocessing, (8, 8))

    # then
    assert batch.shape == (2, 3, 8, 8)
    assert torch.allclose(batch[0], torch.ones(3, 8, 8))
    assert torch.allclose(batch[1], -torch.ones(3, 8, 8))


def test_resize_map_keeps_batches():
    assert resize_map(np.ones((3, 4, 4)), (8, 6)).shape == (3, 8, 6)
    assert resize_map(np.ones((4, 4)), (8, 6)).shape == (8, 6)


@pytest.mark.parametrize(("shape", "sigma"), [((2, 320, 320), 4.0), ((2, 17, 40), 4.0), ((1, 64, 48), 1.0)])
def test_blur_by_matrices_equals_padding_and_two_convolutions(shape, sigma):
    # the reference: replicate padding, then a 1-D correlation along each axis
    maps = torch.rand(*shape, generator=torch.Generator().manual_seed(3)) * 30
    kernel = gaussian_kernel(sigma)
    radius = len(kernel) // 2
    padded = torch.nn.functional.pad(maps[:, None], (radius,) * 4, mode="replicate")
    rows = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1))
    expected = torch.nn.functional.conv2d(rows, kernel.view(1, 1, -1, 1))[:, 0]
    torch.testing.assert_close(blur_maps(maps, kernel), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic", "lanczos"])
def test_a_grey_image_resizes_as_one_channel_to_what_rgb_resizing_gives(interpolation):
    # given: a grey texture stored as RGB, and the same texture with one pixel tinted deep inside
    rng = np.random.default_rng(3)
    grey = np.repeat(rng.integers(0, 256, (90, 70, 1), dtype=np.uint8), 3, axis=2)
    tinted = grey.copy()
    tinted[60, 40, 2] ^= 0x55

    # when
    resized = resize_image(grey, (32, 48), interpolation)
    expected = np.asarray(Image.fromarray(grey).resize((48, 32), getattr(Image.Resampling, interpolation.upper())))

    # then: the one-channel path is exact, and a colour pixel anywhere takes the RGB path
    assert is_gray(grey)
    assert not is_gray(tinted)
    assert resized.shape == (32, 48, 3)
    assert np.array_equal(resized, expected)
    assert not np.array_equal(resize_image(tinted, (32, 48), interpolation), resized)
