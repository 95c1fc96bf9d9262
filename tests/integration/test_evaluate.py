"""jobs/evaluate.py through `ray job submit`, scoring outputs made elsewhere (--images): here the
outputs are the targets themselves, so the model column must read exactly like copy-target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sfsr.io import table
from tests.fixtures.ray_jobs import submit_ok

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_scoring_copied_targets_matches_the_copy_target_baseline(platform_env, synth_table, tmp_path: Path) -> None:
    out, outputs = tmp_path / "eval", tmp_path / "outputs"
    faces = str(Path(synth_table) / "faces")
    # pairing alone needs no cluster (jobs.evaluate starts Ray only to score): its main() here, as
    # its driver would run it, saves a submission
    import ray

    from jobs import evaluate

    assert evaluate.main(["--table", faces, "--output", str(out), "--pairs-only", "--pairs", "16"]) == 0
    assert not ray.is_initialized(), "pairing alone started Ray"
    pairs = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) == 16 and all(p["identity"] != p["background"] for p in pairs)

    crops = dict(
        zip(
            *(table.read_table(faces, columns=["face_id", "image"]).column(c).to_pylist() for c in ("face_id", "image"))
        )
    )
    outputs.mkdir()
    for p in pairs:  # "a method" that returns the target unchanged
        (outputs / f"{p['pair_id']}.png").write_bytes(crops[p["background"]])
    submit_ok(
        platform_env, "jobs.evaluate", "--table", faces, "--output", str(out), "--images", str(outputs), "--pairs", "16"
    )

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["errors"]["count"] == 0
    model, copy = metrics["methods"]["model"], metrics["methods"]["copy_target"]
    assert model["identity"]["cosine"]["mean"] == pytest.approx(copy["identity"]["cosine"]["mean"], abs=1e-6)
    assert model["identity"]["cosine"]["n"] == 16
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 1
