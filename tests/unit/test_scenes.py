"""Backgrounds from a text prompt and head placement (sfsr.scenes), without Ray.

A tiny random Stable Diffusion folder (tests/fixtures/text_to_image.py) stands in for SD 1.5: its
images are noise, but loading, sizes, seeding and refusals are the real pipeline's. Placement is
checked geometrically: pasting a red crop through a placed face turns red only inside the asked
head box, and the full library path keeps every scene pixel outside the face exactly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from deployments import compose
from sfsr.scenes import TextToImage, box_from_fractions, check_folder, default_head_box, place_head
from tests.fixtures.text_to_image import write_tiny_pipeline

COMMITTED_MODEL = Path(__file__).resolve().parents[2] / "sfsr" / "model" / "pretrained" / "cpu-demo"


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    return write_tiny_pipeline(tmp_path_factory.mktemp("t2i") / "tiny-sd")


@pytest.fixture(scope="module")
def scenes(tiny_folder: Path) -> TextToImage:
    return TextToImage.from_pretrained(str(tiny_folder))


def test_loads_a_pipeline_folder_and_names_it(scenes: TextToImage, tiny_folder: Path) -> None:
    assert scenes.name == "tiny-sd"
    assert type(scenes.pipeline).__name__ == "StableDiffusionPipeline"
    assert check_folder(tiny_folder) == tiny_folder


@pytest.mark.parametrize("missing", ["model_index.json", "unet/config.json", "tokenizer/tokenizer_config.json"])
def test_a_folder_that_is_not_a_pipeline_is_refused_naming_the_missing_file(
    tiny_folder: Path, tmp_path: Path, missing: str
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_folder, broken)
    (broken / missing).unlink()
    with pytest.raises(FileNotFoundError, match=f"no {missing}; expected a Stable Diffusion folder"):
        TextToImage.from_pretrained(str(broken))
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        TextToImage.from_pretrained(str(tmp_path / "nothing-here"))


def test_a_prompt_gives_a_background_of_the_requested_size_the_same_per_seed(scenes: TextToImage) -> None:
    a = scenes.background("a beach at sunset", seed=3, width=64, height=48, steps=2)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert a.std() > 1.0  # an image, not a constant fill
    assert np.array_equal(a, scenes.background("a beach at sunset", seed=3, width=64, height=48, steps=2))
    other_seed = scenes.background("a beach at sunset", seed=4, width=64, height=48, steps=2)
    other_prompt = scenes.background("a snowy forest", seed=3, width=64, height=48, steps=2)
    assert np.abs(a.astype(int) - other_seed).mean() > 1.0
    assert np.abs(a.astype(int) - other_prompt).mean() > 0.0
    with pytest.raises(ValueError, match="multiples of 8"):
        scenes.background("a beach", seed=1, width=60, height=48, steps=2)
    with pytest.raises(ValueError, match="prompt: empty"):
        scenes.background("  ", seed=1, width=64, height=48, steps=2)


def _painted(scene: np.ndarray, box: tuple[float, ...], crop_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Paste a red crop through the face placed at `box`: (face, mask of the pixels that changed)."""
    face = place_head(scene, box, crop_size)
    red = np.zeros((crop_size, crop_size, 3), np.uint8)
    red[..., 0] = 255
    out = compose.paste_back(scene, red, face.align_matrix, face.mask)
    return face, (out != scene).any(axis=2)


def _inside(changed: np.ndarray, box: tuple[float, ...], crop_size: int) -> tuple[int, int, int, int]:
    """The changed pixels' extent, asserted inside `box` up to one crop pixel (the mask's grain)."""
    ys, xs = np.nonzero(changed)
    x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
    tol = 1 + min(box[2] - box[0], (box[3] - box[1]) * 84 / 108) * (112 / 84) / crop_size  # template ellipse
    assert box[0] - tol <= x1 and x2 <= box[2] + tol and box[1] - tol <= y1 and y2 <= box[3] + tol
    return x1, y1, x2, y2


def test_default_placement_is_centred_in_the_upper_third_a_third_of_the_width_wide() -> None:
    w, h = 480, 360
    box = default_head_box(w, h)
    assert box[2] - box[0] == pytest.approx(w / 3)
    assert ((box[0] + box[2]) / 2, (box[1] + box[3]) / 2) == pytest.approx((w / 2, h / 3))
    _, changed = _painted(np.zeros((h, w, 3), np.uint8), box, 32)
    x1, y1, x2, y2 = _inside(changed, box, 32)
    assert x2 - x1 > 0.8 * (box[2] - box[0])  # and filling most of its width
    ys, xs = np.nonzero(changed)
    assert xs.mean() == pytest.approx(w / 2, abs=3) and ys.mean() == pytest.approx(h / 3, abs=3)


def test_an_explicit_head_box_puts_the_face_there_and_the_crop_shows_it() -> None:
    w, h = 320, 240
    box = box_from_fractions((0.6, 0.5, 0.9, 0.95), w, h)  # lower right, taller than wide
    scene = np.zeros((h, w, 3), np.uint8)
    scene[int(box[1]) : int(box[3]), int(box[0]) : int(box[2])] = (0, 200, 0)  # green where the head goes
    face, changed = _painted(scene, box, 64)
    x1, y1, x2, y2 = _inside(changed, box, 64)
    assert x2 - x1 > 0.8 * (box[2] - box[0])  # the width limits the fit here
    assert face.crop.shape == (64, 64, 3) and face.mask.shape == (64, 64)
    assert (face.crop[face.mask] == (0, 200, 0)).all(axis=1).mean() > 0.95  # the crop is the box's content
    assert np.allclose(face.bbox, box)
    with pytest.raises(ValueError, match="x1 < x2"):
        place_head(scene, (10, 10, 5, 20), 32)
    with pytest.raises(ValueError, match="the head would be 2.0 px wide"):
        place_head(scene, (10, 10, 12, 20), 32)
    smallest = box_from_fractions((0.45, 0.45, 0.55, 0.55), 64, 64)  # the API's smallest box, smallest scene
    assert _painted(np.zeros((64, 64, 3), np.uint8), smallest, 32)[1].any()


def test_identity_word_and_prompt_make_a_portrait(scenes: TextToImage) -> None:
    """The paper's portrait flow with the library: scene from text, the face placed, the committed
    cpu-demo model generating the face region, pasted into the scene."""
    from sfsr.generate import Generator
    from sfsr.synth import NEUTRAL_EXPRESSION, make_sample, render

    gen = Generator.from_pretrained(str(COMMITTED_MODEL))
    identity, _ = render(make_sample(11, NEUTRAL_EXPRESSION, background_seed=1), gen.resolution)
    scene = scenes.background("a beach at sunset", seed=5, width=128, height=96, steps=2)
    face = place_head(scene, default_head_box(128, 96), gen.resolution)
    crop = gen.generate(identity, expression="joy", background_images=face.crop, masks=face.mask, seeds=[1], steps=2)[0]
    portrait = compose.paste_back(scene, crop, face.align_matrix, face.mask)
    assert portrait.shape == scene.shape
    _, region = _painted(scene, default_head_box(128, 96), gen.resolution)
    assert np.array_equal(portrait[~region], scene[~region])  # the scene is kept outside the face
    assert np.abs(portrait[region].astype(int) - scene[region]).mean() > 5  # the face was generated
