"""The output watermark and provenance text (sfsr/watermark/).

Images: procedural faces from sfsr.synth (flat colours, hard edges), upscaled from 32 px the way
the demo's outputs are, and crops of scikit-image's public-domain photos (textures, gradients).
The 100-image rates and the 1,000-image false-positive count are bench/watermark.py's.
"""

from __future__ import annotations

import io
import math

import cv2
import numpy as np
import pytest
from PIL import Image

from sfsr import c2pa_sign
from sfsr import watermark as wm
from sfsr.synth import sample_dataset
from sfsr.watermark import tile


def _photos() -> list[np.ndarray]:
    import skimage.data as data

    return [np.ascontiguousarray(getattr(data, n)()[:, :, :3]) for n in ("astronaut", "coffee", "chelsea", "rocket")]


def corpus(n: int, seed: int = 0) -> list[np.ndarray]:
    """n images of >= 256 x 256 pixels: half 32 px synthetic faces upscaled, half photo crops."""
    rng = np.random.default_rng(seed)
    faces = [wm.upscale_for_watermark(img) for _, img, _ in sample_dataset((n + 1) // 2, seed=seed, size=32)]
    photos, crops = _photos(), []
    while len(crops) < n - len(faces):
        p = photos[len(crops) % len(photos)]
        h, w = int(rng.integers(256, min(p.shape[0], 360) + 1)), int(rng.integers(256, min(p.shape[1], 400) + 1))
        y, x = int(rng.integers(0, p.shape[0] - h + 1)), int(rng.integers(0, p.shape[1] - w + 1))
        crops.append(np.ascontiguousarray(p[y : y + h, x : x + w]))
    return faces + crops


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def half(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (round(w / 2), round(h / 2)), interpolation=cv2.INTER_AREA)


def crop_half_area(image: np.ndarray, corner: bool = False) -> np.ndarray:
    h, w = image.shape[:2]
    ch, cw = round(h / 2**0.5), round(w / 2**0.5)
    y, x = (h - ch, w - cw) if corner else ((h - ch) // 2, (w - cw) // 2)
    return image[y : y + ch, x : x + cw]


TRANSFORMS = {
    "png": lambda im: im,
    "jpeg75": jpeg,
    "resize0.5": half,
    "crop_centre": crop_half_area,
    "crop_corner": lambda im: crop_half_area(im, corner=True),
    "all_three": lambda im: jpeg(crop_half_area(half(im), corner=True)),
}


@pytest.fixture(scope="module")
def marked() -> list[tuple[np.ndarray, np.ndarray]]:
    return [(img, wm.embed(img)) for img in corpus(4, seed=1)]


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_marked_images_survive_each_edit(marked, name) -> None:
    found = [wm.detect(TRANSFORMS[name](m)) for _, m in marked]
    assert all(d.marked for d in found), [round(d.statistic, 2) for d in found]
    if name.startswith("resize") or name == "all_three":  # found at the scale it was resized to
        assert all(abs(d.scale - 0.5) < 0.02 for d in found), [d.scale for d in found]


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_unmarked_images_are_not_flagged(marked, name) -> None:
    found = [wm.detect(TRANSFORMS[name](img)) for img, _ in marked]
    assert not any(d.marked for d in found)
    assert max(d.statistic for d in found) < wm.THRESHOLD - 1.5  # well below, not just below


def test_threshold_meets_the_stated_bound() -> None:
    # Bonferroni over every shift and scale searched, Hoeffding per test (tile.py's docstring)
    assert tile.N_TESTS == tile.TILE**2 * len(tile.SCALES)
    assert tile.N_TESTS * math.exp(-(wm.THRESHOLD**2) / 2) <= wm.FP_BOUND * (1 + 1e-9)
    assert min(tile.SCALES) <= 0.25 and max(tile.SCALES) >= 1.25


def test_null_statistic_is_unit_variance_and_sub_gaussian() -> None:
    # Over random keys, every shift's z on a fixed unmarked image has mean 0, variance 1 and a
    # tail below exp(-t^2/2); 50 natural-ish images (photo crops, JPEG copies, synthetic faces)
    rng = np.random.default_rng(7)
    images = corpus(24, seed=3) + [jpeg(im, 60) for im in corpus(16, seed=4)]
    images += [img for _, img, _ in sample_dataset(10, seed=5, size=128)]
    zs, maxima = [], []
    for k, img in enumerate(images):
        res = tile.residual(img)
        scale = float(rng.choice(tile.SCALES))
        key = rng.bytes(8)
        z = tile.z_map(res, key, scale)
        zs.append(z.ravel())
        if k % 10 == 0:
            maxima.append(tile.detect_tile(img, key).statistic)
    z = np.concatenate(zs)  # 50 x 4096 values
    assert abs(z.mean()) < 0.05 and 0.9 < z.var() < 1.1, (z.mean(), z.var())
    for t in (2.0, 3.0, 3.5):
        assert np.mean(z >= t) <= math.exp(-(t**2) / 2), t
    assert max(maxima) < wm.THRESHOLD


def test_embedding_is_invisible_enough_and_fast() -> None:
    for img in corpus(4, seed=3):
        mark = wm.embed(img)
        assert mark.shape == img.shape and mark.dtype == np.uint8
        mse = float(np.mean((mark.astype(np.float64) - img.astype(np.float64)) ** 2))
        assert 36.0 < 10 * np.log10(255.0**2 / mse) < 50.0  # changed, but not visibly


def test_small_images_are_upscaled_before_marking() -> None:
    _, crop, _ = next(sample_dataset(1, seed=4, size=32))
    mark = wm.embed(crop)
    assert mark.shape[0] == mark.shape[1] == 256  # square in, square out, aspect kept
    assert wm.detect(jpeg(half(mark))).marked


def test_wide_images_keep_their_aspect_ratio() -> None:
    up = wm.upscale_for_watermark(np.zeros((40, 160, 3), np.uint8))
    assert up.shape[0] * up.shape[1] >= wm.MIN_PIXELS
    assert abs(up.shape[1] / up.shape[0] - 4.0) < 0.05


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((300, 300, 3), np.float32), "uint8 RGB"),
        (np.zeros((300, 300), np.uint8), "uint8 RGB"),
        (np.zeros((300, 300, 4), np.uint8), "uint8 RGB"),
        (np.zeros((4, 300, 3), np.uint8), "too small to mark"),
    ],
)
def test_bad_input_to_embed_is_refused_by_name(bad, match) -> None:
    with pytest.raises(ValueError, match=match):
        wm.embed(bad)


def test_an_image_too_small_to_decide_is_refused_not_guessed() -> None:
    with pytest.raises(ValueError, match="too small to decide.*48 px"):
        wm.detect(np.zeros((40, 300, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        wm.detect(np.zeros((300, 300, 3), np.int64))


def test_a_different_payload_is_not_ours() -> None:
    img = corpus(2, seed=5)[1]
    other_key = bytes(b ^ 0xFF for b in wm.PAYLOAD)
    other = wm.embed(img, payload=other_key)
    assert not wm.detect(other).marked
    assert wm.detect(other, payload=other_key).marked


def test_provenance_text_round_trips_through_png() -> None:
    meta = wm.provenance("cpu-demo", "0.1.0", "req-123", route="swap")
    data = wm.mark_and_encode(corpus(2, seed=6)[0], meta)
    text = wm.read_png_text(data)
    assert text["Description"] == wm.GENERATED_STATEMENT
    assert text["sfsr:model"] == "cpu-demo" and text["sfsr:model_version"] == "0.1.0"
    assert text["sfsr:request_id"] == "req-123" and text["sfsr:route"] == "swap"
    assert text["DigitalSourceType"].endswith("trainedAlgorithmicMedia")
    assert wm.read_png_text(b"not a png") == {}


def test_cli_reports_both_layers_and_exit_codes(tmp_path, capsys) -> None:
    img = corpus(2, seed=7)[1]
    certs = tmp_path / "c2pa"
    clean, marked = tmp_path / "clean.png", tmp_path / "marked.png"
    Image.fromarray(img).save(clean)
    args = ["embed", str(clean), str(marked), "--request-id", "r1", "--c2pa-cert-dir", str(certs)]
    assert wm.main(args) == 0
    assert wm.main(["detect", str(marked), "--trust-anchors", str(certs / c2pa_sign.ANCHORS_FILE)]) == 0
    out = capsys.readouterr().out
    assert "watermark DETECTED" in out and "sfsr:request_id: r1" in out
    assert "C2PA: manifest valid" in out and ", trusted;" in out
    # re-encoded as JPEG: the manifest and text are gone, the watermark stays
    Image.fromarray(np.asarray(Image.open(marked).convert("RGB"))).save(tmp_path / "shared.jpg", quality=75)
    assert wm.main(["detect", str(tmp_path / "shared.jpg"), "--json"]) == 0
    import json

    rec = json.loads(capsys.readouterr().out)
    assert rec["watermark"]["marked"] and not rec["c2pa"]["present"] and rec["png_text"] == {}
    assert wm.main(["detect", str(clean)]) == 1
    assert "not detected" in capsys.readouterr().out
    (tmp_path / "notes.txt").write_text("hello")
    assert wm.main(["detect", str(tmp_path / "notes.txt")]) == 2
