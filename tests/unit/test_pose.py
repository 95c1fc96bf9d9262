"""Head pose conventions, checked on the generic face projected with known rotations."""

from __future__ import annotations

import numpy as np
import pytest

from sfsr.faces.base import Detection
from sfsr.faces.pose import IDX_68, MODEL_5, MODEL_6, LandmarkPose, camera_matrix, pose_from_landmarks

H, W = 600, 800


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation with the documented meaning: yaw turns the face to the image's right, pitch
    tilts it up, roll turns it clockwise in the image (axes x right, y down, z forward)."""
    y, p, r = np.deg2rad([yaw, pitch, roll])
    ry = np.array([[np.cos(-y), 0, np.sin(-y)], [0, 1, 0], [-np.sin(-y), 0, np.cos(-y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(-p), -np.sin(-p)], [0, np.sin(-p), np.cos(-p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _project(model: np.ndarray, rot: np.ndarray, dist: float = 4000.0) -> np.ndarray:
    cam = (model - model.mean(0)) @ rot.T + np.array([30.0, -20.0, dist])
    uv = cam @ camera_matrix(H, W).T
    return uv[:, :2] / uv[:, 2:]  # (N, 2)


def _as68(pts6: np.ndarray) -> np.ndarray:
    lm = np.zeros((68, 2))
    lm[IDX_68] = pts6
    return lm


@pytest.mark.parametrize(
    "yaw, pitch, roll", [(0, 0, 0), (25, 0, 0), (-30, 0, 0), (0, 15, 0), (0, -20, 0), (0, 0, 20), (20, -10, 15)]
)
def test_recovers_known_angles_from_68_points(yaw, pitch, roll):
    pose = pose_from_landmarks(_as68(_project(MODEL_6, _rot(yaw, pitch, roll))), H, W)
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx((yaw, pitch, roll), abs=1.0)


@pytest.mark.parametrize("yaw, roll", [(20, 0), (-15, 10)])
def test_recovers_known_angles_from_5_points(yaw, roll):
    pose = pose_from_landmarks(_project(MODEL_5, _rot(yaw, 0, roll)), H, W)
    assert (pose.yaw, pose.roll) == pytest.approx((yaw, roll), abs=1.5)


def test_sign_conventions_match_the_picture():
    turned = _project(MODEL_6, _rot(25, 0, 0))
    nose, eyes_mid = turned[0], turned[2:4].mean(0)
    assert nose[0] > eyes_mid[0]  # yaw > 0: the nose is right of the eyes in the image
    tilted = _project(MODEL_6, _rot(0, 0, 20))
    assert tilted[3][1] > tilted[2][1]  # roll > 0: the image-right eye is lower


def test_mirror_negates_yaw_and_roll():
    pts = _project(MODEL_6, _rot(22, 8, 12))
    mirrored = pts.copy()
    mirrored[:, 0] = W - mirrored[:, 0]
    mirrored[[2, 3]] = mirrored[[3, 2]]  # image-left and image-right swap under a mirror
    mirrored[[4, 5]] = mirrored[[5, 4]]
    a, b = pose_from_landmarks(_as68(pts), H, W), pose_from_landmarks(_as68(mirrored), H, W)
    assert b.yaw == pytest.approx(-a.yaw, abs=0.5) and b.roll == pytest.approx(-a.roll, abs=0.5)
    assert b.pitch == pytest.approx(a.pitch, abs=0.5)


def test_estimator_prefers_dense_landmarks():
    rot = _rot(18, 0, 0)
    det68 = Detection(np.zeros(4, np.float32), 1.0, np.zeros((5, 2), np.float32), _as68(_project(MODEL_6, rot)))
    det5 = Detection(np.zeros(4, np.float32), 1.0, _project(MODEL_5, rot).astype(np.float32))
    img = np.zeros((H, W, 3), np.uint8)
    assert LandmarkPose().estimate(img, det68).yaw == pytest.approx(18, abs=1.0)
    assert LandmarkPose().estimate(img, det5).yaw == pytest.approx(18, abs=1.5)


def test_wrong_point_count_is_refused():
    with pytest.raises(ValueError, match="68 or 5"):
        pose_from_landmarks(np.zeros((7, 2)), H, W)
