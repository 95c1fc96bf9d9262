"""SCRFD face detection (insightface's det_10g / scrfd_*_kps models) through onnxruntime.

Pre- and post-processing follow insightface's `model_zoo/scrfd.py`, so the same weights give
the same boxes: letterbox the image into the detector size (aspect kept, padded right and
bottom with black), normalise (x - 127.5) / 128, decode per-stride distance predictions around
anchor centres (x = col * stride, y = row * stride, `num_anchors` per cell), keep scores at or
above the threshold, then greedy NMS at IoU 0.4. The output layout is read from the graph: 9
outputs = strides 8/16/32 with 2 anchors, 15 = strides 8..128 with 1 anchor (with keypoints);
6 or 10 outputs are the keypoint-free variants, which sfsr cannot use (alignment needs the five
points).
"""

from __future__ import annotations

import cv2
import numpy as np

from sfsr.faces.base import Detection
from sfsr.faces.insightface_runtime import OnnxNet

# (number of outputs) -> (strides, anchors per cell, has keypoints); insightface's table.
_LAYOUTS = {
    6: ((8, 16, 32), 2, False),
    9: ((8, 16, 32), 2, True),
    10: ((8, 16, 32, 64, 128), 1, False),
    15: ((8, 16, 32, 64, 128), 1, True),
}


def letterbox(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float]:
    """Fit `image` (H, W, 3) into `size` = (width, height), top-left, black padding.

    Returns the (height, width, 3) detector image and the scale (detector px per image px).
    Rounding follows insightface (int() of the scaled side) so boxes match its numbers.
    """
    w, h = size
    ih, iw = image.shape[:2]
    if ih / iw > h / w:
        new_h, new_w = h, int(h / (ih / iw))
    else:
        new_w, new_h = w, int(w * (ih / iw))
    new_w, new_h = max(new_w, 1), max(new_h, 1)
    scale = new_h / ih
    out = np.zeros((h, w, 3), dtype=np.uint8)
    out[:new_h, :new_w] = cv2.resize(image, (new_w, new_h))
    return out, scale


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy NMS over (N, 4) x1, y1, x2, y2 boxes, highest score first; kept indices.

    Areas use insightface's +1 pixel convention so the same candidates survive as there.
    """
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[iou <= iou_threshold]
    return keep


class ScrfdDetector:
    """`Detector` for SCRFD models with five keypoints."""

    def __init__(
        self,
        net: OnnxNet,
        *,
        name: str = "scrfd",
        version: str = "",
        det_size: int = 640,
        score_threshold: float = 0.5,
        nms_threshold: float = 0.4,
        max_faces: int = 0,
    ):
        n = len(net.output_names)
        if n not in _LAYOUTS:
            raise ValueError(
                f"{net.path}: {n} outputs; an SCRFD detector has 6, 9, 10 or 15 (scores, boxes[, keypoints] per stride)"
            )
        self.strides, self.num_anchors, has_kps = _LAYOUTS[n]
        if not has_kps:
            raise ValueError(
                f"{net.path}: this SCRFD model predicts no keypoints ({n} outputs); sfsr aligns "
                "faces on five points, so use a *_kps / *_bnkps model such as det_10g.onnx"
            )
        self.net = net
        self.name = name
        self.version = version
        # A model exported at a fixed size can only run at that size; a dynamic one at det_size.
        if net.height is not None and net.width is not None:
            self.input_size = (net.width, net.height)
        else:
            if det_size % 32:
                raise ValueError(f"detector size {det_size} must be a multiple of 32 (the largest stride)")
            self.input_size = (det_size, det_size)
        self.score_threshold = float(score_threshold)
        self.nms_threshold = float(nms_threshold)
        self.max_faces = int(max_faces)
        self._centres: dict[tuple[int, int, int], np.ndarray] = {}

    def _anchor_centres(self, rows: int, cols: int, stride: int) -> np.ndarray:
        key = (rows, cols, stride)
        if key not in self._centres:
            yy, xx = np.mgrid[:rows, :cols]
            c = np.stack([xx, yy], -1).reshape(-1, 2).astype(np.float32) * stride  # (rows*cols, 2)
            self._centres[key] = np.repeat(c, self.num_anchors, axis=0)  # (rows*cols*A, 2), anchor fastest
        return self._centres[key]

    def raw(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """All candidates above the score threshold before NMS, in source-image pixels:
        boxes (N, 4), scores (N,), keypoints (N, 5, 2), highest score first."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"detector input must be an RGB uint8 (H, W, 3) image, got {image.shape} {image.dtype}")
        det_img, scale = letterbox(image, self.input_size)
        outs = self.net.run(self.net.blob(det_img[None]))
        fmc = len(self.strides)
        height, width = det_img.shape[:2]
        boxes, scores, kpss = [], [], []
        for idx, stride in enumerate(self.strides):
            # rank 3 outputs carry a batch axis (batched exports); rank 2 do not (det_10g)
            score = outs[idx][0] if outs[idx].ndim == 3 else outs[idx]  # (N, 1)
            dist = (outs[idx + fmc][0] if outs[idx + fmc].ndim == 3 else outs[idx + fmc]) * stride  # (N, 4)
            kdist = (outs[idx + 2 * fmc][0] if outs[idx + 2 * fmc].ndim == 3 else outs[idx + 2 * fmc]) * stride
            centres = self._anchor_centres(height // stride, width // stride, stride)
            if len(centres) != len(score):
                raise RuntimeError(
                    f"{self.net.path}: stride {stride} gave {len(score)} scores for "
                    f"{len(centres)} anchors; the model's layout is not SCRFD's"
                )
            keep = np.where(score.reshape(-1) >= self.score_threshold)[0]
            c = centres[keep]
            d = dist[keep]
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], 1))  # (n, 4)
            kpss.append(c[:, None, :] + kdist[keep].reshape(-1, 5, 2))  # (n, 5, 2)
            scores.append(score.reshape(-1)[keep])
        all_scores = np.concatenate(scores).astype(np.float32)
        order = np.argsort(-all_scores, kind="stable")
        all_boxes = (np.concatenate(boxes) / scale).astype(np.float32)[order]
        all_kps = (np.concatenate(kpss) / scale).astype(np.float32)[order]
        return all_boxes, all_scores[order], all_kps

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in one RGB uint8 image (H, W, 3), highest score first."""
        boxes, scores, kps = self.raw(image)
        keep = nms(boxes, scores, self.nms_threshold) if len(scores) else []
        if self.max_faces > 0:
            keep = keep[: self.max_faces]
        return [Detection(bbox=boxes[i], score=float(scores[i]), landmarks5=kps[i]) for i in keep]
