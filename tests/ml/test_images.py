import numpy as np
import pytest
import torch
from PIL import Image

from ml.backbones import Preprocessing
from ml.images import read_image, resize_map, to_rgb, to_tensor


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
