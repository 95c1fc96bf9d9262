"""Publishing a jobs/train.py model as a pretrained folder with a card that says how it was made."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from sfsr.generate import CARD_NAME, Generator
from sfsr.model.presets import SYNTH_EXPRESSION_ENCODER, SYNTH_IDENTITY_ENCODER, make_model
from sfsr.release.evaluate_synth import record_in_card, verdict
from sfsr.release.publish import publish


def _export(run, job: dict, seconds: float, command: str, commit: str, steps=(10, 20)):
    """What jobs/train.py leaves: RUN/model (EMA weights + run_card.json) and RUN/checkpoint_*."""
    tiny = make_model("tiny", identity_encoder=SYNTH_IDENTITY_ENCODER, expression_encoder=SYNTH_EXPRESSION_ENCODER)
    tiny.save_pretrained(run / "model")
    card = {
        "job": job,
        "train": {"lr": 0.002},
        "metrics": {"step": steps[-1], "train_seconds": seconds, "loss": 0.1},
        "provenance": {"command": command, "git_commit": commit},
    }
    (run / "model" / "run_card.json").write_text(json.dumps(card))
    for step in steps[::-1]:
        (run / f"checkpoint_{step}").mkdir()
        (run / f"checkpoint_{step}" / "metrics.json").write_text(
            json.dumps({"step": step, "loss": 1 / step, "epoch": 0})
        )
    return run


@pytest.fixture
def exported(tmp_path):
    return _export(
        tmp_path / "runs" / "demo",
        {"seed": 7, "steps": 20},
        90.0,
        "python -m jobs.train --preset tiny --steps 20",
        "abc123",
    )


def test_published_folder_loads_in_half_the_size_with_its_provenance(exported, tmp_path):
    dest = tmp_path / "pretrained" / "demo"
    publish(exported / "model", dest, name="sfsr-demo", trained_on="tests", licence="Apache-2.0")
    with safe_open(str(dest / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}
    gen = Generator.from_pretrained(str(dest))
    card = json.loads((dest / CARD_NAME).read_text())
    assert gen.name == "sfsr-demo" and gen.sampling["steps"] == card["sampling"]["steps"]
    assert json.loads((dest / "config.json").read_text())["trained_on"] == "tests"  # config agrees with the card
    assert (gen.info["trained_on"], gen.info["licence"]) == ("tests", "Apache-2.0")
    assert card["command"] == "python -m jobs.train --preset tiny --steps 20" and card["git_commit"] == "abc123"
    assert (card["seed"], card["steps"], card["train_minutes"]) == (7, 20, 1.5)
    history = card["stages"][0]["loss_history"]
    assert [r["step"] for r in history] == [10, 20] and "epoch" not in history[0]


def test_a_fine_tuned_model_lists_every_stage_and_their_total_time(exported, tmp_path):
    stage2 = _export(
        tmp_path / "runs" / "ft",
        {"seed": 1, "init_from": str(exported / "model")},
        30.0,
        "python -m jobs.train --init-from X --steps 5",
        "def456",
        steps=(5,),
    )
    card = publish(stage2 / "model", tmp_path / "out", name="x", trained_on="x", licence="x")
    assert (
        card["command"]
        == "python -m jobs.train --preset tiny --steps 20 && python -m jobs.train --init-from X --steps 5"
    )
    assert (
        card["git_commit"] == "stage 1: abc123; stage 2: def456"
        and card["train_minutes"] == 2.0
        and card["steps"] == 25
    )
    assert [len(st["loss_history"]) for st in card["stages"]] == [2, 1] and card["seed"] == 1


def test_a_model_fine_tuned_from_a_published_one_keeps_its_stages(exported, tmp_path):
    """The committed cpu-demo is a published folder (a card, no run card): a model fine-tuned from
    it lists the published stages first, then its own."""
    published = tmp_path / "published"
    publish(exported / "model", published, name="p", trained_on="x", licence="x")
    stage2 = _export(
        tmp_path / "runs" / "ft2", {"seed": 2, "init_from": str(published)}, 60.0, "python -m jobs.train --words", "f00"
    )
    card = publish(stage2 / "model", tmp_path / "out2", name="x", trained_on="x", licence="x")
    assert card["command"] == "python -m jobs.train --preset tiny --steps 20 && python -m jobs.train --words"
    assert card["git_commit"] == "stage 1: abc123; stage 2: f00" and card["steps"] == 40
    assert card["train_minutes"] == 2.5 and [len(st["loss_history"]) for st in card["stages"]] == [2, 2]


def test_publish_refuses_a_folder_without_a_run_card(tmp_path):
    make_model("tiny").save_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="run_card.json"):
        publish(tmp_path / "m", tmp_path / "out", name="x", trained_on="x", licence="x")


def test_evaluation_rows_land_in_the_card_with_a_verdict(tmp_path):
    m = {
        "swap_identity_rate": 0.5,
        "reenact_word_halfway_rate": 0.9,
        "reenact_driver_halfway_rate": 0.4,
        "background_psnr_db": 26.0,
    }
    v = verdict(m)
    assert v["swap_identity_rate"] == "not met (0.5 vs 0.8)" and v["background_psnr_db"] == "met"
    assert v["reenact_driver_halfway_rate"].startswith("not met")
    (tmp_path / CARD_NAME).write_text(json.dumps({"name": "x", "metrics": {"old": 1}}))
    record_in_card(str(tmp_path), "held_out_acceptance", {**m, "verdict": v})
    card = json.loads((tmp_path / CARD_NAME).read_text())
    assert card["name"] == "x" and card["metrics"]["old"] == 1
    assert card["metrics"]["held_out_acceptance"]["verdict"] == v
