"""The face-analysis deployment: detect and align faces with a face pack (sfsr.faces).

Faces are framed the one way ingest frames them (sfsr.faces.analyze.analyze_image: aligned at
max(crop size, min_align_size), masked there, then area-reduced to the model's crop size), so a
served photo's crop and mask are the pixels a model trained on such a table saw. Detection runs
in a worker thread so the replica keeps answering Serve's probes, one
image at a time: dlib's detector crashes the process (SIGSEGV) when two threads call it at once,
so concurrency comes from replicas (autoscaling), not threads.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import numpy as np
from ray import serve

from deployments.settings import AnalysisSettings, from_dict
from sfsr.faces import FaceRecord, analyze_image, open_pack

logger = logging.getLogger("ray.serve")


@serve.deployment(name="FaceAnalysis")
class FaceAnalysis:
    def __init__(self) -> None:
        self.settings: AnalysisSettings | None = None
        self.pack: Any = None
        self._lock = threading.Lock()  # packs are not thread-safe (see the module docstring)

    def reconfigure(self, config: dict[str, Any]) -> None:
        import cv2

        settings = from_dict(AnalysisSettings, config, "FaceAnalysis user_config")
        if self.settings is None or settings.pack != self.settings.pack:
            self.pack = open_pack(settings.pack)
            logger.info("FaceAnalysis: face pack %s loaded", settings.pack)
        cv2.setNumThreads(settings.threads)
        self.settings = settings

    def _analyze(self, image: np.ndarray, crop_size: int) -> list[FaceRecord]:
        with self._lock:
            return analyze_image(self.pack, image, crop_size, align_size=self.settings.min_align_size)

    async def analyze(self, image: np.ndarray, crop_size: int) -> list[FaceRecord]:
        """Every face in an (H, W, 3) uint8 RGB image, aligned to crop_size, most confident first."""
        return await asyncio.to_thread(self._analyze, image, crop_size)

    def check_health(self) -> None:
        if self.pack is None:
            raise RuntimeError("FaceAnalysis: no face pack loaded")
