"""The one layout of a training run on disk: what jobs/train.py writes, and everyone else reads.

    RUN/                          --storage/--name of jobs/train.py (local; copy s3:// runs down)
      checkpoint_<timestamp>/     one per --checkpoint-every steps (Ray Train names them by time)
        training_state.pt         model, EMA, optimiser, LR schedule, step (tensors only)
        position.json             data position: epoch, batch_in_epoch, train_seconds over resumes
        metrics.json              the step's logged metrics, "step" included
        model/                    the EMA weights, a DiffSFSR.from_pretrained folder
        samples-<step>.png        a sample grid, every --sample-every steps
      model/                      the final EMA model, exported with run_card.json

Plain files and torch only (no Ray): jobs/train.py hands the folder `write` fills to Ray Train,
and bench/midpoint.py, sfsr.release.evaluate_synth and sfsr.release.publish read runs through
`model_checkpoints` and `checkpoint_metrics`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

STATE = "training_state.pt"
POSITION = "position.json"
METRICS = "metrics.json"
MODEL = "model"
RUN_CARD = "run_card.json"
GLOB = "checkpoint_*"


def sample_grid_name(step: int) -> str:
    return f"samples-{step:07d}.png"


def write(
    folder: str | Path, state: dict[str, Any], position: dict[str, Any], metrics: dict[str, Any], ema_model: Any
) -> Path:
    """Fill `folder` with one checkpoint: `state` from sfsr.model.training.training_state,
    `position` (epoch, batch_in_epoch, train_seconds), `metrics` (with "step"), and the EMA model
    (anything with save_pretrained). Returns the folder."""
    if "step" not in metrics:
        raise ValueError(f"checkpoint metrics need the step; got keys {sorted(metrics)}")
    folder = Path(folder)
    torch.save(state, folder / STATE)
    (folder / POSITION).write_text(json.dumps(position))
    (folder / METRICS).write_text(json.dumps(metrics, indent=2))
    ema_model.save_pretrained(folder / MODEL)
    return folder


def read(folder: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(training state, data position) of a checkpoint folder. weights_only=True: a checkpoint
    holds tensors and plain values only, so nothing in storage can run code when loaded."""
    folder = Path(folder)
    missing = [n for n in (STATE, POSITION) if not (folder / n).is_file()]
    if missing:
        raise ValueError(f"{folder}: not a training checkpoint, missing {', '.join(missing)}")
    state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
    return state, json.loads((folder / POSITION).read_text())


def _local_run(run: str | Path) -> Path:
    if str(run).startswith("s3://"):
        raise ValueError(f"{run}: training runs are read from a local folder; copy the run down first (aws s3 sync)")
    return Path(run)


def checkpoint_metrics(run: str | Path) -> list[dict[str, Any]]:
    """The metrics.json of every checkpoint of a run (half-written ones skipped), in step order."""
    rows = []
    for meta in _local_run(run).glob(f"{GLOB}/{METRICS}"):
        try:
            row = json.loads(meta.read_text())
        except FileNotFoundError:  # pruned by a live run (num_to_keep) between the glob and the read
            continue
        if "step" in row:
            rows.append(row)
    return sorted(rows, key=lambda r: r["step"])


def model_checkpoints(run: str | Path) -> list[tuple[int, Path]]:
    """[(step, EMA model folder)] of a run, oldest first, by the recorded step (Ray Train's
    time-named folders do not sort by step after a resume). Raises ValueError naming the run when
    it has none, and for an s3:// run."""
    root = _local_run(run)
    found: list[tuple[int, Path]] = []
    for ck in root.glob(GLOB):
        meta, model = ck / METRICS, ck / MODEL
        if meta.is_file() and (model / "config.json").is_file():
            try:
                found.append((int(json.loads(meta.read_text())["step"]), model))
            except FileNotFoundError:  # pruned by a live run since the check
                continue
    if not found:
        raise ValueError(f"{run}: no checkpoints (looked for {GLOB}/{MODEL} with {METRICS}, written by jobs/train.py)")
    return sorted(found, key=lambda sp: sp[0])
