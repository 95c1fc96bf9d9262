"""A model folder's card (sfsr_card.json, written by sfsr.release.publish) and the sampling
defaults it overrides, readable without torch: a job's driver plans with them (jobs/generate.py)
while only its actors load the model (sfsr.generate.Generator, which reads the card here too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CARD_NAME = "sfsr_card.json"
# what sampling starts from: fresh noise, or the background image's own DDIM inversion
# (sfsr.diffusion.sampling.invert), which keeps what the request does not change closer to it
INITS = ("noise", "inversion")
DEFAULT_SAMPLING = {
    "steps": 25,
    "guidance_identity": 2.0,
    "guidance_expression": 2.0,
    "guidance_mode": "compositional",
    "sampler": "ddim",
    "init": INITS[0],
}


def read_card(folder: str | Path) -> dict[str, Any]:
    """The card of a local model folder, {} when it has none."""
    path = Path(folder) / CARD_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def sampling_defaults(card: dict[str, Any]) -> dict[str, Any]:
    """DEFAULT_SAMPLING with the card's own sampling settings over it."""
    return {**DEFAULT_SAMPLING, **card.get("sampling", {})}
