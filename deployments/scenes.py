"""The text-to-image deployment: a background scene from `background_prompt` (sfsr.scenes).

Why a deployment of its own, and not a method of Generator or FaceAnalysis: a Stable Diffusion
pipeline is a 4 GB model that takes seconds (GPU) to minutes (CPU) per image. Inside FaceAnalysis
it would be loaded by every detection replica and hold detections up behind it; inside Generator
it would share that replica's batches and GPU, and slow every swap to load. Here it has its own
resources (ray_actor_options: give it `num_gpus` on a GPU cluster), its own replica count, and
its own setting, `user_config.text_to_image` (null by default). Unconfigured it costs nothing:
deployments/serve_config.yaml scales it to zero replicas when idle, so a cluster without a
text-to-image folder never holds a replica for it; the first prompt after an idle spell waits for
a replica to start (and load the pipeline), and requests with a prompt are answered 422
`text_to_image_not_configured` while no folder is set.

Generation runs in a worker thread (so the replica keeps answering Serve's probes), one scene at a
time (a pipeline is not re-entrant).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve

from deployments.settings import SceneSettings, from_dict, torch_device
from deployments.validation import ApiError

logger = logging.getLogger("ray.serve")
SETTING = "Scenes user_config.text_to_image"


@dataclass(frozen=True)
class Scene:
    """One generated background and what made it (recorded in the output's provenance)."""

    image: np.ndarray = field(repr=False)  # (H, W, 3) uint8 RGB
    prompt: str
    seed: int
    text_to_image: str  # the folder's name
    steps: int
    guidance: float
    seconds: float

    def provenance(self) -> dict[str, str]:
        """PNG text chunks (sfsr.watermark.provenance keys) saying the background came from a prompt."""
        return {
            "background": "text-to-image",
            "background_prompt": self.prompt,
            "background_seed": str(self.seed),
            "text_to_image": self.text_to_image,
        }


def not_configured() -> ApiError:
    """The answer to a background_prompt while no text-to-image folder is set."""
    return ApiError(
        422,
        "text_to_image_not_configured",
        f"background_prompt needs a text-to-image model and this server has none: set {SETTING} in "
        "deployments/serve_config.yaml to a Stable Diffusion folder (diffusers layout, local path or "
        "s3://) and redeploy, or send a background photo as background instead",
        "background_prompt",
    )


@serve.deployment(name="Scenes")
class Scenes:
    def __init__(self) -> None:
        self.settings: SceneSettings | None = None
        self.model: Any = None  # sfsr.scenes.TextToImage, or None when unconfigured
        self._lock = threading.Lock()

    def reconfigure(self, config: dict[str, Any]) -> None:
        settings = from_dict(SceneSettings, config, "Scenes user_config")
        old = self.settings
        if old is None or (settings.folder, settings.device) != (old.folder, old.device):
            self.model = self._load(settings) if settings.folder else None
        self.settings = settings

    def _load(self, settings: SceneSettings) -> Any:
        import torch

        from sfsr.scenes import TextToImage

        torch.set_num_threads(settings.torch_threads)
        device = torch_device(settings.device)
        t0 = time.perf_counter()
        try:
            model = TextToImage.from_pretrained(settings.folder, device=device)
        except FileNotFoundError as e:
            raise RuntimeError(f"{SETTING}={settings.text_to_image!r}: {e}") from None
        logger.info("Scenes: loaded %s on %s in %.1f s", settings.folder, device, time.perf_counter() - t0)
        return model

    def _render(self, prompt: str, seed: int) -> Scene:
        s = self.settings
        t0 = time.perf_counter()
        with self._lock:
            image = self.model.background(
                prompt, seed=seed, width=s.width, height=s.height, steps=s.steps, guidance=s.guidance
            )
        return Scene(image, prompt, seed, self.model.name, s.steps, s.guidance, round(time.perf_counter() - t0, 3))

    async def background(self, prompt: str, seed: int) -> Scene | None:
        """A background for `prompt`, or None when no text-to-image folder is configured."""
        if self.model is None:
            return None
        return await asyncio.to_thread(self._render, prompt, seed)
