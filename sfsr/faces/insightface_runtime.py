"""onnxruntime sessions for insightface model files: provider choice, input spec, normalisation.

Every network of an insightface pack is an `OnnxNet`: one InferenceSession plus what the
pre-processing needs to know about its input (name, batch and spatial sizes, normalisation).
insightface feeds its networks RGB tensors (it reads BGR images and swaps channels in
`cv2.dnn.blobFromImage(..., swapRB=True)`); sfsr images are RGB already, so `blob` only
transposes and normalises.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from sfsr.faces.pack import Normalisation

# Accelerated first, CPU as the fallback onnxruntime uses for operators the accelerator lacks.
# TensorRT is left out of the default on purpose: it compiles an engine per input shape, which
# takes minutes and suits a tuned deployment, not a default; ask for it with `providers=`.
PROVIDER_PREFERENCE = ("CUDAExecutionProvider", "CPUExecutionProvider")
CPU = "CPUExecutionProvider"


def select_providers(requested: Sequence[str] | None = None, available: Sequence[str] | None = None) -> list[str]:
    """The onnxruntime providers to open sessions with, best first.

    `requested` None: CUDA when this onnxruntime build has it, then CPU. Otherwise `requested`
    in the caller's order, keeping those that are available (a warning names the ones dropped)
    and adding CPU last as the fallback. `available` defaults to
    `onnxruntime.get_available_providers()` (tests pass a fake list).
    """
    avail = list(ort.get_available_providers() if available is None else available)
    if requested is None:
        chosen = [p for p in PROVIDER_PREFERENCE if p in avail]
        if not chosen:
            raise RuntimeError(
                f"onnxruntime offers neither CUDA nor CPU execution (available: {avail}); "
                "reinstall onnxruntime (CPU) or onnxruntime-gpu"
            )
        return chosen
    wanted = list(requested)
    chosen = [p for p in wanted if p in avail]
    dropped = [p for p in wanted if p not in avail]
    if not chosen:
        raise ValueError(
            f"none of the requested onnxruntime providers {wanted} is available (available: {avail}); "
            "for CUDAExecutionProvider install onnxruntime-gpu instead of onnxruntime "
            "(pip uninstall -y onnxruntime && pip install 'sfsr[gpu]'), or pass providers=None"
        )
    if dropped:
        warnings.warn(
            f"onnxruntime providers {dropped} are not available here (available: {avail}); running with {chosen}",
            RuntimeWarning,
            stacklevel=2,
        )
    if CPU in avail and CPU not in chosen:
        chosen.append(CPU)
    return chosen


def graph_normalisation(path: str | Path, role: str) -> Normalisation:
    """insightface's own rule for a network's input normalisation, for manifests that give none.

    MXNet exports normalise inside the graph and get raw 0..255 pixels: insightface recognises
    them by nodes named Sub/_minus and Mul/_mul among the first eight (or, for landmark and
    attribute models, a "bn_data" node among the first three). Other recognisers get
    (x - 127.5) / 127.5, other landmark models (x - 127.5) / 128 (model_zoo/arcface_onnx.py,
    landmark.py).
    """
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    names = [n.name for n in nodes[:8]]
    inside = any(n.startswith(("Sub", "_minus")) for n in names) and any(n.startswith(("Mul", "_mul")) for n in names)
    if role != "identity":
        inside = inside or any(n.name == "bn_data" for n in nodes[:3])
    if inside:
        return Normalisation((0.0,) * 3, (1.0,) * 3)
    return Normalisation((127.5,) * 3, (127.5,) * 3 if role == "identity" else (128.0,) * 3)


def _dim(value: object) -> int | None:
    """A fixed dimension as int; None for a symbolic one ("None", "?", "batch", ...)."""
    return int(value) if isinstance(value, (int, np.integer)) and int(value) > 0 else None


class OnnxNet:
    """One model file in one onnxruntime session."""

    def __init__(self, path: str | Path, providers: Sequence[str], normalisation: Normalisation, role: str):
        self.path = Path(path)
        self.role = role
        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime's warnings about unused initialisers are noise here
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=list(providers))
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise RuntimeError(
                f"{self.path}: onnxruntime cannot load this {role} model ({e}); "
                "re-download the file or check that it is the one the manifest names"
            ) from e
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{self.path}: the {role} model has {len(inputs)} inputs; insightface models have one")
        shape = list(inputs[0].shape)
        if len(shape) != 4 or _dim(shape[1]) not in (None, 3):
            raise ValueError(f"{self.path}: the {role} model's input is {shape}; expected (N, 3, H, W) images")
        self.input_name = inputs[0].name
        self.batch = _dim(shape[0])  # None: any batch size
        self.height, self.width = _dim(shape[2]), _dim(shape[3])  # None: dynamic
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_shapes = [list(o.shape) for o in self.session.get_outputs()]
        mean = np.asarray(normalisation.mean, np.float32).reshape(-1)
        std = np.asarray(normalisation.std, np.float32).reshape(-1)
        if mean.size not in (1, 3) or std.size not in (1, 3) or np.any(std == 0):
            raise ValueError(
                f"{self.path}: normalisation mean {normalisation.mean} / std {normalisation.std} "
                "needs 1 or 3 values each and no zero std"
            )
        self.mean = np.broadcast_to(mean, (3,)).reshape(1, 3, 1, 1)
        self.std = np.broadcast_to(std, (3,)).reshape(1, 3, 1, 1)

    @property
    def providers(self) -> tuple[str, ...]:
        """The providers the session actually runs with (CUDA may have failed to initialise)."""
        return tuple(self.session.get_providers())

    @property
    def square_size(self) -> int | None:
        return self.height if self.height is not None and self.height == self.width else None

    def blob(self, images: np.ndarray) -> np.ndarray:
        """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32, normalised for this network."""
        x = np.asarray(images, dtype=np.float32).transpose(0, 3, 1, 2)
        return np.ascontiguousarray((x - self.mean) / self.std, dtype=np.float32)

    def run(self, blob: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: blob})

    def run_batched(self, images: np.ndarray, max_batch: int = 32) -> np.ndarray:
        """Run the first output over (B, H, W, 3) images in chunks; (B, ...) float32.

        Chunks of `max_batch` bound memory; a model exported with a fixed batch size of 1 is
        called once per image.
        """
        step = self.batch if self.batch is not None else max_batch
        if self.batch not in (None, 1):
            raise ValueError(
                f"{self.path}: the {self.role} model has fixed batch size {self.batch}; "
                "sfsr runs models with a dynamic batch or batch 1"
            )
        outs = [self.run(self.blob(images[i : i + step]))[0] for i in range(0, len(images), step)]
        return np.concatenate(outs, 0).astype(np.float32, copy=False)


def check_crops(crops: np.ndarray, what: str) -> np.ndarray:
    """Validate a batch of aligned crops: (B, S, S, 3) uint8."""
    a = np.asarray(crops)
    if a.ndim != 4 or a.shape[3] != 3 or a.shape[1] != a.shape[2] or a.dtype != np.uint8:
        raise ValueError(f"{what}: expected aligned crops as a (B, S, S, 3) uint8 array, got {a.shape} {a.dtype}")
    return a
