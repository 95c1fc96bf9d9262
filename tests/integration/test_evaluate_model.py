"""Models on S3 are read by content (sfsr.io.cache), and the platform evaluation of a real model
agrees with the synthetic-model protocol:

- a new model written to the same s3:// URI reaches a fresh Generator (the loader every job's
  actors use, with the same content-keyed cache) and a Serve redeploy;
- `jobs.evaluate --checkpoint` on the committed cpu-demo model over held-out synthetic faces
  reads the same judge identity accuracy as generating those pairs directly with the Generator
  and the judges (what sfsr.release.evaluate_synth does), same faces, seeds and steps.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import yaml
from PIL import Image

from sfsr.generate import Generator
from sfsr.io import storage, table
from sfsr.io.cache import files_digest
from sfsr.model.presets import write_random_model
from sfsr.synth.judges import load_judges
from tests.fixtures.ray_jobs import submit_ok

REPO = Path(__file__).resolve().parents[2]
SERVE = str(Path(sys.executable).parent / "serve")
COMMITTED = REPO / "sfsr" / "model" / "pretrained" / "cpu-demo"
PAIRS = 32

pytestmark = [pytest.mark.s3]


def upload(folder: Path, uri: str) -> str:
    """Replace whatever is at `uri` with the files of `folder` (as a user re-publishing a model)."""
    storage.delete_prefix(uri)
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            storage.write_bytes(storage.join(uri, str(f.relative_to(folder))), f.read_bytes())
    return uri


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


def _evaluate(env: dict, faces: str, model: str, out: Path, pairs: int) -> dict:
    submit_ok(
        env,
        "jobs.evaluate",
        "--table",
        faces,
        "--checkpoint",
        model,
        "--output",
        str(out),
        "--task",
        "swap",
        "--pairs",
        str(pairs),
        "--features",
        "none",
        "--no-pose",
        "--batch-size",
        "16",
    )
    return json.loads((out / "metrics.json").read_text())


def direct_identity_accuracy(faces: str, pairs: list[dict], gen: Generator, seed_offset: int = 0) -> float:
    """The evaluate_synth way: Generator.swap on the pairs' crops and masks, judge top-1 == source."""
    rows = table.read_table(faces, columns=["face_id", "image", "face_mask", "labels"]).to_pylist()
    by_id = {r["face_id"]: r for r in rows}
    src = np.stack([_png(by_id[p["identity"]]["image"]) for p in pairs])
    tgt = np.stack([_png(by_id[p["background"]]["image"]) for p in pairs])
    masks = np.stack([np.asarray(Image.open(io.BytesIO(by_id[p["background"]]["face_mask"]))) for p in pairs])
    truth = np.array([json.loads(by_id[p["identity"]]["labels"]["synth_params"])["identity_id"] for p in pairs])
    out = gen.swap(src, tgt, masks=masks, seeds=[p["seed"] + seed_offset for p in pairs])
    return float(np.mean(load_judges(32).predict_identity_np(out) == truth))


@pytest.mark.ray
@pytest.mark.slow
def test_evaluate_job_agrees_with_direct_generation(platform_env, held_out, s3_server, tmp_path: Path) -> None:
    uri = upload(COMMITTED, s3_server.uri("evaluate-test", "model"))
    metrics = _evaluate(platform_env, held_out, uri, tmp_path / "committed", PAIRS)
    assert metrics["source"]["weights_sha256"] == files_digest(COMMITTED) and metrics["errors"]["count"] == 0
    job = metrics["methods"]["model"]["synth"]["identity_accuracy"]
    pairs = [json.loads(line) for line in (tmp_path / "committed" / "pairs.jsonl").read_text().splitlines()]
    gen = Generator.from_pretrained(str(COMMITTED))
    direct = direct_identity_accuracy(held_out, pairs, gen)
    # Same crops, masks, seeds and steps: the two paths differ only in batching (float summation
    # order), measured to flip no judge decision; other seeds move the rate by up to ~2 pairs in 32.
    other_seeds = direct_identity_accuracy(held_out, pairs, gen, seed_offset=1)
    assert abs(job - direct) <= 1 / PAIRS, (job, direct, other_seeds)
    assert job >= 0.75 and abs(job - other_seeds) <= 4 / PAIRS
    baselines = metrics["methods"]
    assert baselines["copy_target"]["synth"]["identity_accuracy"] <= 0.1  # the judge reads the target
    assert baselines["paste_source"]["synth"]["identity_accuracy"] >= 0.9
    # read again with no network (nearest exact render): the judges cannot flatter these
    # (measured: identity 0.94, expression kept 0.41 of 32; evaluate_synth n=128: 0.94 swap identity)
    render = baselines["model"]["render"]
    assert render["identity_accuracy"] >= 0.75 and render["expression_accuracy"] >= 0.25, render
    copy = baselines["copy_target"]["render"]
    assert copy["identity_accuracy"] == 0.0 and copy["expression_accuracy"] == 1.0, copy


@pytest.mark.ray
@pytest.mark.slow
def test_a_serve_redeploy_with_a_new_revision_serves_the_new_weights(platform_env, s3_server, tmp_path: Path) -> None:
    from deployments.ingress import MODEL_INFO_TTL_S
    from sfsr import cluster
    from tests.fixtures.serve_app import TOKEN, config_for_test, wait_running

    env = platform_env | {"RAY_DASHBOARD_ADDRESS": platform_env["RAY_ADDRESS"]}
    uri = upload(write_random_model(tmp_path / "a", "tiny", seed=1), s3_server.uri("serve-test", "model"))
    (tmp_path / "token").write_text(TOKEN)
    port = cluster.free_port()
    path = config_for_test(tmp_path, port, uri, tmp_path / "token", small_generator=True)

    def deploy(revision: str) -> dict:
        config = yaml.safe_load(path.read_text())
        for d in config["applications"][0]["deployments"]:
            if d["name"] == "Generator":
                d["user_config"]["model_revision"] = revision
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        done = subprocess.run(
            [SERVE, "deploy", str(path)], env=env, capture_output=True, text=True, cwd=REPO, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
        wait_running(env)

    def served_version(want: str) -> str:
        """/v1/info's model version once it is `want`, or the last one seen after the ingress's
        info cache (MODEL_INFO_TTL_S) has certainly expired."""
        deadline, seen = time.monotonic() + MODEL_INFO_TTL_S + 60, ""
        while time.monotonic() < deadline and seen != want:
            r = requests.get(
                f"http://127.0.0.1:{port}/v1/info", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
            )
            r.raise_for_status()
            seen = r.json()["model"]["version"]
            time.sleep(2)
        return seen

    try:
        a = files_digest(tmp_path / "a")
        deploy(a)
        assert served_version("sha256:" + a[:12]) == "sha256:" + a[:12]
        upload(write_random_model(tmp_path / "b", "tiny", seed=2), uri)
        b = files_digest(tmp_path / "b")
        assert b != a
        deploy(b)
        assert served_version("sha256:" + b[:12]) == "sha256:" + b[:12]
    finally:
        subprocess.run([SERVE, "shutdown", "-y"], env=env, capture_output=True, text=True, check=False)
