"""Pose preservation: L2 of (yaw, pitch, roll) in degrees between output and target.

Outputs are aligned crops, and alignment removes most of the roll and all of the position, so the
target's pose is measured the same way on its own crop (not read from the face table, which holds
the pose in the source photo). `crop_poses` runs a pack's detector and pose estimator on each crop
padded with an edge-replicated border (detectors want context around a face that fills the whole
crop); a crop with no face found gets NaN and is counted as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from evaluation.stats import Bins, ScalarStats, merge_scalar, scalar_stats

POSE_BINS = Bins(0.0, 45.0, 45)


def crop_poses(pack, crops: np.ndarray | list[np.ndarray], pad: float = 0.25, upscale_to: int = 256) -> np.ndarray:  # noqa: ANN001 - FacePack
    """(B, S, S, 3) uint8 aligned crops -> (B, 3) float64 yaw, pitch, roll in degrees (NaN: no face)."""
    out = np.full((len(crops), 3), np.nan)
    for i, crop in enumerate(crops):
        img = np.asarray(crop)
        if img.shape[0] < upscale_to:  # small crops (64 px) are below HOG's minimum face size
            img = cv2.resize(img, (upscale_to, upscale_to), interpolation=cv2.INTER_CUBIC)
        b = int(round(pad * img.shape[0]))
        img = cv2.copyMakeBorder(img, b, b, b, b, cv2.BORDER_REPLICATE)
        detections = pack.detector.detect(img)
        if detections:
            p = pack.pose.estimate(img, detections[0])
            out[i] = (p.yaw, p.pitch, p.roll)
    return out


def pose_distance(output: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Row-wise L2 of (N, 3) degree triples -> (N,) (NaN where either side is NaN)."""
    a, b = np.asarray(output, np.float64), np.asarray(target, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"pose_distance: need two (N, 3) arrays (yaw, pitch, roll), got {a.shape} and {b.shape}")
    return np.sqrt(np.square(a - b).sum(axis=1))


@dataclass(frozen=True)
class PoseStats:
    estimator: str
    l2: ScalarStats


def pose_statistics(output: np.ndarray, target: np.ndarray, estimator: str) -> PoseStats:
    return PoseStats(estimator, scalar_stats(pose_distance(output, target), POSE_BINS))


def merge_pose(*parts: PoseStats) -> PoseStats:
    names = {p.estimator for p in parts}
    if len(names) != 1:
        raise ValueError(f"merge_pose: parts come from different pose estimators {sorted(names)}")
    return PoseStats(parts[0].estimator, merge_scalar(*[p.l2 for p in parts]))


def pose_score(stats: PoseStats) -> dict:
    return {"estimator": stats.estimator, "l2_degrees": stats.l2.summary()}
