"""Five-point alignment: template scaling, exact similarity recovery, pixel placement."""

from __future__ import annotations

import numpy as np
import pytest

from sfsr.faces.align import ARCFACE_TEMPLATE_112, align_face, similarity_matrix, template, transform_points


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def test_template_scales_uniformly():
    np.testing.assert_allclose(template(224), 2 * ARCFACE_TEMPLATE_112, rtol=1e-6)
    np.testing.assert_allclose(template(256)[0], ARCFACE_TEMPLATE_112[0] * 256 / 112, rtol=1e-6)
    with pytest.raises(ValueError, match="too small"):
        template(4)


@pytest.mark.parametrize("angle, scale, tx, ty", [(0, 1, 0, 0), (30, 2.5, -40, 17), (-170, 0.3, 5, 900)])
def test_similarity_matrix_recovers_a_known_transform(angle, scale, tx, ty):
    rng = np.random.default_rng(int(abs(angle)))
    src = rng.uniform(0, 500, (5, 2))
    m = _similarity(angle, scale, tx, ty)
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(similarity_matrix(src, dst), m, rtol=1e-4, atol=1e-3)


def test_similarity_never_reflects():
    src = template(112).astype(np.float64)
    mirrored = src * np.array([-1.0, 1.0])  # a reflection cannot be matched by a similarity
    m = similarity_matrix(src, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_similarity_least_squares_with_noise_is_close():
    rng = np.random.default_rng(0)
    src = template(112).astype(np.float64)
    m = _similarity(12, 1.7, 30, -8)
    dst = src @ m[:, :2].T + m[:, 2] + rng.normal(0, 0.2, src.shape)
    np.testing.assert_allclose(similarity_matrix(src, dst), m, atol=0.05 * 30)
    resid = transform_points(src, similarity_matrix(src, dst)) - dst
    assert np.abs(resid).max() < 1.0


def test_degenerate_or_mismatched_points_are_refused():
    with pytest.raises(ValueError, match="degenerate"):
        similarity_matrix(np.ones((5, 2)), template(112))
    with pytest.raises(ValueError, match="matching"):
        similarity_matrix(np.zeros((5, 2)), np.zeros((4, 2)))


def test_align_face_puts_landmark_pixels_on_the_template():
    # Landmarks of a face in a 500 x 400 image, 25 degrees rotated and 2.2x the 112 template.
    m_true = _similarity(25, 2.2, 120, 60)
    lm = transform_points(ARCFACE_TEMPLATE_112, m_true.astype(np.float32))
    img = np.zeros((400, 500, 3), np.uint8)
    for k, (x, y) in enumerate(lm):  # a distinct bright dot on each landmark
        img[int(round(y)) - 2 : int(round(y)) + 3, int(round(x)) - 2 : int(round(x)) + 3] = 50 * (k + 1)
    crop, m = align_face(img, lm, 256)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(transform_points(lm, m), template(256), atol=1e-2)
    for k, (x, y) in enumerate(template(256)):
        assert crop[int(round(y)), int(round(x)), 0] == pytest.approx(50 * (k + 1), abs=3)


def test_align_face_with_a_subset_of_points_fits_those_exactly():
    lm = transform_points(ARCFACE_TEMPLATE_112, _similarity(-10, 1.5, 10, 20).astype(np.float32)).copy()
    lm[3:] += 15.0  # mouth corners far off: a 3-point fit must ignore them
    _, m = align_face(np.zeros((300, 300, 3), np.uint8), lm, 112, points=(0, 1, 2))
    np.testing.assert_allclose(transform_points(lm, m)[:3], template(112)[:3], atol=1e-2)
    _, m5 = align_face(np.zeros((300, 300, 3), np.uint8), lm, 112)
    assert np.abs(transform_points(lm, m5)[:3] - template(112)[:3]).max() > 1.0
