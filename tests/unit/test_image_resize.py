"""resize_square / resize_square_batch: the one resize of square crops (shrink, enlarge, no-op, batch)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sfsr.io.images import resize_square, resize_square_batch


def _img(size: int, channels: int | None = 3, seed: int = 0) -> np.ndarray:
    shape = (size, size) if channels is None else (size, size, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_shrinking_by_an_integer_factor_is_the_block_mean():
    img = _img(8, seed=1)
    out = resize_square(img, 4)
    blocks = img.reshape(4, 2, 4, 2, 3).astype(np.float64).mean(axis=(1, 3))  # INTER_AREA averages 2x2 blocks
    assert out.shape == (4, 4, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(np.float64) - blocks).max() <= 0.5 + 1e-9  # rounding only


@pytest.mark.parametrize("enlarge", [cv2.INTER_LINEAR, cv2.INTER_CUBIC, cv2.INTER_AREA])
def test_shrinking_ignores_the_enlarge_flag(enlarge):
    img = _img(17, seed=2)
    np.testing.assert_array_equal(resize_square(img, 7, enlarge=enlarge), resize_square(img, 7))


def test_enlarging_uses_the_given_interpolation():
    img = _img(6, seed=3)
    linear = resize_square(img, 16)
    cubic = resize_square(img, 16, enlarge=cv2.INTER_CUBIC)
    np.testing.assert_array_equal(linear, cv2.resize(img, (16, 16), interpolation=cv2.INTER_LINEAR))
    np.testing.assert_array_equal(cubic, cv2.resize(img, (16, 16), interpolation=cv2.INTER_CUBIC))
    assert not np.array_equal(linear, cubic)  # the flag matters: callers that differ keep their choice


def test_same_size_returns_the_input_itself():
    img, batch = _img(12), np.stack([_img(12, seed=s) for s in range(3)])
    assert resize_square(img, 12) is img
    assert resize_square_batch(batch, 12) is batch


def test_batch_equals_each_image_alone_and_keeps_masks_2d():
    batch = np.stack([_img(10, seed=s) for s in range(4)])  # (4, 10, 10, 3)
    for size in (5, 23):
        out = resize_square_batch(batch, size, enlarge=cv2.INTER_CUBIC)
        assert out.shape == (4, size, size, 3)
        for i in range(4):
            np.testing.assert_array_equal(out[i], resize_square(batch[i], size, enlarge=cv2.INTER_CUBIC))
    masks = (np.stack([_img(10, None, seed=s) for s in range(2)]) > 127).astype(np.uint8) * 255  # (2, 10, 10)
    assert resize_square_batch(masks, 4).shape == (2, 4, 4)
