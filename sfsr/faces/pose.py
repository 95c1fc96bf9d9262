"""Head pose from 2D landmarks: solvePnP against a generic 3D face, angles in degrees.

Conventions (every pack reports pose this way):
- yaw > 0: the face turns toward the image's right (the subject's left); frontal is 0.
- pitch > 0: the face tilts up (chin up); frontal is about 0, but a generic face model gives a
  bias of a few degrees that depends on the person's proportions.
- roll > 0: the face is rotated clockwise as seen in the image (its right-hand eye lower).
A horizontal mirror of the image negates yaw and roll and keeps pitch.

The camera is a pinhole with focal length max(H, W) pixels (a ~53 degree field of view) centred
on the image: EXIF focal lengths are rarely present in the inputs we get, and yaw/roll depend
only weakly on the focal length for faces that fill a modest part of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from sfsr.faces.base import Detection, Pose

# Generic face in camera-aligned axes (x right, y down, z away from the camera), arbitrary units
# (roughly 0.1 mm), nose tip at the origin. The 6-point set is the widely used one from the
# head-pose literature; the 5-point set replaces eye corners by eye centres for detectors that
# only give insightface's five points.
MODEL_6 = np.array(
    [
        [0.0, 0.0, 0.0],  # nose tip (68-point index 30)
        [0.0, 330.0, 65.0],  # chin (8)
        [-225.0, -170.0, 135.0],  # image-left eye, outer corner (36)
        [225.0, -170.0, 135.0],  # image-right eye, outer corner (45)
        [-150.0, 150.0, 125.0],  # image-left mouth corner (48)
        [150.0, 150.0, 125.0],  # image-right mouth corner (54)
    ],
    dtype=np.float64,
)
IDX_68 = [30, 8, 36, 45, 48, 54]
MODEL_5 = np.array(
    [
        [-160.0, -170.0, 135.0],  # image-left eye centre
        [160.0, -170.0, 135.0],  # image-right eye centre
        [0.0, 0.0, 0.0],  # nose tip
        [-150.0, 150.0, 125.0],  # image-left mouth corner
        [150.0, 150.0, 125.0],  # image-right mouth corner
    ],
    dtype=np.float64,
)


def camera_matrix(height: int, width: int) -> np.ndarray:
    f = float(max(height, width))
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def pose_from_points(points2d: np.ndarray, model3d: np.ndarray, height: int, width: int) -> Pose:
    """Pose from (N, 2) image points matching the (N, 3) model points."""
    pts = np.asarray(points2d, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] != model3d.shape[0]:
        raise ValueError(f"pose needs {model3d.shape[0]} points, got {pts.shape[0]}")
    # SQPnP: globally optimal and fine with 5 points (the iterative solver wants 6 for its DLT start)
    ok, rvec, _tvec = cv2.solvePnP(model3d, pts, camera_matrix(height, width), np.zeros(4), flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        raise ValueError("solvePnP found no head pose for these landmarks (degenerate points?)")
    rot, _ = cv2.Rodrigues(rvec)
    # RQDecomp3x3 gives rotations about x, y, z in degrees; with our axes (y down, z forward)
    # +y rotation moves the nose to the image's left and +x moves it down, hence the signs.
    angles = cv2.RQDecomp3x3(rot)[0]
    return Pose(yaw=float(-angles[1]), pitch=float(-angles[0]), roll=float(angles[2]))


def pose_from_landmarks(landmarks: np.ndarray, height: int, width: int) -> Pose:
    """Pose from 68-point (iBUG order) or 5-point (insightface order) landmarks."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    if lm.shape[0] == 68:
        return pose_from_points(lm[IDX_68], MODEL_6, height, width)
    if lm.shape[0] == 5:
        return pose_from_points(lm, MODEL_5, height, width)
    raise ValueError(f"pose from landmarks needs 68 or 5 points, got {lm.shape[0]}")


@dataclass(frozen=True)
class LandmarkPose:
    """PoseEstimator from a detection's landmarks: the 68 dense ones when present, else the 5."""

    name: str = "pnp-generic-face"
    version: str = "1"

    def estimate(self, image: np.ndarray, detection: Detection) -> Pose:
        h, w = image.shape[:2]
        dense = detection.landmarks
        lm = dense if dense is not None and len(dense) == 68 else detection.landmarks5
        return pose_from_landmarks(lm, h, w)
