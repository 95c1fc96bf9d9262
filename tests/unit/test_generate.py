"""sfsr.generate.Generator on a tiny random model with stand-in encoders (no Ray, seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sfsr.expressions import UnknownExpressionError
from sfsr.generate import CARD_NAME, ConditionEncoders, Generator
from sfsr.model import make_model
from sfsr.model.training import face_region
from sfsr.synth.conditioning import expression_targets

S = 16  # the tiny preset's resolution


def _encoders() -> ConditionEncoders:
    rng = np.random.default_rng(0)
    proj_id = rng.normal(size=(3 * 8 * 8, 128)).astype(np.float32)
    proj_ex = rng.normal(size=(3 * 8 * 8, 7)).astype(np.float32) * 0.01

    def small(images):
        import cv2

        return (
            np.stack([cv2.resize(i, (8, 8), interpolation=cv2.INTER_AREA) for i in images]).reshape(len(images), -1)
            / 255.0
        )

    def identity(images):
        v = small(images) @ proj_id
        return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)

    return ConditionEncoders(
        "test-identity",
        "test-expression",
        identity,
        lambda images: (small(images) @ proj_ex).astype(np.float32),
        expression_targets(),
    )


@pytest.fixture(scope="module")
def gen(tmp_path_factory) -> Generator:
    model = make_model("tiny", seed=0, identity_encoder="test-identity", expression_encoder="test-expression")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a random but non-trivial network (zero-initialised paths too)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    folder = tmp_path_factory.mktemp("gen") / "tiny"
    model.save_pretrained(folder)
    (folder / CARD_NAME).write_text(json.dumps({"name": "tiny-test", "sampling": {"steps": 4}}))
    return Generator.from_pretrained(str(folder), encoders=_encoders())


def _faces(n, size=S, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _masks(n, size=S):
    m = np.zeros((n, size, size), np.uint8)
    m[:, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    return m


def test_info_and_card(gen):
    info = gen.info
    assert info["model"] == "tiny-test" and info["preset"] == "tiny" and info["resolution"] == S
    assert info["conditioning"]["identity"] == "test-identity" and info["sampling_defaults"]["steps"] == 4


def test_swap_shapes_and_exact_background(gen):
    src, tgt, masks = _faces(3, seed=1), _faces(3, seed=2), _masks(3)
    out = gen.swap(src, tgt, masks=masks, seeds=[1, 2, 3])
    assert out.shape == (3, S, S, 3) and out.dtype == np.uint8
    region = (
        face_region(torch.from_numpy(masks[:, None] / 255.0).float(), gen.model.config.mask_dilate)[:, 0].numpy() > 0
    )
    assert np.array_equal(out[~region], tgt[~region])  # outside the generated region: untouched
    assert not np.array_equal(out[region], tgt[region])


def test_any_crop_size_and_lists(gen):
    out = gen.swap([f for f in _faces(2, 40, seed=3)], _faces(2, 24, seed=4), masks=_masks(2, 24), seeds=[5, 6])
    assert out.shape == (2, S, S, 3)
    one = gen.reenact(_faces(1, 64)[0], words=["joy"], seeds=[1])  # one (H, W, 3) image, template mask
    assert one.shape == (1, S, S, 3)


def test_seeds_deterministic_and_batch_independent(gen):
    src, tgt, masks = _faces(3, seed=5), _faces(3, seed=6), _masks(3)
    a = gen.swap(src, tgt, masks=masks, seeds=[11, 12, 13])
    b = gen.swap(src[1:2], tgt[1:2], masks=masks[1:2], seeds=[12])
    assert np.abs(a[1:2].astype(int) - b.astype(int)).max() <= 1  # float round-off of batched kernels
    c = gen.swap(src, tgt, masks=masks)  # default seeds derive from the inputs
    d = gen.swap(src[::-1], tgt[::-1], masks=masks[::-1])
    assert np.abs(c[::-1].astype(int) - d.astype(int)).max() <= 1
    e = gen.swap(src, tgt, masks=masks, seeds=[1, 2, 3])
    assert not np.array_equal(a, e)


def test_zero_guidance_is_unconditional(gen):
    tgt, masks = _faces(2, seed=7), _masks(2)
    kw = dict(masks=masks, seeds=[3, 4], guidance_identity=0.0, guidance_expression=0.0)
    a = gen.generate(_faces(2, seed=8), expression=["joy", "rage"], background_images=tgt, **kw)
    b = gen.generate(_faces(2, seed=9), expression=["sadness", "amazement"], background_images=tgt, **kw)
    assert np.array_equal(a, b)
    c = gen.generate(
        _faces(2, seed=9),
        expression=["sadness", "amazement"],
        background_images=tgt,
        masks=masks,
        seeds=[3, 4],
        guidance_identity=3.0,
        guidance_expression=3.0,
    )
    assert not np.array_equal(a, c)


def test_expression_items_words_images_vectors(gen):
    targets = expression_targets()
    vec = targets.target("joy")
    got = gen.expression_vectors(["joy", vec, _faces(1, 20)[0]])
    assert got.shape == (3, 7) and np.allclose(got[0], vec) and np.allclose(got[1], vec)
    # a word and its vector give the same image
    tgt, masks = _faces(1, seed=10), _masks(1)
    a = gen.generate(_faces(1, seed=11), expression="joy", background_images=tgt, masks=masks, seeds=[1])
    b = gen.generate(_faces(1, seed=11), expression=vec, background_images=tgt, masks=masks, seeds=[1])
    assert np.array_equal(a, b)


def test_clear_errors(gen):
    with pytest.raises(UnknownExpressionError):
        gen.reenact(_faces(1), words=["happpy"])
    with pytest.raises(ValueError, match="exactly one"):
        gen.reenact(_faces(1))
    with pytest.raises(ValueError, match="uint8"):
        gen.swap(_faces(1).astype(np.float32), _faces(1))
    with pytest.raises(ValueError, match="square"):
        gen.swap(_faces(1), np.zeros((1, 16, 20, 3), np.uint8))
    with pytest.raises(ValueError, match="broadcast"):
        gen.swap(_faces(2), _faces(3))
    with pytest.raises(ValueError, match="expression\\[0\\]"):
        gen.generate(_faces(1), expression=[np.zeros(5)], background_images=_faces(1))
    with pytest.raises(TypeError, match="unknown argument"):
        gen.swap(_faces(1), _faces(1), guidance=2.0)
    with pytest.raises(FileNotFoundError, match="config.json"):
        Generator.from_pretrained("/nonexistent/model")


def test_broadcast_one_identity_over_targets(gen):
    out = gen.swap(_faces(1, seed=12), _faces(3, seed=13), masks=_masks(3), seeds=[1, 2, 3])
    assert out.shape == (3, S, S, 3)


def test_pretrained_cpu_demo_folder():
    """The committed cpu-demo model loads with its card and encoders and keeps the background."""
    from pathlib import Path

    import sfsr
    from sfsr.synth.dataset import render_batch

    folder = Path(sfsr.__file__).parent / "model" / "pretrained" / "cpu-demo"
    gen = Generator.from_pretrained(str(folder))
    info = gen.info
    assert info["preset"] == "cpu-demo" and info["resolution"] == 32
    assert info["conditioning"]["identity"] == "synth-judge-identity-32px"
    card = json.loads((folder / CARD_NAME).read_text())
    assert {"command", "seed", "git_commit", "train_minutes", "metrics"} <= set(card)
    assert sum(f.stat().st_size for f in folder.iterdir()) < 20e6  # a few MB, committed with git
    images, masks, _, _ = render_batch(2, seed=5, n_identities=200, size=32, split="test")
    out = gen.swap(images[::-1], images, masks=masks, seeds=[1, 2], steps=4)
    region = (
        face_region(torch.from_numpy(masks[:, None] >= 128).float(), gen.model.config.mask_dilate)[:, 0].numpy() > 0
    )
    assert np.array_equal(out[~region], images[~region])


def test_expression_travel_moves_only_the_expression(gen):
    targets = expression_targets()
    ident, bg, mask = _faces(1, seed=30), _faces(1, seed=31), _masks(1)[0]
    frames = gen.travel(ident, start="contentment", end="rage", frames=5, background_image=bg, mask=mask, seed=9)
    assert frames.shape == (5, S, S, 3) and frames.dtype == np.uint8
    vecs = gen.travel_vectors("contentment", "rage", 5)
    assert np.allclose(vecs[0], targets.target("contentment")) and np.allclose(vecs[-1], targets.target("rage"))
    assert np.allclose(vecs[2], (vecs[0] + vecs[-1]) / 2, atol=1e-6)
    # the ends are exactly what generate gives for those expressions with the same seed
    for i, word in ((0, "contentment"), (-1, "rage")):
        one = gen.generate(ident, expression=word, background_images=bg, masks=mask[None], seeds=[9])
        assert np.abs(one[0].astype(int) - frames[i].astype(int)).max() <= 1
    # the background stays, the face changes, and more between the ends than between neighbours
    region = face_region(torch.from_numpy(mask[None, None].astype(np.float32)), gen.model.config.mask_dilate)
    outside = region[0, 0].numpy() == 0  # (S, S) what is never regenerated
    assert np.array_equal(frames[:, outside], np.repeat(bg, 5, 0)[:, outside])
    step = [np.abs(frames[i + 1].astype(int) - frames[i].astype(int)).mean() for i in range(4)]
    assert np.abs(frames[-1].astype(int) - frames[0].astype(int)).mean() > max(step) > 0
    with pytest.raises(ValueError, match="frames=1"):
        gen.travel_vectors("joy", "rage", 1)
    with pytest.raises(UnknownExpressionError):
        gen.travel_vectors("joy", "not-a-word", 3)
