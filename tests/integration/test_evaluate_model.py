"""Models on S3 are read by content (sfsr.io.cache), and the platform evaluation of a real model
agrees with the synthetic-model protocol:

- a new model written to the same s3:// URI reaches a fresh Generator (the loader every job's
  actors use, with the same content-keyed cache); that it reaches a Serve redeploy is checked
  in tests/integration/test_photo_model.py, which serves its photo model from S3;
- `jobs.evaluate --checkpoint` on the committed cpu-demo model over held-out synthetic faces
  reads the same judge identity accuracy as generating those pairs directly with the Generator
  and the judges (what sfsr.release.evaluate_synth does), same faces, seeds and steps.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sfsr.generate import Generator
from sfsr.io import table
from sfsr.io.cache import files_digest
from sfsr.model.presets import write_random_model
from sfsr.synth.judges import load_judges
from tests.fixtures.ray_jobs import submit_ok
from tests.fixtures.s3_models import upload

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "sfsr" / "model" / "pretrained" / "cpu-demo"
PAIRS = 32

pytestmark = [pytest.mark.s3]


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_a_new_model_at_the_same_uri_reaches_a_fresh_generator(s3_server, tmp_path: Path) -> None:
    uri = upload(COMMITTED, s3_server.uri("cache-test", "model"))
    first = Generator.from_pretrained(uri, cache_dir=str(tmp_path / "cache"))
    assert first.weights_digest == files_digest(COMMITTED) and first.info["preset"] == "cpu-demo"
    tiny = write_random_model(tmp_path / "tiny", "tiny")
    upload(tiny, uri)
    second = Generator.from_pretrained(uri, cache_dir=str(tmp_path / "cache"))
    assert second.weights_digest == files_digest(tiny) and second.info["preset"] == "tiny"
    again = Generator.from_pretrained(uri, cache_dir=str(tmp_path / "cache"))
    assert again.weights_digest == second.weights_digest
    assert len([p for p in (tmp_path / "cache").iterdir()]) == 2  # one copy per content, not per load


@pytest.fixture(scope="module")
def held_out(synth_table) -> str:
    """The session's held-out synthetic faces (200 identities: the committed model's and judges')."""
    return str(Path(synth_table) / "faces")


EVALUATE_ARGS = ("--task", "swap", "--pairs", str(PAIRS), "--features", "none", "--no-pose", "--batch-size", "16")


def direct_identity_accuracy(faces: str, pairs: list[dict], gen: Generator) -> float:
    """The evaluate_synth way: Generator.swap on the pairs' crops and masks, judge top-1 == source."""
    rows = table.read_table(faces, columns=["face_id", "image", "face_mask", "labels"]).to_pylist()
    by_id = {r["face_id"]: r for r in rows}
    src = np.stack([_png(by_id[p["identity"]]["image"]) for p in pairs])
    tgt = np.stack([_png(by_id[p["background"]]["image"]) for p in pairs])
    masks = np.stack([np.asarray(Image.open(io.BytesIO(by_id[p["background"]]["face_mask"]))) for p in pairs])
    truth = np.array([json.loads(by_id[p["identity"]]["labels"]["synth_params"])["identity_id"] for p in pairs])
    out = gen.swap(src, tgt, masks=masks, seeds=[p["seed"] for p in pairs])
    return float(np.mean(load_judges(32).predict_identity_np(out) == truth))


@pytest.mark.ray
@pytest.mark.slow
def test_evaluate_job_agrees_with_direct_generation(platform_env, held_out, s3_server, tmp_path: Path) -> None:
    import ray

    from jobs import evaluate

    uri = upload(COMMITTED, s3_server.uri("evaluate-test", "model"))
    # the pairs first, drawn in this process (pairing needs no cluster), so the direct generation
    # runs while the job does: the job must draw the very same pairs
    drawn = tmp_path / "drawn"
    assert evaluate.main(["--table", held_out, "--output", str(drawn), "--pairs-only", *EVALUATE_ARGS]) == 0
    assert not ray.is_initialized()
    pairs = [json.loads(line) for line in (drawn / "pairs.jsonl").read_text().splitlines()]
    out = tmp_path / "committed"
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        job_run = pool.submit(
            submit_ok,
            platform_env,
            "jobs.evaluate",
            "--table", held_out, "--checkpoint", uri, "--output", str(out), *EVALUATE_ARGS,
        )  # fmt: skip
        direct = direct_identity_accuracy(held_out, pairs, Generator.from_pretrained(str(COMMITTED)))
        job_run.result()
    assert (out / "pairs.jsonl").read_text() == (drawn / "pairs.jsonl").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["source"]["weights_sha256"] == files_digest(COMMITTED) and metrics["errors"]["count"] == 0
    job = metrics["methods"]["model"]["synth"]["identity_accuracy"]
    # Same crops, masks, seeds and steps: the two paths differ only in batching (float summation
    # order), measured to flip no judge decision; other seeds moved the rate by up to ~2 pairs in 32
    # (measured once; not re-measured here, it costs a third generation)
    assert abs(job - direct) <= 1 / PAIRS, (job, direct)
    assert job >= 0.75
    baselines = metrics["methods"]
    assert baselines["copy_target"]["synth"]["identity_accuracy"] <= 0.1  # the judge reads the target
    assert baselines["paste_source"]["synth"]["identity_accuracy"] >= 0.9
    # read again with no network (nearest exact render): the judges cannot flatter these
    # (measured: identity 0.94, expression kept 0.41 of 32; evaluate_synth n=128: 0.94 swap identity)
    render = baselines["model"]["render"]
    assert render["identity_accuracy"] >= 0.75 and render["expression_accuracy"] >= 0.25, render
    copy = baselines["copy_target"]["render"]
    assert copy["identity_accuracy"] == 0.0 and copy["expression_accuracy"] == 1.0, copy
