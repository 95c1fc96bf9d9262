"""The builtin face pack: offline models that PyPI packages ship, found by path.

- detector: dlib's HOG frontal-face detector (code inside dlib, Boost licence), upsampled once
  for small images so faces down to ~40 px are found;
- landmarks: dlib's 68-point shape predictor (iBUG 300-W, NON-COMMERCIAL), reduced to our five
  points (eye centres from the six eye points, nose tip, mouth corners). We use the 68-point model
  rather than dlib's 5-point one because the 5-point model has no mouth corners (a worse fit to
  the five-point template) and because pose and expression geometry need the dense points. The
  consequence: the builtin pack as a whole is for non-commercial use. The identity path alone
  (5-point model + ResNet) is CC0;
- identity: dlib's ResNet 128-d descriptor (CC0), L2-normalised. It runs on our aligned crops:
  the 5-point predictor re-finds the eye corners and nose in the crop and dlib cuts its own
  150 px chip from there, so the network sees the alignment it was trained with;
- expression: the FER2013 mini-Xception from the `fer` package (MIT, see builtin_fer.py), 7 class
  probabilities, followed by six geometry measures from the 68 points found in the crop;
- pose: solvePnP on the 68 points (sfsr.faces.pose).

face_recognition_models/__init__.py imports pkg_resources (gone from new setuptools), so its
files are located through importlib's spec, never by importing it (pack.package_dir).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import dlib
import numpy as np
import torch

from sfsr.faces import builtin_fer
from sfsr.faces.base import Detection, OutputSpec
from sfsr.faces.pack import FacePack, PackContext, register_loader
from sfsr.faces.pose import LandmarkPose

# Where dlib's detector box falls in an aligned crop, in 112-px template units (x1, y1, x2, y2):
# the mean over the test photos' detections. Shape predictors start from their mean shape placed
# in the box, so running them on a crop needs a box like the detector's.
FACE_BOX_112 = (11.0, 33.0, 103.0, 111.0)
GEOMETRY = ("mouth_open", "mouth_width", "mouth_corner_lift", "brow_raise", "eye_open", "brow_gap")


def _image(image: np.ndarray, what: str = "image") -> np.ndarray:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{what}: expected (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    return np.ascontiguousarray(image)  # dlib refuses strided views


def _crops(crops: np.ndarray, size: int, who: str) -> np.ndarray:
    crops = np.asarray(crops)
    if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
        raise ValueError(
            f"{who}: expected crops (B, {size}, {size}, 3) uint8, got {crops.shape} {crops.dtype}; "
            "use sfsr.faces.analyze.encode_crops, which resizes"
        )
    return crops


def _points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float32)  # (K, 2)


def five_from_68(p: np.ndarray) -> np.ndarray:
    """insightface-order five points from iBUG 68: eye centres, nose tip (30), mouth corners."""
    return np.stack([p[36:42].mean(0), p[42:48].mean(0), p[30], p[48], p[54]]).astype(np.float32)


def _box(size: int, box112: tuple[float, ...]) -> dlib.rectangle:
    s = size / 112.0
    return dlib.rectangle(*(int(round(v * s)) for v in box112))


@dataclass
class HogDetector:
    """dlib HOG detector + 68-point landmarks. Upsamples once (faces >= ~40 px) while the upsampled
    image stays under `max_pixels`; larger images run at native size (faces >= ~80 px)."""

    predictor68: dlib.shape_predictor
    min_score: float = 0.3  # HOG margin; upsampled runs give false hits around 0.1 on clothing
    max_pixels: int = 4_000_000
    name: str = "dlib-hog-68"
    version: str = "20.0"
    _hog: dlib.fhog_object_detector = field(default_factory=dlib.get_frontal_face_detector, repr=False)

    def detect(self, image: np.ndarray) -> list[Detection]:
        img = _image(image)
        up = 1 if img.shape[0] * img.shape[1] * 4 <= self.max_pixels else 0
        rects, scores, _ = self._hog.run(img, up, 0.0)
        out = []
        for r, s in sorted(zip(rects, scores), key=lambda t: -t[1]):
            if s < self.min_score:
                continue
            p68 = _points(self.predictor68(img, r))
            bbox = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], dtype=np.float32)
            out.append(Detection(bbox=bbox, score=float(s), landmarks5=five_from_68(p68), landmarks=p68))
        return out


@dataclass
class DlibIdentity:
    """Aligned crops (B, S, S, 3) -> (B, 128) unit-length dlib ResNet descriptors."""

    predictor5: dlib.shape_predictor
    model: dlib.face_recognition_model_v1
    input_size: int = 256
    name: str = "dlib-resnet-v1"
    version: str = "1"
    output: OutputSpec = OutputSpec(128, "dlib ResNet-34 face descriptor (CC0), L2-normalised; cosine compares")

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        crops = _crops(crops, self.input_size, self.name)
        if len(crops) == 0:
            return np.zeros((0, 128), np.float32)
        box = _box(self.input_size, FACE_BOX_112)
        imgs = [np.ascontiguousarray(c) for c in crops]
        shapes = []
        for c in imgs:
            s = dlib.full_object_detections()
            s.append(self.predictor5(c, box))
            shapes.append(s)
        vecs = np.array([list(v[0]) for v in self.model.compute_face_descriptor(imgs, shapes)], dtype=np.float32)
        return vecs / np.linalg.norm(vecs, axis=1, keepdims=True)  # (B, 128)


def geometry(p: np.ndarray) -> np.ndarray:
    """Six expression measures from iBUG-68 points (any frame with y down), scale-free: lengths
    are divided by the distance between the eye centres."""
    le, re = p[36:42].mean(0), p[42:48].mean(0)
    iod = float(np.linalg.norm(re - le)) + 1e-6
    mouth_open = np.mean([p[66, 1] - p[62, 1], p[67, 1] - p[61, 1], p[65, 1] - p[63, 1]]) / iod
    mouth_width = np.linalg.norm(p[54] - p[48]) / iod
    # corners above the inner-lip midpoint (smaller y) read positive: a smile lifts them
    corner_lift = ((p[62, 1] + p[66, 1]) / 2 - (p[48, 1] + p[54, 1]) / 2) / iod
    brow_raise = ((le[1] - p[17:22, 1].mean()) + (re[1] - p[22:27, 1].mean())) / 2 / iod

    def ear(i: int) -> float:  # eye aspect ratio of the six points from i: height / width
        e = p[i : i + 6]
        return (np.linalg.norm(e[1] - e[5]) + np.linalg.norm(e[2] - e[4])) / (2 * np.linalg.norm(e[0] - e[3]) + 1e-6)

    eye_open = (ear(36) + ear(42)) / 2
    brow_gap = np.linalg.norm(p[22] - p[21]) / iod
    return np.array([mouth_open, mouth_width, corner_lift, brow_raise, eye_open, brow_gap], dtype=np.float32)


@dataclass
class FerGeometryExpression:
    """Aligned crops (B, S, S, 3) -> (B, 13): FER2013 class probabilities, then geometry."""

    net: builtin_fer.MiniXception
    predictor68: dlib.shape_predictor
    input_size: int = 256
    name: str = "fer2013-minixception+geometry68"
    version: str = "1"
    output: OutputSpec = OutputSpec(
        len(builtin_fer.LABELS) + len(GEOMETRY),
        "FER2013 mini-Xception probabilities (fer 25.10.3, MIT) then 68-point geometry ratios",
        builtin_fer.LABELS + GEOMETRY,
    )

    def _fer_input(self, crop: np.ndarray) -> np.ndarray:
        x1, y1, x2, y2 = builtin_fer.fer_box(self.input_size)
        gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        pad = max(0, y2 - gray.shape[0])
        gray = cv2.copyMakeBorder(gray, 0, pad, 0, 0, cv2.BORDER_REPLICATE)
        return cv2.resize(gray[y1:y2, x1:x2], (builtin_fer.INPUT_SIZE,) * 2, interpolation=cv2.INTER_AREA)

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        crops = _crops(crops, self.input_size, self.name)
        if len(crops) == 0:
            return np.zeros((0, self.output.dim), np.float32)
        gray = np.stack([self._fer_input(c) for c in crops])  # (B, 64, 64) uint8
        with torch.inference_mode():
            probs = self.net(builtin_fer.preprocess(gray)).numpy()  # (B, 7)
        box = _box(self.input_size, FACE_BOX_112)
        geo = np.stack([geometry(_points(self.predictor68(np.ascontiguousarray(c), box))) for c in crops])  # (B, 6)
        return np.concatenate([probs, geo], axis=1).astype(np.float32)


def load_builtin(ctx: PackContext) -> FacePack:
    """Loader for kind "builtin" (registered below)."""
    sp68 = dlib.shape_predictor(str(ctx.path("landmarks68")))
    sp5 = dlib.shape_predictor(str(ctx.path("landmarks5")))
    rec = dlib.face_recognition_model_v1(str(ctx.path("identity")))
    net = builtin_fer.load_fer_model(ctx.path("expression"))
    sizes = ctx.manifest.input_size
    return FacePack(
        manifest=ctx.manifest,
        detector=HogDetector(sp68),
        pose=LandmarkPose(),
        identity=DlibIdentity(sp5, rec, input_size=sizes.get("identity", 256)),
        expression=FerGeometryExpression(net, sp68, input_size=sizes.get("expression", 256)),
        location=ctx.location,
    )


register_loader("builtin", load_builtin)
