"""Identity, 3D landmarks, pose and expression from insightface model files.

- `ArcFaceEncoder`: aligned 112 crops -> L2-normalised embedding (w600k_r50 / glintr100).
- `Landmarks3D`: the 1k3d68 network: a 192 x 192 face image -> 68 3D points (insightface's
  output convention: crop pixel = (value + 1) * 96, depth = value * 96; the network emits 1103
  points and the last 68 are the iBUG landmarks).
- `LandmarkPoseEstimator`: crops the source image around the detection box the way insightface's
  `Landmark.get` does (centre of the box, side 1.5 x the longer box side, no rotation), runs
  1k3d68 and turns the fit of insightface's 3D mean shape into yaw, pitch, roll with
  insightface's arithmetic and angle convention (utils/transform.py: estimate_affine_matrix_3d23d,
  P2sRt, matrix2angle). Those three functions are restated here rather than imported because
  importing anything from the insightface package runs its __init__, which loads its model zoo,
  GUI and liveness add-ons (about 1.8 s per process, paid by every Ray worker); the unit tests
  check the result against insightface's own Landmark model.
- `expression_geometry`: expression measures from 68 3D landmarks after removing head pose.
- `ExpressionEncoder`: aligned crops -> [optional user regressor outputs] + geometry measures.
"""

from __future__ import annotations

import importlib.util
import math
import pickle
from pathlib import Path

import cv2
import numpy as np

from sfsr.faces.base import Detection, OutputSpec, Pose
from sfsr.faces.insightface_runtime import OnnxNet, check_crops
from sfsr.io.images import resize_square_batch

LANDMARK_INPUT = 192  # 1k3d68's input side
CONTEXT = 1.5  # insightface crops 1.5 x the face box for its landmark networks
# An aligned crop spans the face box (the ArcFace template region), so at the landmark network's
# framing the face occupies 192 / 1.5 = 128 px in the middle of the 192 input.
FACE_IN_LANDMARK_INPUT = int(round(LANDMARK_INPUT / CONTEXT))

GEOMETRY_COMPONENTS = (
    "mouth_open",  # inner-lip gap (62 -> 66)
    "mouth_width",  # corner to corner (48 -> 54)
    "mouth_corner_lift",  # corners above the inner upper-lip centre (62): grows in a smile, not when the jaw drops
    "brow_raise",  # eye centre to brow, mean of both sides
    "brow_inner_gap",  # inner brow ends (21 -> 22): shrinks in a frown
    "eye_open_image_left",  # lid gap of the eye on the image's left (36-41)
    "eye_open_image_right",  # lid gap of the eye on the image's right (42-47)
)


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Reads a pickled numpy array and refuses anything else a pickle could construct."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"): ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"): ("numpy", "ndarray"),
        ("numpy", "dtype"): ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # type: ignore[override]
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"meanshape_68.pkl refers to {module}.{name}; only a numpy array is expected")
        return super().find_class(*self._ALLOWED[(module, name)])


def mean_shape_68() -> np.ndarray:
    """insightface's 68-point 3D mean face (68, 3) float64 (x right, y down, z towards the camera;
    about unit size), the shape its Landmark model fits for pose. Read from the installed
    insightface package's data folder without importing the package."""
    spec = importlib.util.find_spec("insightface")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "objects" / "meanshape_68.pkl" if spec else None
    if path is None or not path.is_file():
        raise RuntimeError(
            "insightface's data/objects/meanshape_68.pkl was not found; install the insightface "
            "version pinned in pyproject.toml"
        )
    with path.open("rb") as fh:
        shape = np.asarray(_ArrayOnlyUnpickler(fh).load(), dtype=np.float64)
    if shape.shape != (68, 3):
        raise RuntimeError(f"{path}: expected a (68, 3) mean shape, found {shape.shape}")
    return shape


def _affine_3d(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares affine (3, 4) P with dst ~= [src, 1] @ P.T (estimate_affine_matrix_3d23d)."""
    src_h = np.hstack([src, np.ones((len(src), 1))])  # (N, 4)
    return np.linalg.lstsq(src_h, dst, rcond=None)[0].T


def _scale_rotation(p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) from an affine camera P (P2sRt): mean row norm, two normalised rows and their
    cross product."""
    r1, r2 = p[0, :3], p[1, :3]
    s = (np.linalg.norm(r1) + np.linalg.norm(r2)) / 2.0
    r1, r2 = r1 / np.linalg.norm(r1), r2 / np.linalg.norm(r2)
    return float(s), np.stack([r1, r2, np.cross(r1, r2)]), p[:, 3]


def _euler_degrees(rot: np.ndarray) -> tuple[float, float, float]:
    """(pitch, yaw, roll) in degrees from a rotation matrix (matrix2angle)."""
    sy = math.hypot(rot[0, 0], rot[1, 0])
    if sy >= 1e-6:
        x, z = math.atan2(rot[2, 1], rot[2, 2]), math.atan2(rot[1, 0], rot[0, 0])
    else:  # gimbal lock: roll is not defined, insightface reports 0
        x, z = math.atan2(-rot[1, 2], rot[1, 1]), 0.0
    y = math.atan2(-rot[2, 0], sy)
    return math.degrees(x), math.degrees(y), math.degrees(z)


class ArcFaceEncoder:
    """`Encoder`: (B, S, S, 3) uint8 RGB aligned crops -> (B, dim) float32 unit vectors."""

    def __init__(self, net: OnnxNet, *, name: str, version: str, max_batch: int = 32):
        size = net.square_size
        if size is None:
            raise ValueError(
                f"{net.path}: the identity model's input is {net.height}x{net.width}; "
                "an ArcFace recogniser takes a fixed square (112 x 112)"
            )
        out = net.output_shapes[0]
        if len(net.output_names) != 1 or len(out) != 2 or not isinstance(out[1], int):
            raise ValueError(f"{net.path}: the identity model outputs {net.output_shapes}; expected one (N, D) vector")
        self.net = net
        self.name = name
        self.version = version
        self.input_size = size
        self.max_batch = max_batch
        self.output = OutputSpec(out[1], "L2-normalised ArcFace embedding; cosine similarity compares identities")

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        crops = resize_square_batch(check_crops(crops, f"{self.name} identity encoder"), self.input_size)
        if len(crops) == 0:
            return np.zeros((0, self.output.dim), np.float32)
        emb = self.net.run_batched(crops, self.max_batch).reshape(len(crops), -1)  # (B, D)
        norm = np.linalg.norm(emb, axis=1, keepdims=True)
        if np.any(norm < 1e-12):
            bad = np.where(norm[:, 0] < 1e-12)[0].tolist()
            raise ValueError(f"{self.name}: zero embedding for crops {bad}; the crops are probably blank")
        return (emb / norm).astype(np.float32)


class Landmarks3D:
    """The 1k3d68 network on batches of 192 x 192 face images."""

    def __init__(self, net: OnnxNet, max_batch: int = 32):
        if net.square_size != LANDMARK_INPUT:
            raise ValueError(
                f"{net.path}: the 3D landmark model's input is {net.height}x{net.width}; "
                f"1k3d68 takes {LANDMARK_INPUT}x{LANDMARK_INPUT}"
            )
        width = net.output_shapes[0][-1]
        if isinstance(width, int) and (width % 3 or width < 68 * 3):
            raise ValueError(f"{net.path}: the 3D landmark model outputs {width} values; expected 3 x N >= 204")
        self.net = net
        self.max_batch = max_batch
        self.mean_shape = mean_shape_68()

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(B, 192, 192, 3) uint8 RGB -> (B, 68, 3) float32 in input-pixel units."""
        out = self.net.run_batched(images, self.max_batch).reshape(len(images), -1, 3)[:, -68:]  # (B, 68, 3)
        pts = out.astype(np.float32).copy()
        half = LANDMARK_INPUT // 2
        pts[:, :, :2] = (pts[:, :, :2] + 1.0) * half
        pts[:, :, 2] *= half
        return pts


def pose_from_landmarks(points: np.ndarray, mean_shape: np.ndarray) -> tuple[Pose, np.ndarray, float, np.ndarray]:
    """Fit the mean shape to 68 3D points (x right, y down). Returns the Pose (degrees), the
    rotation R (3, 3), the scale s and the translation t (3,), with points ~ s * mean @ R.T + t."""
    p = _affine_3d(mean_shape, np.asarray(points, np.float64))  # (3, 4)
    s, rot, t = _scale_rotation(p)
    pitch, yaw, roll = _euler_degrees(rot)
    return Pose(yaw=yaw, pitch=pitch, roll=roll), rot, s, t


def expression_geometry(points: np.ndarray, mean_shape: np.ndarray) -> np.ndarray:
    """`GEOMETRY_COMPONENTS` from 68 3D landmarks (68, 3), as a (7,) float32 vector.

    Head pose is removed first (the points are mapped back into the mean shape's frame with the
    fitted rotation, scale and translation), then every distance is divided by the inter-ocular
    distance (between the two eye centres), so the measures do not change with face size, image
    size or head turn. iBUG 68-point indices, 0-based.
    """
    pts = np.asarray(points, np.float64)
    _, rot, s, t = pose_from_landmarks(pts, mean_shape)
    q = (pts - t) @ rot / s  # (68, 3) in the mean shape's frame: y down, pose removed
    eye_l, eye_r = q[36:42].mean(0), q[42:48].mean(0)
    iod = float(np.linalg.norm(eye_l - eye_r))
    if iod < 1e-9:
        raise ValueError("landmarks are degenerate (both eye centres coincide); cannot measure an expression")

    def dist(a: int, b: int) -> float:
        return float(np.linalg.norm(q[a] - q[b]))

    corners_y = (q[48, 1] + q[54, 1]) / 2
    brow = ((eye_l[1] - q[17:22, 1].mean()) + (eye_r[1] - q[22:27, 1].mean())) / 2
    values = [
        q[66, 1] - q[62, 1],
        dist(48, 54),
        q[62, 1] - corners_y,  # y points down: corners above the lip centre give a positive lift
        brow,
        dist(21, 22),
        (dist(37, 41) + dist(38, 40)) / 2,
        (dist(43, 47) + dist(44, 46)) / 2,
    ]
    return (np.asarray(values) / iod).astype(np.float32)


def landmark_input_from_crops(crops: np.ndarray) -> np.ndarray:
    """Aligned crops (B, S, S, 3) -> 1k3d68 inputs (B, 192, 192, 3): the crop resized to the
    128 px face region, black margin around it, the framing insightface gives a detection box."""
    face = resize_square_batch(crops, FACE_IN_LANDMARK_INPUT)
    pad = (LANDMARK_INPUT - FACE_IN_LANDMARK_INPUT) // 2
    rest = LANDMARK_INPUT - FACE_IN_LANDMARK_INPUT - pad
    return np.pad(face, ((0, 0), (pad, rest), (pad, rest), (0, 0)))


def landmark_crop_matrix(bbox: np.ndarray) -> np.ndarray:
    """(2, 3) source -> 192-input matrix insightface's Landmark.get uses: box centre to the middle,
    scale 192 / (1.5 x the longer box side), no rotation."""
    x1, y1, x2, y2 = (float(v) for v in bbox[:4])
    side = max(x2 - x1, y2 - y1)
    if side <= 0:
        raise ValueError(f"detection box {bbox.tolist()} has no area; cannot crop for landmarks")
    s = LANDMARK_INPUT / (side * CONTEXT)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    half = LANDMARK_INPUT / 2
    return np.array([[s, 0.0, half - s * cx], [0.0, s, half - s * cy]], dtype=np.float64)


class LandmarkPoseEstimator:
    """`PoseEstimator`: head pose from 1k3d68 landmarks, as insightface's FaceAnalysis computes it."""

    def __init__(self, landmarks: Landmarks3D, *, name: str, version: str):
        self.landmarks = landmarks
        self.name = name
        self.version = version

    def landmarks68(self, image: np.ndarray, detection: Detection) -> np.ndarray:
        """(68, 3) landmarks in source-image pixels (depth scaled like x and y)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"pose input must be an RGB uint8 (H, W, 3) image, got {image.shape} {image.dtype}")
        m = landmark_crop_matrix(np.asarray(detection.bbox))
        crop = cv2.warpAffine(image, m, (LANDMARK_INPUT, LANDMARK_INPUT), borderValue=0.0)
        pts = self.landmarks(crop[None])[0].astype(np.float64)  # (68, 3) crop pixels
        inv = cv2.invertAffineTransform(m)
        out = pts.copy()
        out[:, :2] = pts[:, :2] @ inv[:, :2].T + inv[:, 2]
        out[:, 2] = pts[:, 2] / m[0, 0]
        return out.astype(np.float32)

    def estimate(self, image: np.ndarray, detection: Detection) -> Pose:
        pose, *_ = pose_from_landmarks(self.landmarks68(image, detection), self.landmarks.mean_shape)
        return pose


class ExpressionEncoder:
    """`Encoder`: aligned crops -> [regressor outputs] + `GEOMETRY_COMPONENTS`.

    The geometry part runs 1k3d68 on the crop (see `landmark_input_from_crops`). When the pack
    has a file with role "expression" (any ONNX image -> vector model, e.g. a 3DMM expression
    regressor), its outputs come first; it is fed the crop resized to its input size and
    normalised with the manifest's "expression" normalisation, RGB.
    """

    def __init__(
        self, landmarks: Landmarks3D, regressor: OnnxNet | None = None, *, name: str, version: str, max_batch: int = 32
    ):
        self.landmarks = landmarks
        self.regressor = regressor
        self.name = name
        self.version = version
        self.max_batch = max_batch
        names: tuple[str, ...] = ()
        if regressor is not None:
            size = regressor.square_size
            width = regressor.output_shapes[0][-1]
            if size is None or not isinstance(width, int):
                raise ValueError(
                    f"{regressor.path}: the expression model must take fixed square images and "
                    f"output a fixed-size vector; it has input {regressor.height}x{regressor.width} "
                    f"and output {regressor.output_shapes[0]}"
                )
            self.regressor_size = size
            names = tuple(f"{regressor.path.stem}_{i}" for i in range(width))
        # The crops this encoder wants: the regressor's size, else the face region 1k3d68 sees.
        self.input_size = self.regressor_size if regressor is not None else FACE_IN_LANDMARK_INPUT
        description = "3D-landmark expression geometry, distances / inter-ocular distance"
        if regressor is not None:
            description = f"{regressor.path.name} outputs, then " + description
        self.output = OutputSpec(len(names) + len(GEOMETRY_COMPONENTS), description, names + GEOMETRY_COMPONENTS)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        crops = check_crops(crops, f"{self.name} expression encoder")
        if len(crops) == 0:
            return np.zeros((0, self.output.dim), np.float32)
        pts = self.landmarks(landmark_input_from_crops(crops))  # (B, 68, 3)
        geo = np.stack([expression_geometry(p, self.landmarks.mean_shape) for p in pts])  # (B, 7)
        if self.regressor is None:
            return geo
        reg = self.regressor.run_batched(resize_square_batch(crops, self.regressor_size), self.max_batch)
        return np.concatenate([reg.reshape(len(crops), -1), geo], 1).astype(np.float32)
