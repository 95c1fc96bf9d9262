"""The local platform as users meet it: loopback-only listeners, token auth, the doctor job."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sfsr import cluster
from tests.fixtures import listeners
from tests.fixtures.ray_jobs import submit_all_ok

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
SFSR = str(Path(sys.executable).parent / "sfsr")

pytestmark = [pytest.mark.ray, pytest.mark.s3]


def test_everything_listens_on_loopback_only(ray_address: str, platform_config: cluster.PlatformConfig) -> None:
    ports = {sock.port for sock in listeners.listeners()}
    # the head's GCS port, the dashboard and the S3 store are among them ...
    assert {platform_config.ray_port, platform_config.dashboard_port, platform_config.s3.s3} <= ports
    # ... and nothing listens on a wildcard or non-loopback address (the Serve app's replicas are
    # checked in tests/integration/test_serve.py, with the app up)
    assert listeners.beyond_loopback() == []


def _submit(env: dict[str, str], *entrypoint: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RAY, "job", "submit", "--", *entrypoint], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def test_job_submit_needs_the_token(platform_env: dict[str, str]) -> None:
    no_token = {
        k: v for k, v in platform_env.items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_TOKEN")
    }
    refused = _submit(no_token, "python", "-c", "print('should not run')", timeout=120)
    assert refused.returncode != 0
    assert "should not run" not in refused.stdout
    assert "token" in (refused.stdout + refused.stderr).lower()

    wrong = dict(platform_env, RAY_AUTH_TOKEN="0" * 64)
    wrong.pop("RAY_AUTH_TOKEN_PATH")
    refused_wrong = _submit(wrong, "python", "-c", "print('should not run')", timeout=120)
    assert refused_wrong.returncode != 0
    assert "should not run" not in refused_wrong.stdout


def test_doctor_job_passes_on_s3_and_on_a_local_folder(platform_env: dict[str, str], s3_server, tmp_path: Path) -> None:
    # both submitted at once: each job's start-up (driver, imports) overlaps the other's
    on_s3, local = submit_all_ok(
        platform_env,
        ("jobs.doctor", "--storage", s3_server.uri("doctor-probe")),
        ("jobs.doctor", "--storage", str(tmp_path / "probe")),
        timeout=240,
    )
    assert "(Ray task)" in on_s3 and "FAIL" not in on_s3, on_s3[-4000:]
    assert re.search(r"CPU 2, GPU 0", on_s3), on_s3[-2000:]
    assert "FAIL" not in local, local[-4000:]
    assert not any((tmp_path / "probe").rglob("*")), "the probe object must be deleted afterwards"


def test_sfsr_doctor_names_an_unreachable_s3_endpoint(
    platform_config: cluster.PlatformConfig, ray_address: str
) -> None:
    dead = f"http://127.0.0.1:{cluster.free_port()}"
    env = os.environ | {"SFSR_HOME": str(platform_config.home.parent), "AWS_ENDPOINT_URL": dead}
    t0 = time.monotonic()
    done = subprocess.run(
        [SFSR, "--home", str(platform_config.home.parent), "doctor", "--storage", "s3://sfsr/probe"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    elapsed = time.monotonic() - t0
    out = done.stdout + done.stderr
    assert done.returncode != 0
    assert dead.removeprefix("http://") in out, out[-3000:]
    assert elapsed < 30, f"took {elapsed:.1f} s"
