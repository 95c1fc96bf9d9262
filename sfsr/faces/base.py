"""The face-analysis interface every pack implements (DESIGN.md, "Face encoders and model packs").

A pack is split the way the ingest pipeline is split:

- a `Detector` runs on whole source images (the detect-and-align actor pool): it finds faces and
  their five landmarks in source-image coordinates;
- a `PoseEstimator` also needs the source image (alignment removes roll), so it runs next to the
  detector;
- `Encoder`s run on batches of aligned crops (the encode actor pool): identity, expression.

Landmark order everywhere is insightface's five points: left eye centre, right eye centre, nose
tip, left mouth corner, right mouth corner, where "left" is the image's left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One face found in a source image."""

    bbox: np.ndarray  # (4,) float32: x1, y1, x2, y2 in source-image pixels
    score: float  # detector confidence; scale is detector-specific
    landmarks5: np.ndarray  # (5, 2) float32, insightface order, source-image pixels
    landmarks: np.ndarray | None = None  # (K, 2) float32 dense landmarks when the detector has them


@dataclass(frozen=True)
class Pose:
    """Head pose in degrees: yaw (left/right), pitch (up/down), roll (in-plane)."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class OutputSpec:
    """What an encoder returns for each crop: a float32 vector of `dim` values."""

    dim: int
    description: str
    # Names of individual components when they mean something (for example emotion classes
    # followed by geometry measures); empty when the vector is an opaque embedding.
    components: tuple[str, ...] = field(default_factory=tuple)


@runtime_checkable
class Detector(Protocol):
    name: str
    version: str

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Find faces in one RGB uint8 image (H, W, 3), highest score first."""
        ...


@runtime_checkable
class PoseEstimator(Protocol):
    name: str
    version: str

    def estimate(self, image: np.ndarray, detection: Detection) -> Pose:
        """Head pose of one detected face in its RGB uint8 source image."""
        ...


@runtime_checkable
class Encoder(Protocol):
    """A batched call on aligned crops: (B, S, S, 3) uint8 RGB at `input_size` -> (B, dim) float32."""

    name: str
    version: str
    input_size: int
    output: OutputSpec

    def __call__(self, crops: np.ndarray) -> np.ndarray: ...
