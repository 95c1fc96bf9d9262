"""The held-out protocol of issue 4 (sfsr.release.evaluate_synth), without a diffusion model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sfsr.model.training import face_region
from sfsr.release.evaluate_synth import held_out_set, ideal_swaps, progress, psnr_outside, source_of_each
from sfsr.synth.dataset import render_batch
from sfsr.synth.judges import load_judges


@pytest.fixture(scope="module")
def data():
    return held_out_set(32, seed=1)


def test_test_set_is_the_held_out_split_earlier_numbers_were_measured_on(data):
    images, masks, ids, factors = render_batch(32, seed=1, n_identities=200, size=32, split="test")
    assert np.array_equal(data["images"], images) and np.array_equal(data["masks"], masks >= 128)
    assert np.array_equal(data["ids"], ids) and np.allclose(data["factors"], factors)


def test_every_swap_source_is_another_identity(data):
    src = source_of_each(data["ids"])
    assert (data["ids"][src] != data["ids"]).all()


def test_ideal_swaps_reach_the_bar_so_a_shortfall_is_the_models(data):
    judges = load_judges(32)
    src = source_of_each(data["ids"])
    ideal = ideal_swaps(data, src, dilate=1)
    region = face_region(torch.from_numpy(data["masks"][:, None]).float(), 1)[:, 0].numpy() > 0
    assert np.array_equal(ideal[~region], data["images"][~region])  # only the face region changes
    assert np.mean(judges.predict_identity_np(ideal) == data["ids"][src]) >= 0.9
    assert np.mean(judges.predict_identity_np(data["images"]) == data["ids"][src]) == 0  # the unchanged target
    # a faithful swap changes the rim between the true mask and the repainted one: the background
    # score of an ideal swap is finite, and it is the ceiling a model's swap is compared with
    assert 15 < psnr_outside(ideal, data["images"], data["masks"]) < 30


def test_psnr_outside_ignores_the_face_and_progress_is_a_projection():
    ref = np.full((1, 4, 4, 3), 100, np.uint8)
    out = ref.copy()
    out[0, :2] = 0  # changed only where the mask is set
    mask = np.zeros((1, 4, 4), bool)
    mask[0, :2] = True
    assert psnr_outside(out, ref, mask) == float("inf")
    assert psnr_outside(out, ref, ~mask) == pytest.approx(10 * np.log10(255**2 / 100**2))
    e_tgt, e_req = np.zeros((2, 3)), np.array([[2.0, 0, 0], [0, 2.0, 0]])
    e_out = np.array([[1.0, 5.0, 0], [0, 3.0, 0]])  # half way (sideways moves do not count), 1.5x
    assert progress(e_out, e_tgt, e_req) == pytest.approx([0.5, 1.5])
