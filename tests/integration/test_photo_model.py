"""Real faces end to end (issue 13, item 5), the way a user runs it: ingest the test photos with
the builtin pack, train a tiny photo model with both of the paper's losses through
`ray job submit` (identity through stand-in ArcFace weights this test writes, expression through
the builtin FER network), publish it, serve it from s3:// and send photos to /v1/swap and
/v1/reenact, then write another model to the same URI and check a Serve redeploy with the new
revision serves the new weights, and evaluate the photo model with `jobs.evaluate --checkpoint`
and the builtin recogniser, which the loss did not use.

The model is tiny and trained for a few steps: this checks that every step works on photos and
says what it did, not the quality of the faces (bench/photos.py measures learning).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image
from safetensors.torch import save_file

from sfsr import cluster
from sfsr.io.cache import files_digest
from sfsr.io.table import read_table
from sfsr.model.presets import write_random_model
from tests.fixtures import photos
from tests.fixtures.arcface_onnx import random_iresnet
from tests.fixtures.ray_jobs import submit_ok
from tests.fixtures.s3_models import upload
from tests.fixtures.serve_app import SERVE, TOKEN, config_for_test, wait_running

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.s3]


def test_a_photo_model_trains_with_both_losses_serves_and_evaluates(
    platform_env, photo_table, s3_server, tmp_path: Path
) -> None:
    # --- ingest: the session's mixed photo folder, ingested once with the builtin pack (128 px)
    table = Path(photo_table["out"])
    faces = read_table(str(table / "faces"), columns=["identity", "expression"])
    assert faces.num_rows >= 5  # obama x2, biden, the astronaut, the two-person photo's two faces

    # --- train: both losses on photos, swaps included; ArcFace stand-in weights written here
    arcface = tmp_path / "arcface-r18.safetensors"
    save_file({k: v.contiguous() for k, v in random_iresnet((1, 1, 1, 1), 64).state_dict().items()}, str(arcface))
    runs = tmp_path / "runs"
    submit_ok(
        platform_env,
        "jobs.train",
        "--table", str(table / "faces"), "--split", "all", "--preset", "tiny", "--storage", str(runs),
        "--name", "photo", "--steps", "2", "--batch-size", "2", "--checkpoint-every", "2", "--sample-every", "100000",
        "--identity-loss-weight", "0.1", "--identity-recogniser", str(arcface),
        "--expression-loss-weight", "0.1", "--aux-swap", "0.5",
    )  # fmt: skip
    card = json.loads((runs / "photo" / "model" / "run_card.json").read_text())
    final = card["metrics"]
    assert final["step"] == 2 and final["loss_identity"] > 0 and final["loss_expression"] > 0, final
    model_config = json.loads((runs / "photo" / "model" / "config.json").read_text())
    assert model_config["identity_encoder"] == "builtin/dlib-resnet-v1@1", model_config

    # --- publish
    published = tmp_path / "published"
    subprocess.run(
        [sys.executable, "-m", "sfsr.release.publish", str(runs / "photo" / "model"), str(published),
         "--name", "photo-test", "--trained-on", "six test photos (face_recognition, scikit-image)",
         "--licence", "test only"],
        cwd=REPO, check=True, capture_output=True, text=True,
    )  # fmt: skip

    # --- serve the published photo model from S3; real photos in, no synthetic-model warning out
    uri = upload(published, s3_server.uri("serve-test", "model"))
    env = platform_env | {"RAY_DASHBOARD_ADDRESS": platform_env["RAY_ADDRESS"]}
    (tmp_path / "token").write_text(TOKEN)
    port = cluster.free_port()
    config = config_for_test(tmp_path, port, uri, tmp_path / "token", small_generator=True)
    base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}

    def deploy(revision: str) -> None:
        spec = yaml.safe_load(config.read_text())
        for d in spec["applications"][0]["deployments"]:
            if d["name"] == "Generator":
                d["user_config"]["model_revision"] = revision
        config.write_text(yaml.safe_dump(spec, sort_keys=False))
        done = subprocess.run([SERVE, "deploy", str(config)], env=env, capture_output=True, text=True, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
        wait_running(env)

    def served_model() -> dict:
        r = requests.get(f"{base}/v1/info", headers=auth, timeout=60)
        r.raise_for_status()
        return r.json()["model"]

    try:
        photo_digest = files_digest(published)
        deploy(photo_digest)
        info = served_model()
        assert info["version"] == "sha256:" + photo_digest[:12], info
        assert info["name"] == "photo-test" and info["resolution"] == model_config["image_size"]
        assert not info.get("warning"), info
        target = photos.load("obama2.jpg")  # smaller than the app's max_output_side: comes back at its size
        for route, files, data in (
            ("swap", {"identity": photos.photos_dir() / "biden.jpg", "target": photos.photos_dir() / "obama2.jpg"}, {}),
            ("reenact", {"source": photos.photos_dir() / "obama2.jpg"}, {"expression": "contentment"}),
        ):
            r = requests.post(
                f"{base}/v1/{route}",
                files={k: (p.name, p.read_bytes()) for k, p in files.items()},
                data={**data, "steps": "2"},
                headers=auth,
                timeout=300,
            )
            assert r.status_code == 200, (route, r.text[:500])
            assert "X-Sfsr-Warning" not in r.headers, (route, r.headers)
            out = Image.open(io.BytesIO(r.content))
            assert out.size == (target.shape[1], target.shape[0]), (route, out.size)
            assert out.text["sfsr:model"] == "photo-test" and "sfsr:warning" not in out.text

        # another model written to the same URI reaches the app with a redeploy naming its revision
        upload(write_random_model(tmp_path / "other", "tiny", seed=2), uri)
        other = files_digest(tmp_path / "other")
        assert other != photo_digest
        deploy(other)
        # the first output names the new weights, though the ingress read the model's info moments
        # before (its cache would keep the old one for MODEL_INFO_TTL_S), and so does /v1/info
        r = requests.post(
            f"{base}/v1/reenact",
            files={"source": ("obama2.jpg", (photos.photos_dir() / "obama2.jpg").read_bytes())},
            data={"expression": "joy", "steps": "2"},
            headers=auth,
            timeout=300,
        )
        assert r.status_code == 200, r.text[:500]
        assert r.headers["X-Sfsr-Model"].endswith("sha256:" + other[:12]), r.headers["X-Sfsr-Model"]
        assert Image.open(io.BytesIO(r.content)).text["sfsr:model"] != "photo-test"
        info = served_model()
        assert info["version"] == "sha256:" + other[:12] and info["name"] != "photo-test", info
    finally:
        subprocess.run([SERVE, "shutdown", "-y"], env=env, capture_output=True, text=True, check=False)

    # --- evaluate with the builtin recogniser (dlib), which no loss used (ArcFace did)
    evaluation = tmp_path / "evaluation"
    submit_ok(
        platform_env,
        "jobs.evaluate",
        "--table", str(table), "--checkpoint", str(published), "--output", str(evaluation),
        "--task", "swap", "--pairs", "6", "--split", "all", "--features", "none", "--no-pose",
    )  # fmt: skip
    metrics = json.loads((evaluation / "metrics.json").read_text())
    scores = metrics["methods"]["model"]
    assert metrics["pairs"] == 6 and (evaluation / "report.html").is_file()
    assert -1.0 <= scores["identity"]["cosine"]["mean"] < 1.0  # a real reading, not the copy's 1.0
    assert metrics["recogniser"] == "builtin/dlib-resnet-v1@1" or metrics["recogniser"].startswith("dlib-resnet")
