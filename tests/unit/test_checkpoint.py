"""sfsr.model.checkpoint: the one run layout, written and read back, checkpoints in step order."""

from __future__ import annotations

import json

import pytest

from sfsr.model import checkpoint
from sfsr.model.checkpoint import model_checkpoints


def _model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_ray_train_layout_is_ordered_by_the_recorded_step_not_the_folder_name(tmp_path):
    # Ray Train names checkpoints by time; a resumed run's names do not sort by step
    for name, step in [
        ("checkpoint_2026-01-02_00-00-00.0", 1000),
        ("checkpoint_2026-01-01_00-00-00.0", 1500),
        ("checkpoint_2026-01-03_00-00-00.0", 500),
    ]:
        _model(tmp_path / name / "model")
        (tmp_path / name / "metrics.json").write_text(json.dumps({"step": step, "loss": 0.1}))
    (tmp_path / "checkpoint_2026-01-04_00-00-00.0").mkdir()  # half-written: no metrics, no model
    got = model_checkpoints(tmp_path)
    assert [s for s, _ in got] == [500, 1000, 1500]
    assert all(p.name == "model" and (p / "config.json").is_file() for _, p in got)


def test_a_checkpoint_pruned_while_it_is_being_read_is_left_out(tmp_path, monkeypatch):
    # a live run deletes checkpoints past num_to_keep: one found by the listing may be gone when read
    for name, step in [("checkpoint_2026-01-01_00-00-00.0", 5), ("checkpoint_2026-01-02_00-00-00.0", 10)]:
        _model(tmp_path / name / "model")
        (tmp_path / name / "metrics.json").write_text(json.dumps({"step": step}))
    pruned = tmp_path / "checkpoint_2026-01-01_00-00-00.0" / "metrics.json"
    read_text = type(pruned).read_text

    def vanishing(self, *a, **k):
        if self == pruned:
            raise FileNotFoundError(self)
        return read_text(self, *a, **k)

    monkeypatch.setattr(type(pruned), "read_text", vanishing)
    assert [s for s, _ in model_checkpoints(tmp_path)] == [10]
    assert checkpoint.checkpoint_metrics(tmp_path) == [{"step": 10}]


def test_no_checkpoints_and_s3_runs_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match=str(tmp_path)):
        model_checkpoints(tmp_path)
    with pytest.raises(ValueError, match="copy the run down"):
        model_checkpoints("s3://sfsr/runs/demo")


def test_what_write_stores_read_and_model_checkpoints_give_back(tmp_path):
    from sfsr.model import make_model
    from sfsr.model.training import EMA, TrainConfig, load_training_state, make_optimizer, training_state

    model = make_model("tiny", seed=3)
    ema = EMA(model, 0.9)
    opt, sched = make_optimizer(model, TrainConfig(total_steps=10))
    folder = tmp_path / "checkpoint_2026-01-01_00-00-00.0"
    folder.mkdir()
    position = {"epoch": 2, "batch_in_epoch": 5, "train_seconds": 12.5}
    checkpoint.write(folder, training_state(model, ema, opt, sched, 7), position, {"step": 7, "loss": 0.25}, ema.model)

    state, pos = checkpoint.read(folder)
    assert pos == position
    fresh = make_model("tiny", seed=4)
    opt2, sched2 = make_optimizer(fresh, TrainConfig(total_steps=10))
    assert load_training_state(state, fresh, None, opt2, sched2) == 7
    w0, w1 = next(iter(model.state_dict().values())), next(iter(fresh.state_dict().values()))
    assert w0.equal(w1)
    assert [s for s, _ in model_checkpoints(tmp_path)] == [7]
    assert checkpoint.checkpoint_metrics(tmp_path) == [{"step": 7, "loss": 0.25}]


def test_a_folder_without_state_is_refused_naming_what_is_missing(tmp_path):
    with pytest.raises(ValueError, match="position.json"):
        (tmp_path / checkpoint.STATE).write_bytes(b"")
        checkpoint.read(tmp_path)


def test_metrics_without_a_step_are_refused(tmp_path):
    with pytest.raises(ValueError, match="step"):
        checkpoint.write(tmp_path, {}, {}, {"loss": 1.0}, None)
