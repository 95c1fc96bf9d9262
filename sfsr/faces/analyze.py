"""The two calls the ingest actors make: analyse a source image, encode a batch of crops.

`analyze_image` runs where whole images are (detect, five points, pose, align, mask);
`encode_crops` runs where batches of aligned crops are (identity, expression). Both work with any
`FacePack`.

The face mask marks the face in the aligned crop so background and face can be separated. With
dense landmarks (68 or more points) it is their convex hull, with the points above the eye line
repeated half an inter-ocular distance higher to take in the forehead, then dilated by 2% of the
crop; without them it is a fixed ellipse on the template (`TEMPLATE_ELLIPSE_112`), which is what
`face_mask(None, size)` rebuilds from the crop size alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from sfsr.faces.align import template, transform_points
from sfsr.faces.base import Pose
from sfsr.faces.pack import FacePack
from sfsr.io.images import resize_square, resize_square_batch

# centre x, centre y, semi-axis x, semi-axis y in 112-px template units: forehead to chin,
# cheek to cheek for a frontal face aligned to the ArcFace template.
TEMPLATE_ELLIPSE_112 = (56.0, 60.0, 42.0, 54.0)
# The one framing (ingest, training tables, serving, evaluation): a face is warped onto the pack's
# template at max(crop size, ALIGN_SIZE) px, masked there, then area-reduced to the crop size:
# warping a photo straight to 32 or 64 px aliases, and doing it one way everywhere makes a
# served photo's crop and mask the very pixels a model trained on that table saw.
ALIGN_SIZE = 128


def framing_name(pack: FacePack, align_size: int = ALIGN_SIZE) -> str:
    """The framing a face table and a model record: the pack's alignment template and points, the
    warp size and the mask rule, e.g. "arcface-112[0,1,2,3,4]/align128/hull68-or-ellipse"."""
    a = pack.manifest.alignment
    return f"{a.template}[{','.join(map(str, a.points))}]/align{align_size}/hull68-or-ellipse"


@dataclass(frozen=True)
class FaceRecord:
    """One analysed face. Source-image coordinates unless the name says crop."""

    face_index: int  # order of the detector's scores, 0 = most confident
    bbox: np.ndarray  # (4,) float32 x1, y1, x2, y2
    score: float
    landmarks5: np.ndarray  # (5, 2) float32
    landmarks: np.ndarray | None  # (K, 2) float32 dense landmarks, when the detector has them
    align_matrix: np.ndarray  # (2, 3) float32 source -> crop
    crop: np.ndarray  # (S, S, 3) uint8 RGB
    mask: np.ndarray  # (S, S) bool, True on the face
    pose: Pose


def face_mask(landmarks_crop: np.ndarray | None, size: int) -> np.ndarray:
    """(size, size) bool face region from dense landmarks in crop coordinates (or the ellipse)."""
    mask = np.zeros((size, size), np.uint8)
    s = size / 112.0
    if landmarks_crop is None or len(landmarks_crop) < 17:
        cx, cy, ax, ay = (v * s for v in TEMPLATE_ELLIPSE_112)
        cv2.ellipse(mask, (round(cx), round(cy)), (round(ax), round(ay)), 0, 0, 360, 1, -1)
        return mask.astype(bool)
    pts = np.asarray(landmarks_crop, np.float32)
    eyes = template(size)[:2]  # the crop is aligned, so the eyes sit at the template's eyes
    eye_y, iod = float(eyes[:, 1].mean()), float(eyes[1, 0] - eyes[0, 0])
    above = pts[pts[:, 1] < eye_y] - np.array([0.0, 0.5 * iod], np.float32)  # forehead
    hull = cv2.convexHull(np.concatenate([pts, above]).round().astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    k = max(1, round(0.02 * size)) * 2 + 1
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return mask.astype(bool)


def analyze_image(
    pack: FacePack, image: np.ndarray, crop_size: int | None = None, *, align_size: int = ALIGN_SIZE
) -> list[FaceRecord]:
    """Detect every face in an (H, W, 3) uint8 RGB image and align, mask and pose each one, at
    `crop_size` px framed the one way (see ALIGN_SIZE)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"analyze_image: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}; "
            "decode with sfsr.io.images.decode_image"
        )
    out_size = crop_size or pack.crop_size
    size = max(out_size, align_size)
    out = []
    for i, det in enumerate(pack.detector.detect(image)):
        crop, matrix = pack.align(image, det, size)
        dense = transform_points(det.landmarks, matrix) if det.landmarks is not None else None
        face = FaceRecord(
            face_index=i,
            bbox=np.asarray(det.bbox, np.float32),
            score=float(det.score),
            landmarks5=np.asarray(det.landmarks5, np.float32),
            landmarks=None if det.landmarks is None else np.asarray(det.landmarks, np.float32),
            align_matrix=matrix,
            crop=crop,
            mask=face_mask(dense, size),
            pose=pack.pose.estimate(image, det),
        )
        out.append(downscale_face(face, out_size))
    return out


def downscale_face(face: FaceRecord, crop_size: int) -> FaceRecord:
    """A face aligned at a larger size -> the same face at `crop_size` (area averaging)."""
    size = face.crop.shape[0]
    if size == crop_size:
        return face
    s = crop_size / size
    # crop pixel centres: x' = (x + 0.5) * s - 0.5, composed after the source -> crop matrix
    scale = np.array([[s, 0.0, 0.5 * s - 0.5], [0.0, s, 0.5 * s - 0.5], [0.0, 0.0, 1.0]], np.float64)
    m = np.vstack([face.align_matrix.astype(np.float64), [0.0, 0.0, 1.0]])
    matrix = (scale @ m)[:2].astype(np.float32)
    crop = resize_square(face.crop, crop_size, enlarge=cv2.INTER_AREA)
    mask = resize_square(face.mask.astype(np.float32), crop_size, enlarge=cv2.INTER_AREA) >= 0.5
    return FaceRecord(
        face.face_index, face.bbox, face.score, face.landmarks5, face.landmarks, matrix, crop, mask, face.pose
    )


def encode_crops(pack: FacePack, crops: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(B, S, S, 3) uint8 aligned crops -> identity (B, Di) and expression (B, De) float32.

    Crops of any square size are resized to each encoder's input size (they are all aligned to
    the same template, so resizing keeps them aligned)."""
    if isinstance(crops, list):
        arr = np.stack(crops) if crops else np.zeros((0, 1, 1, 3), np.uint8)
    else:
        arr = np.asarray(crops)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[3] != 3 or arr.shape[1] != arr.shape[2]:
        raise ValueError(f"encode_crops: expected square crops (B, S, S, 3) uint8, got {arr.shape} {arr.dtype}")
    if len(arr) == 0:
        empty = np.zeros((0, pack.identity.output.dim), np.float32)
        return empty, np.zeros((0, pack.expression.output.dim), np.float32)
    return encode_with(pack.identity, arr), encode_with(pack.expression, arr)


def encode_with(encoder: Any, crops: np.ndarray) -> np.ndarray:
    """One encoder on (B, S, S, 3) uint8 aligned crops of any square size: resized to its
    input size (aligned to one template, so resizing keeps them aligned) -> (B, D) float32."""
    return encoder(resize_square_batch(crops, encoder.input_size)).astype(np.float32, copy=False)
