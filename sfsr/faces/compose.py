"""Between the model's aligned crops and whole photos: pseudo-detections for crops that are
already aligned, pasting a generated crop back into its photo, and sizing the output.

Pure numpy/OpenCV (no Ray), unit-tested in tests/unit/test_api_validation.py. The Serve ingress
(through deployments/compose.py) and jobs/generate.py both compose outputs with these, so it lives
on the face floor that both stand on.
"""

from __future__ import annotations

import cv2
import numpy as np

from sfsr.faces.align import template
from sfsr.faces.analyze import FaceRecord, face_mask
from sfsr.faces.base import Pose
from sfsr.io.images import resize_square


def aligned_face(image: np.ndarray, crop_size: int) -> FaceRecord:
    """Treat a square (H, W, 3) image as an already-aligned face crop (sfsr.synth renders and
    the page's example faces are): resize it to `crop_size`, no detection.

    The matrix follows cv2.resize's pixel-centre convention, x' = (x + 0.5) * s - 0.5, so
    paste_back puts the crop exactly where it came from."""
    h, w = image.shape[:2]
    if h != w:
        raise ValueError(
            f"an aligned face crop must be square, got {w}x{h}; crop it square, or send the photo "
            "without *_aligned so the face is detected"
        )
    s = crop_size / w
    matrix = np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5]], np.float32)  # source -> crop
    crop = resize_square(image, crop_size, enlarge=cv2.INTER_CUBIC)
    lm5 = (template(crop_size) + 0.5) / s - 0.5  # (5, 2) back in source pixels
    return FaceRecord(
        face_index=0,
        bbox=np.array([0.0, 0.0, w, h], np.float32),
        score=1.0,
        landmarks5=lm5.astype(np.float32),
        landmarks=None,
        align_matrix=matrix,
        crop=crop,
        mask=face_mask(None, crop_size),
        pose=Pose(0.0, 0.0, 0.0),
    )


def paste_back(
    photo: np.ndarray, crop: np.ndarray, matrix: np.ndarray, mask: np.ndarray, feather: float = 0.04
) -> np.ndarray:
    """Blend a generated aligned crop into the photo it was aligned from.

    photo (H, W, 3) uint8; crop (S, S, 3) uint8; matrix (2, 3) source -> crop; mask (S, S) bool
    face region. The mask is warped back, shrunk and then blurred with sigma = `feather` x the
    face's size in the photo, so the seam fades inside the face and nothing outside the mask
    changes.
    Only the face's bounding box is processed, so big photos cost no more than small ones.
    """
    h, w = photo.shape[:2]
    size = crop.shape[0]
    m = matrix.astype(np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # crop pixels per photo pixel
    face_px = size / scale
    sigma = max(0.5, feather * face_px)
    # the crop's corners in the photo, padded by the blur's reach, clipped to the photo
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64) @ inv[:, :2].T + inv[:, 2]
    pad = 3 * sigma + 2
    x0, y0 = (max(0, int(np.floor(v - pad))) for v in corners.min(0))
    x1, y1 = min(w, int(np.ceil(corners[:, 0].max() + pad))), min(h, int(np.ceil(corners[:, 1].max() + pad)))
    out = photo.copy()
    if x1 <= x0 or y1 <= y0:
        return out  # the face lies outside the photo: nothing to paste
    roi = m.copy()
    roi[:, 2] += m[:, :2] @ np.array([x0, y0], np.float64)  # ROI pixel -> crop
    rw, rh = x1 - x0, y1 - y0
    interp = cv2.INTER_CUBIC if scale < 1 else cv2.INTER_AREA
    face = cv2.warpAffine(
        crop, roi, (rw, rh), flags=interp | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE
    )  # (rh, rw, 3)
    alpha = cv2.warpAffine(
        mask.astype(np.float32),
        roi,
        (rw, rh),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )  # (rh, rw)
    # Erode by r, then blur with a kernel truncated at r = 2 sigma: the blend ramps up inside the
    # mask and is exactly 0 outside it (an untruncated Gaussian would leak a level or two).
    r = max(1, int(round(2 * sigma)))
    alpha = cv2.erode(alpha, np.ones((2 * r + 1, 2 * r + 1), np.uint8))  # square, like the blur kernel
    alpha = cv2.GaussianBlur(alpha, (2 * r + 1, 2 * r + 1), sigma)[:, :, None]  # (rh, rw, 1) in [0, 1]
    region = out[y0:y1, x0:x1].astype(np.float32)
    out[y0:y1, x0:x1] = np.clip(alpha * face + (1.0 - alpha) * region + 0.5, 0, 255).astype(np.uint8)
    return out


def fit_output(image: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale (area averaging) so neither side exceeds `max_side`."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
