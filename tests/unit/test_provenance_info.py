"""Provenance of the committed model: its card's name, trained_on and licence reach the config,
Generator.info and the Serve summary, and a model conditioned on the synthetic judges warns."""

from __future__ import annotations

import json
from pathlib import Path

from deployments.generator import model_summary
from sfsr.generate import Generator, synthetic_warning

COMMITTED = Path(__file__).resolve().parents[2] / "sfsr" / "model" / "pretrained" / "cpu-demo"


def test_committed_model_says_what_it_was_trained_on_and_warns() -> None:
    card = json.loads((COMMITTED / "sfsr_card.json").read_text())
    config = json.loads((COMMITTED / "config.json").read_text())
    assert config["trained_on"] == card["trained_on"] and "synthetic" in card["trained_on"]
    info = Generator.from_pretrained(str(COMMITTED)).info
    assert (info["model"], info["trained_on"], info["licence"]) == (card["name"], card["trained_on"], card["licence"])
    assert info["warning"] == synthetic_warning(info["conditioning"]["identity"]) and "jobs.train" in info["warning"]
    summary = model_summary(info, "sha256:x")
    assert (summary["trained_on"], summary["licence"], summary["warning"]) == (
        card["trained_on"],
        card["licence"],
        info["warning"],
    )


def test_only_synthetic_conditioned_models_warn() -> None:
    assert synthetic_warning("insightface-arcface@w600k_r50") is None
    assert synthetic_warning("synth-judge-identity-32px") is not None
    # a model folder without a card falls back to its config and says what is not recorded
    summary = model_summary({"resolution": 64, "model": "m", "trained_on": "", "warning": None}, "v")
    assert summary["trained_on"] == summary["licence"] == "not recorded in the model folder"
    assert summary["warning"] is None
