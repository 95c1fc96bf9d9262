"""Alignment of a face to the canonical five-point template at any crop size.

The template is the one ArcFace recognisers were trained on (112 x 112 pixels, insightface
order: left eye, right eye, nose tip, left mouth corner, right mouth corner). Other crop sizes
scale it uniformly, so a 256 px table crop and a 112 px recogniser crop show the same face
region and one can be resized into the other.
"""

from __future__ import annotations

import cv2
import numpy as np

# (5, 2) float32, pixels in a 112 x 112 crop.
ARCFACE_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def template(size: int) -> np.ndarray:
    """The five template points for a `size` x `size` crop, (5, 2) float32."""
    if size < 8:
        raise ValueError(f"crop size {size} is too small to align a face; use 8 px or more")
    return ARCFACE_TEMPLATE_112 * (size / 112.0)


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst.

    Umeyama's closed form. src, dst: (N, 2) with N >= 2. Returns a (2, 3) float32 matrix M with
    dst ~= src @ M[:, :2].T + M[:, 2].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"need matching (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("landmarks are degenerate (all points coincide); cannot align")
    cov = d_c.T @ s_c / len(src)  # (2, 2)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # no reflections
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    m = np.zeros((2, 3), dtype=np.float64)
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m.astype(np.float32)


def align_face(
    image: np.ndarray, landmarks5: np.ndarray, size: int, points: tuple[int, ...] = (0, 1, 2, 3, 4)
) -> tuple[np.ndarray, np.ndarray]:
    """Warp `image` (H, W, 3) so the landmarks land on the template of a `size` crop.

    `points` picks which of the five template points to fit, for detectors that do not give
    all five (dlib's 5-point model has no mouth corners, so the builtin pack fits 0, 1, 2).
    Returns the crop (size, size, 3) uint8 and the (2, 3) float32 source -> crop matrix.
    """
    idx = list(points)
    lm = np.asarray(landmarks5, dtype=np.float32).reshape(5, 2)
    matrix = similarity_matrix(lm[idx], template(size)[idx])
    crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return crop, matrix


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]
