"""The DiffSFSR network, its presets and its training step (DESIGN.md, "The model")."""

from sfsr.model.diffsfsr import DiffSFSR
from sfsr.model.presets import PRESETS, make_model, preset_config, sd_init

__all__ = ["PRESETS", "DiffSFSR", "make_model", "preset_config", "sd_init"]
