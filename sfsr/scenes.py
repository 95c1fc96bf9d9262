"""Backgrounds from a text prompt, and where the person goes in them (the paper's portrait flow:
a selfie, an emotion word and a background prompt make a portrait).

    scenes = TextToImage.from_pretrained("/models/stable-diffusion-v1-5")      # or s3://...
    scene = scenes.background("a beach at sunset", seed=7, width=512, height=512)   # (H, W, 3) uint8
    face = place_head(scene, default_head_box(512, 512), crop_size=32)         # a FaceRecord
    crop = generator.generate(identity, expression="joy", background_images=face.crop, masks=face.mask)
    portrait = paste_back(scene, crop[0], face.align_matrix, face.mask)        # deployments.compose

The text-to-image model is a Stable Diffusion folder in the diffusers layout (model_index.json,
unet/, vae/, text_encoder/, tokenizer/, scheduler/), loaded with local files only: nothing is
fetched from a model hub. Its weights are the user's (SD 1.5: CreativeML OpenRAIL-M).

A placement is framed the one way every face is (sfsr.faces.analyze): the five template points of
a crop covering the head box are aligned with sfsr.faces.align.align_face at ALIGN_SIZE, masked
with the template ellipse there, then area-reduced to the model's crop size, so the generated
crop pastes back exactly where the box says.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sfsr.faces.align import align_face, template
from sfsr.faces.analyze import ALIGN_SIZE, TEMPLATE_ELLIPSE_112, FaceRecord, downscale_face, face_mask
from sfsr.faces.base import Pose
from sfsr.io.cache import local_folder

# Files every Stable Diffusion folder has (the first one missing is named in the error).
REQUIRED_FILES = (
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer/tokenizer_config.json",
    "scheduler/scheduler_config.json",
)
# Sensible for a real SD 1.5 folder (its own defaults: 50 PNDM steps, guidance 7.5; 25 suffice).
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
DEFAULT_SIZE = 512
SIZE_MULTIPLE = 8  # StableDiffusionPipeline refuses other widths and heights
# Default portrait placement: head centred horizontally, its centre a third of the way down, the
# head (the template ellipse's width) a third of the image width.
DEFAULT_HEAD_CENTRE = (0.5, 1 / 3)
DEFAULT_HEAD_WIDTH = 1 / 3
MIN_HEAD_PX = 4  # narrower heads cannot be aligned (the five points nearly coincide)


def check_folder(folder: str | Path) -> Path:
    """`folder` as a Path if it looks like a Stable Diffusion pipeline, else FileNotFoundError
    naming the first missing file."""
    path = Path(folder)
    for name in REQUIRED_FILES:
        if not (path / name).is_file():
            raise FileNotFoundError(
                f"{folder}: no {name}; expected a Stable Diffusion folder in the diffusers layout "
                f"({', '.join(REQUIRED_FILES)} and the weights), e.g. one written by "
                "StableDiffusionPipeline.save_pretrained"
            )
    return path


@dataclass
class TextToImage:
    """A loaded text-to-image pipeline and the name it is reported under."""

    pipeline: Any = field(repr=False)  # diffusers.StableDiffusionPipeline
    name: str

    @classmethod
    def from_pretrained(cls, uri: str, *, cache_dir: str | None = None, device: str = "cpu") -> TextToImage:
        """Load a Stable Diffusion folder, local or s3:// (copied into a cache keyed by its content,
        sfsr.io.cache); never from a model hub."""
        local = check_folder(local_folder(str(uri), cache_dir))
        from diffusers import StableDiffusionPipeline  # heavy, and only needed here

        pipe = StableDiffusionPipeline.from_pretrained(str(local), local_files_only=True)
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, folder_name(uri))

    def background(
        self,
        prompt: str,
        *,
        seed: int,
        width: int = DEFAULT_SIZE,
        height: int = DEFAULT_SIZE,
        steps: int = DEFAULT_STEPS,
        guidance: float = DEFAULT_GUIDANCE,
    ) -> np.ndarray:
        """(height, width, 3) uint8 RGB scene for `prompt`; the same seed gives the same image."""
        import torch

        if not prompt or not prompt.strip():
            raise ValueError("prompt: empty; describe the background, e.g. 'a beach at sunset'")
        m = SIZE_MULTIPLE
        if width % m or height % m or width < m or height < m:
            raise ValueError(f"background size {width}x{height}: both sides must be positive multiples of {m}")
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        with torch.no_grad():
            out = self.pipeline(
                prompt,
                height=height,
                width=width,
                num_inference_steps=int(steps),
                guidance_scale=float(guidance),
                generator=generator,
                output_type="np",
            ).images  # (1, H, W, 3) float in [0, 1]
        return (np.clip(out[0], 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def folder_name(uri: str) -> str:
    """The name a text-to-image folder is reported under: its last path part, so the same folder
    copied from a disk to s3:// keeps its name."""
    return str(uri).rstrip("/").rsplit("/", 1)[-1]


def provenance(prompt: str, seed: int, text_to_image: str) -> dict[str, str]:
    """The provenance of an output whose background was made from `prompt` (sfsr.watermark.provenance
    keyword arguments; the Serve API's Scene.provenance writes the same keys)."""
    return {
        "background": "text-to-image",
        "background_prompt": prompt,
        "background_seed": str(seed),
        "text_to_image": text_to_image,
    }


def default_seed(prompt: str) -> int:
    """The seed of a prompt given without one: a hash of the text (same prompt, same scene)."""
    return int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "big") & (2**31 - 1)


def default_head_box(width: int, height: int) -> tuple[float, float, float, float]:
    """The default portrait placement in a width x height scene: x1, y1, x2, y2 pixels of a head
    a third of the width wide, centred horizontally, its centre a third of the way down."""
    ax, ay = TEMPLATE_ELLIPSE_112[2:]
    w = DEFAULT_HEAD_WIDTH * width
    h = w * ay / ax  # the template ellipse's aspect
    cx, cy = DEFAULT_HEAD_CENTRE[0] * width, DEFAULT_HEAD_CENTRE[1] * height
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def box_from_fractions(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, ...]:
    """A head box given as fractions of the scene's width and height -> pixels."""
    x1, y1, x2, y2 = box
    return (x1 * width, y1 * height, x2 * width, y2 * height)


def head_landmarks(box: tuple[float, float, float, float]) -> np.ndarray:
    """(5, 2) template points of a face whose template ellipse fits inside `box` (x1, y1, x2, y2
    pixels), centred on it: the pseudo-detection that places a head where none is."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1):
        raise ValueError(f"head box {box}: need x1 < x2 and y1 < y2 (pixels x1, y1, x2, y2)")
    cx, cy, ax, ay = TEMPLATE_ELLIPSE_112  # in a 112 px crop
    side = min((x2 - x1) / (2 * ax), (y2 - y1) / (2 * ay)) * 112.0  # crop side in scene pixels
    if side * 2 * ax / 112.0 < MIN_HEAD_PX:
        raise ValueError(
            f"head box {box}: the head would be {side * 2 * ax / 112.0:.1f} px wide; give a box at least "
            f"{MIN_HEAD_PX} px wide and {MIN_HEAD_PX * ay / ax:.0f} px tall"
        )
    s = side / 112.0
    origin = np.array([(x1 + x2) / 2 - cx * s, (y1 + y2) / 2 - cy * s], np.float32)
    return template(112) * s + origin


def place_head(scene: np.ndarray, box: tuple[float, float, float, float], crop_size: int) -> FaceRecord:
    """The aligned crop, source -> crop matrix and mask of a head placed at `box` in `scene`,
    framed like every detected face (aligned at max(crop_size, ALIGN_SIZE), then area-reduced)."""
    if scene.dtype != np.uint8 or scene.ndim != 3 or scene.shape[2] != 3:
        raise ValueError(f"place_head: scene must be (H, W, 3) uint8 RGB, got {scene.shape} {scene.dtype}")
    lm5 = head_landmarks(box)
    size = max(crop_size, ALIGN_SIZE)
    crop, matrix = align_face(scene, lm5, size)
    face = FaceRecord(
        face_index=0,
        bbox=np.asarray(box, np.float32),
        score=1.0,
        landmarks5=lm5.astype(np.float32),
        landmarks=None,
        align_matrix=matrix,
        crop=crop,
        mask=face_mask(None, size),
        pose=Pose(0.0, 0.0, 0.0),
    )
    return downscale_face(face, crop_size)
