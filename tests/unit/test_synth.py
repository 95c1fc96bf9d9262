"""Procedural faces: determinism, sizes, masks, identity and expression distinctness, splits."""

from __future__ import annotations

import itertools
import json

import cv2
import numpy as np
import pytest

from sfsr.synth.background import render_background
from sfsr.synth.dataset import (
    draw_sample,
    expression_region,
    held_out_family,
    render_batch,
    sample_dataset,
)
from sfsr.synth.factors import (
    EXPRESSION_FACTORS,
    EXPRESSION_HIGH,
    EXPRESSION_LOW,
    FAMILIES,
    NEUTRAL_EXPRESSION,
    Pose,
    SynthSample,
    family_prototype,
    identity_params,
    make_sample,
    synth_params_json,
)
from sfsr.synth.render import render


def _neutral(identity: int, bg: int = 7, pose: Pose | None = None) -> SynthSample:
    return make_sample(identity, NEUTRAL_EXPRESSION, pose, bg)


def test_render_is_deterministic_and_seed_sensitive():
    s = make_sample(3, family_prototype("joy", 0.7), Pose(5.0, -3.0, 4.0), 11)
    a, ma = render(s, 64)
    b, mb = render(s, 64)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    c, _ = render(make_sample(3, family_prototype("joy", 0.7), Pose(5.0, -3.0, 4.0), 12), 64)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5.0  # another background


def test_dataset_is_deterministic_per_index():
    first = list(sample_dataset(6, seed=5, n_identities=50, size=32, split="train"))
    again = list(sample_dataset(6, seed=5, n_identities=50, size=32, split="train"))
    other = list(sample_dataset(6, seed=6, n_identities=50, size=32, split="train"))
    for (s1, i1, m1), (s2, i2, m2) in zip(first, again):
        assert s1 == s2 and np.array_equal(i1, i2) and np.array_equal(m1, m2)
    assert [s for s, _, _ in first] != [s for s, _, _ in other]
    # sample k depends only on (seed, split, k): a shard starting at 3 reproduces it
    assert draw_sample(3, 5, 50, "train") == first[3][0]


@pytest.mark.parametrize("size", [32, 48, 64, 96, 128, 200, 256])
def test_sizes_shapes_and_binary_mask(size):
    img, mask = render(make_sample(17, family_prototype("fear", 1.0), Pose(8, 4, -6), 3), size)
    assert img.shape == (size, size, 3) and img.dtype == np.uint8
    assert mask.shape == (size, size) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 255}
    assert 0.3 < (mask > 0).mean() < 0.85


@pytest.mark.parametrize("size", [16, 31, 257, 1024])
def test_size_out_of_range_raises(size):
    with pytest.raises(ValueError, match="size"):
        render(_neutral(0), size)


def test_same_scene_at_every_size():
    s = make_sample(42, family_prototype("surprise", 1.0), Pose(-7, 3, 5), 99)
    small, _ = render(s, 32)
    big, _ = render(s, 256)
    down = cv2.resize(big, (32, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(small.astype(int) - down.astype(int)).mean() < 6.0


def test_mask_covers_face_and_not_corners():
    for sample, _img, mask in sample_dataset(300, seed=1, n_identities=200, size=32, split="all"):
        assert mask[[0, 0, -1, -1], [0, -1, 0, -1]].max() == 0, sample
        # the head centre (between the eyes and the mouth) is always inside the mask
        assert mask[14:20, 13:19].min() == 255, sample


def test_pixels_outside_mask_are_background():
    size = 64
    for ident in (0, 5, 7, 8):  # bald, long hair, afro, spiky
        s = make_sample(ident, family_prototype("anger", 1.0), Pose(12, -9, 14), 1234 + ident)
        img, mask = render(s, size)
        bg = render_background(s.background_seed, size * 4).clip(0, 255).astype(np.uint8)
        bg = cv2.resize(bg, (size, size), interpolation=cv2.INTER_AREA)
        outside = cv2.dilate(mask, np.ones((3, 3), np.uint8)) == 0
        assert outside.mean() > 0.2
        diff = np.abs(img.astype(int) - bg.astype(int))[outside]
        assert diff.max() <= 3, f"identity {ident}: face pixels leak outside the mask"


def test_identity_params_deterministic_and_in_range():
    assert identity_params(123) == identity_params(123)
    p = identity_params(123)
    assert 0.86 <= p.face_width <= 1.0 and 0.19 <= p.eye_size <= 0.26
    with pytest.raises(ValueError, match="negative"):
        identity_params(-1)


def test_first_280_identities_differ_in_two_major_attributes():
    keys = [(p.skin_tone, p.hair_colour, p.hair_style, p.eye_colour) for p in map(identity_params, range(280))]
    for a, b in itertools.combinations(keys, 2):
        assert sum(x != y for x, y in zip(a, b)) >= 2


def test_distinct_identities_differ_in_pixels():
    # Same background, pose and expression: only the identity changes.
    imgs = np.stack([render(_neutral(i), 32)[0] for i in range(200)]).astype(np.float32)
    flat = imgs.reshape(200, -1)
    sq = (flat**2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T  # (200, 200) squared L2
    rms = np.sqrt(np.clip(d2, 0, None) / flat.shape[1])
    np.fill_diagonal(rms, np.inf)
    assert rms.min() > 10.0, f"closest identities differ by only {rms.min():.1f} RMS grey levels"


def test_family_prototypes():
    for fam in FAMILIES:
        assert np.allclose(family_prototype(fam, 0.0), NEUTRAL_EXPRESSION)
        apex = family_prototype(fam, 1.0)
        assert apex.dtype == np.float32 and apex.shape == (len(EXPRESSION_FACTORS),)
        assert np.all(apex >= EXPRESSION_LOW) and np.all(apex <= EXPRESSION_HIGH)
        assert np.allclose(family_prototype(fam, 0.5), 0.5 * (apex + NEUTRAL_EXPRESSION))
        assert expression_region(apex) == FAMILIES.index(fam)
    for a, b in itertools.combinations(FAMILIES, 2):
        d = np.abs(family_prototype(a, 1.0) - family_prototype(b, 1.0))
        assert np.linalg.norm(d) > 0.8 and (d >= 0.3).sum() >= 2, (a, b)
    with pytest.raises(ValueError, match="family"):
        family_prototype("boredom", 0.5)
    with pytest.raises(ValueError, match="intensity"):
        family_prototype("joy", 1.5)


def test_family_prototypes_render_distinctly():
    size = 64
    faces = []
    for fam in FAMILIES:
        img, mask = render(make_sample(10, family_prototype(fam, 1.0), None, 3), size)
        faces.append(img.astype(np.float32))
    inner = np.zeros((size, size), bool)
    inner[16:56, 16:48] = True  # brows to mouth
    for (i, a), (j, b) in itertools.combinations(enumerate(faces), 2):
        diff = np.abs(a - b)[inner].mean()
        assert diff > 4.0, f"{FAMILIES[i]} vs {FAMILIES[j]}: only {diff:.1f} grey levels apart"


def test_split_scheme_holds_out_identity_expression_combinations():
    train = [draw_sample(k, 0, 40, "train") for k in range(400)]
    test = [draw_sample(k, 0, 40, "test") for k in range(400)]
    for s in train:
        assert FAMILIES[expression_region(s.expression_array)] != held_out_family(s.identity_id)
        assert s.background_seed < 2**30
    for s in test:
        assert FAMILIES[expression_region(s.expression_array)] == held_out_family(s.identity_id)
        assert 2**30 <= s.background_seed < 2**31
    # every identity is seen in both splits and all six families occur in each
    assert {s.identity_id for s in train} == {s.identity_id for s in test} == set(range(40))
    for split in (train, test):
        assert {expression_region(s.expression_array) for s in split} == set(range(6))
    for s in train + test:
        e = s.expression_array
        assert np.all(e >= EXPRESSION_LOW) and np.all(e <= EXPRESSION_HIGH)
        assert max(abs(s.pose.yaw), abs(s.pose.pitch), abs(s.pose.roll)) <= 15.0
    with pytest.raises(ValueError, match="split"):
        draw_sample(0, 0, 40, "validation")


def test_render_batch_arrays():
    images, masks, ids, exprs = render_batch(5, seed=2, n_identities=10, size=32, split="test")
    assert images.shape == (5, 32, 32, 3) and masks.shape == (5, 32, 32)
    assert ids.dtype == np.int64 and exprs.shape == (5, len(EXPRESSION_FACTORS))


def test_synth_params_json_round_trip():
    s = make_sample(77, family_prototype("sadness", 0.6), Pose(3.5, -2.0, 1.25), 4242)
    payload = json.loads(synth_params_json(s))
    assert payload["identity_id"] == 77 and payload["background_seed"] == 4242
    assert list(payload["expression"]) == sorted(EXPRESSION_FACTORS)
    assert payload["identity"]["hair_style_name"] == identity_params(77).style
    rebuilt = make_sample(
        payload["identity_id"],
        np.array([payload["expression"][n] for n in EXPRESSION_FACTORS], np.float32),
        Pose(**payload["pose"]),
        payload["background_seed"],
    )
    a, _ = render(s, 48)
    b, _ = render(rebuilt, 48)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_sample_validates_expression_length():
    with pytest.raises(ValueError, match="expression"):
        SynthSample(1, (0.0, 0.5))
    clipped = make_sample(1, np.full(len(EXPRESSION_FACTORS), 5.0, np.float32))
    assert np.allclose(clipped.expression_array, EXPRESSION_HIGH)
