"""The model folders a training run left behind, in step order, whichever trainer wrote them.

- jobs/train.py (Ray Train): RUN/checkpoint_<timestamp>/ holds `model/` (the EMA weights) and
  `metrics.json` with the step.
- sfsr.model.train_local: RUN/checkpoints/step-<N>/ is the model folder itself.

Local folders only: for a run on s3://, copy it down first (`aws s3 sync`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path


def model_checkpoints(run: str | Path) -> list[tuple[int, Path]]:
    """[(step, model folder)] of a run, oldest first. Raises ValueError naming the run when it
    has none, and for an s3:// run."""
    if str(run).startswith("s3://"):
        raise ValueError(f"{run}: model_checkpoints reads local run folders; copy the run down first")
    root = Path(run)
    found: list[tuple[int, Path]] = []
    for ck in root.glob("checkpoint_*"):
        meta, model = ck / "metrics.json", ck / "model"
        if meta.is_file() and (model / "config.json").is_file():
            found.append((int(json.loads(meta.read_text())["step"]), model))
    for ck in root.glob("checkpoints/step-*"):
        if (ck / "config.json").is_file():
            found.append((int(re.findall(r"\d+", ck.name)[0]), ck))
    if not found:
        raise ValueError(
            f"{run}: no checkpoints (looked for checkpoint_*/model with metrics.json, written by "
            "jobs/train.py, and checkpoints/step-*, written by sfsr.model.train_local)"
        )
    return sorted(found, key=lambda sp: sp[0])
