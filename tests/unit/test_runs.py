"""sfsr.model.runs finds a run's model checkpoints in either trainer's layout, in step order."""

from __future__ import annotations

import json

import pytest

from sfsr.model.runs import model_checkpoints


def _model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_ray_train_layout_is_ordered_by_the_recorded_step_not_the_folder_name(tmp_path):
    # Ray Train names checkpoints by time; a resumed run's names do not sort by step
    for name, step in [("checkpoint_2026-01-02_00-00-00.0", 1000), ("checkpoint_2026-01-01_00-00-00.0", 1500),
                       ("checkpoint_2026-01-03_00-00-00.0", 500)]:
        _model(tmp_path / name / "model")
        (tmp_path / name / "metrics.json").write_text(json.dumps({"step": step, "loss": 0.1}))
    (tmp_path / "checkpoint_2026-01-04_00-00-00.0").mkdir()  # half-written: no metrics, no model
    got = model_checkpoints(tmp_path)
    assert [s for s, _ in got] == [500, 1000, 1500]
    assert all(p.name == "model" and (p / "config.json").is_file() for _, p in got)


def test_train_local_layout(tmp_path):
    for step in (250, 1000, 75):
        _model(tmp_path / "checkpoints" / f"step-{step:07d}")
    assert [s for s, _ in model_checkpoints(tmp_path)] == [75, 250, 1000]


def test_no_checkpoints_and_s3_runs_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        model_checkpoints(tmp_path)
    with pytest.raises(ValueError, match="copy the run down"):
        model_checkpoints("s3://sfsr/runs/demo")
