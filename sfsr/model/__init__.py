"""The DiffSFSR network, its presets and its training step (DESIGN.md, "The model").

The names below load on first use: `import sfsr.model.checkpoint` (a job's driver, publish) then
does not import diffusers and the network (~3 s on 2 cores)."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sfsr.model.diffsfsr import DiffSFSR
    from sfsr.model.presets import PRESETS, make_model, preset_config, sd_init

__all__ = ["PRESETS", "DiffSFSR", "make_model", "preset_config", "sd_init"]
_HOMES = {"DiffSFSR": "sfsr.model.diffsfsr"} | dict.fromkeys(
    ("PRESETS", "make_model", "preset_config", "sd_init"), "sfsr.model.presets"
)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'sfsr.model' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
