"""decode_image against the generated bad-image set, plus limits, fuzzing and the PNG helpers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from sfsr.io.images import REASONS, ImageError, ImageLimits, decode_image, decode_png, encode_png
from tests.fixtures.bad_images import BLOCK, bad_image_bytes, base_rgb, write_bad_images

CASES = bad_image_bytes()


def _corner(img: np.ndarray, where: str) -> np.ndarray:
    """Mean colour of the BLOCK/2-square just inside a corner."""
    h = BLOCK // 2
    rows = slice(0, h) if where.startswith("top") else slice(-h, None)
    cols = slice(0, h) if where.endswith("left") else slice(-h, None)
    return img[rows, cols].reshape(-1, 3).mean(axis=0)


def _is_red(c: np.ndarray) -> bool:
    return c[0] > 220 and c[1] < 40 and c[2] < 40


def test_fixture_covers_the_required_cases(tmp_path):
    expected = write_bad_images(tmp_path)
    assert set(expected) == set(CASES)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(CASES)
    required = {
        "empty.jpg": "empty",
        "truncated.jpg": "truncated",
        "text.jpg": "not_an_image",
        "huge_header.png": "too_many_pixels",
        "one_pixel.png": "too_small",
        "animated.gif": "animated",
        "cmyk.jpg": None,
        "grey16.png": None,
        "rgba.png": None,
        "exif_rotated.jpg": None,
        "photo.webp": None,
    }
    assert {name: expected[name].reason for name in required} == required
    assert all(e.reason is None or e.reason in REASONS for e in expected.values())


@pytest.mark.parametrize("name", sorted(CASES))
def test_each_case_has_its_expected_outcome(name):
    data, exp = CASES[name]
    if exp.reason is not None:
        with pytest.raises(ImageError) as info:
            decode_image(data, source=name)
        err = info.value
        assert err.reason == exp.reason and err.source == name
        assert str(err).startswith(f"{name}: ")  # names the input ...
        assert "; " in str(err)  # ... and says what to do
        return
    img = decode_image(data, source=name)
    assert img.dtype == np.uint8 and img.shape == exp.shape and img.flags["C_CONTIGUOUS"]
    if exp.red_corner:
        reds = [w for w in ("top_left", "top_right", "bottom_left", "bottom_right") if _is_red(_corner(img, w))]
        assert reds == [exp.red_corner]


def test_exif_rotation_moves_block_to_top_right():
    img = decode_image(CASES["exif_rotated.jpg"][0])
    assert img.shape == (64, 48, 3)  # stored 64 wide x 48 high, shown rotated 90 degrees clockwise
    assert _is_red(img[:BLOCK, -BLOCK:].reshape(-1, 3).mean(0))
    assert not _is_red(img[:BLOCK, :BLOCK].reshape(-1, 3).mean(0))


def test_rgba_transparent_pixels_become_white():
    img = decode_image(CASES["rgba.png"][0])
    assert (img[:, 32:] == 255).all()  # right half was alpha 0
    np.testing.assert_array_equal(img[:, :32], base_rgb()[:, :32])  # opaque half unchanged


def test_16bit_grey_is_scaled_not_clipped():
    img = decode_image(CASES["grey16.png"][0])
    ramp = img[-1, :, 0].astype(int)  # bottom row: 0..65535 left to right
    assert ramp[0] == 0 and ramp[-1] == 255 and (np.diff(ramp) >= 0).all()
    assert 120 <= ramp[32] <= 135  # middle of the ramp lands mid-grey, not saturated
    assert (img[:BLOCK, :BLOCK] == 255).all()
    assert (img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all()


def test_16bit_rgb_and_lossless_webp_match_the_8bit_source():
    np.testing.assert_array_equal(decode_image(CASES["rgb16.png"][0]), base_rgb())
    np.testing.assert_array_equal(decode_image(CASES["photo.webp"][0]), base_rgb())
    np.testing.assert_array_equal(decode_image(CASES["plain.png"][0]), base_rgb())


def test_cmyk_colours_survive():
    img = decode_image(CASES["cmyk.jpg"][0]).astype(int)
    assert np.abs(img[4:12, 4:12] - [255, 0, 0]).max() <= 12
    assert np.abs(img[30:40, 40:60] - 128).max() <= 12


def test_limits_are_configurable():
    data = CASES["plain.png"][0]
    with pytest.raises(ImageError) as e:
        decode_image(data, limits=ImageLimits(max_bytes=len(data) - 1))
    assert e.value.reason == "too_many_bytes"
    with pytest.raises(ImageError) as e:
        decode_image(data, limits=ImageLimits(max_pixels=64 * 48 - 1))
    assert e.value.reason == "too_many_pixels"
    with pytest.raises(ImageError) as e:
        decode_image(data, limits=ImageLimits(min_side=49))
    assert e.value.reason == "too_small"
    assert decode_image(data, limits=ImageLimits(min_side=48)).shape == (48, 64, 3)
    with pytest.raises(ImageError) as e:
        decode_image(data, limits=ImageLimits(formats=("JPEG",)))
    assert e.value.reason == "unsupported_format"


def test_non_bytes_is_a_type_error():
    with pytest.raises(TypeError, match="takes bytes"):
        decode_image("photo.jpg")  # type: ignore[arg-type]


def test_image_error_pickles_with_its_fields():
    err = pickle.loads(pickle.dumps(ImageError("truncated", "s3://b/x.jpg", "ends early")))
    assert (err.reason, err.source, err.detail) == ("truncated", "s3://b/x.jpg", "ends early")
    assert isinstance(err, ValueError) and str(err).startswith("s3://b/x.jpg: ends early [truncated]")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # PIL's warning for mangled EXIF, expected here
@pytest.mark.parametrize("name", ["plain.jpg", "plain.png", "photo.webp", "exif_rotated.jpg"])
def test_random_corruption_never_escapes_as_another_exception(name):
    """Flip bytes and cut files at random: the only outcomes are an array or an ImageError."""
    rng = np.random.default_rng(1234)
    good = CASES[name][0]
    outcomes = {"ok": 0, "refused": 0}
    for _ in range(150):
        data = bytearray(good)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 8))):
            data[pos] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(0, len(data)))]
        try:
            img = decode_image(bytes(data), source="fuzz")
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            outcomes["ok"] += 1
        except ImageError as e:
            assert e.reason in REASONS
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0  # the corruption did reach the checks


def test_png_roundtrip_rgb_and_mask():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 40, 3), dtype=np.uint8)
    mask = (np.arange(32 * 40).reshape(32, 40) % 256).astype(np.uint8)
    np.testing.assert_array_equal(decode_png(encode_png(rgb)), rgb)
    out = decode_png(encode_png(mask))
    assert out.shape == (32, 40)
    np.testing.assert_array_equal(out, mask)
    np.testing.assert_array_equal(decode_png(encode_png(mask[:, :, None])), mask)
    assert encode_png(rgb, compress_level=9) != encode_png(rgb, compress_level=0)


def test_png_helpers_refuse_wrong_inputs():
    with pytest.raises(ValueError, match="uint8"):
        encode_png(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError, match="shape"):
        encode_png(np.zeros((8, 8, 4), np.uint8))
    with pytest.raises(ImageError) as e:
        decode_png(CASES["rgba.png"][0])
    assert e.value.reason == "unsupported_mode"
    with pytest.raises(ImageError) as e:
        decode_png(CASES["plain.jpg"][0])
    assert e.value.reason == "not_an_image"
