"""jobs/train.py through `ray job submit`: the smoke test, and one run that checkpoints on S3, is
stopped and resumed by name from there, and survives a killed worker. Each submission costs ~30 s
on 2 cores (driver, imports, worker group), so resuming, S3 and the kill share one run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sfsr.io import storage

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _submit(env: dict, *args: str, wait: bool = True, timeout: float = 600) -> subprocess.CompletedProcess | str:
    cmd = [RAY, "job", "submit", *([] if wait else ["--no-wait"]), "--", "python", "-m", "jobs.train", *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if wait:
        return done
    assert done.returncode == 0, done.stderr[-2000:]
    return re.search(r"Job '(\S+)' submitted successfully", done.stdout + done.stderr).group(1)


def _client(env: dict):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(env["RAY_ADDRESS"])  # this process has the token (conftest)


def _status(env: dict, job_id: str) -> str:
    return _client(env).get_job_status(job_id).value


def _logs(env: dict, job_id: str) -> str:
    return _client(env).get_job_logs(job_id)


def _wait_for(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _checkpoint_metrics(run_dir: str) -> list[dict]:
    """Every checkpoint's metrics.json, in step order. Ray Train deletes checkpoints past
    num_to_keep while the run goes on, so one listed here may be gone by the time it is read."""
    rows = []
    for f in storage.list_files(run_dir, ("metrics.json",)):
        if "/checkpoint_" in f:
            try:
                rows.append(json.loads(storage.read_bytes(f)))
            except storage.StorageNotFoundError:
                pass
    return sorted(rows, key=lambda m: m["step"])


def _checkpoint_steps(run_dir: str) -> list[int]:
    return [m["step"] for m in _checkpoint_metrics(run_dir)]


def _registered_step(run_dir: str) -> int:
    """The step of the latest checkpoint Ray Train has registered (0 for none): the one a restart or
    a resubmission resumes from. A checkpoint on storage is registered only once the controller
    polls the worker's report (every 2 s), so the newest one or two on storage may not be yet."""
    try:
        snapshot = json.loads(storage.read_bytes(storage.join(run_dir, "checkpoint_manager_snapshot.json")))
    except storage.StorageNotFoundError:
        return 0
    latest = snapshot.get("latest_checkpoint_result")
    return int(latest["metrics"]["step"]) if latest else 0


def _resumes(logs: str) -> list[tuple[int, int, float]]:
    """(worker pid, step, seconds of training so far) of each resume logged, once per worker process."""
    found = re.findall(
        r"RayTrainWorker pid=(\d+)\S*\s+\[rank 0\] resumed from a checkpoint at step (\d+) .*?([\d.]+) s of training",
        logs,
    )
    return list(dict.fromkeys((int(pid), int(s), float(t)) for pid, s, t in found))


def _train_worker_pids(env: dict) -> list[int]:
    """Ray Train workers of this test session's cluster only: every process of a Ray node
    inherits the head's environment, whose RAY_AUTH_TOKEN_PATH is unique to the platform (other
    Ray clusters on the machine, a user's training run for one, must never be waited on or killed)."""
    marker = f"RAY_AUTH_TOKEN_PATH={env['RAY_AUTH_TOKEN_PATH']}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::RayTrainWorker") and marker in (
                    proc / "environ"
                ).read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


@pytest.fixture(scope="module")
def smoke_run(platform_env, tmp_path_factory) -> tuple[str, str]:
    """The issue's smoke test, once per module: (storage root, smoke table)."""
    root = str(tmp_path_factory.mktemp("train"))
    t0 = time.monotonic()
    done = _submit(platform_env, "--preset", "tiny", "--smoke-test", "--storage", root)
    wall = time.monotonic() - t0
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-5000:]
    model = Path(root) / "tiny-smoke" / "model"
    assert (model / "config.json").is_file() and (model / "diffusion_pytorch_model.safetensors").is_file()
    assert _checkpoint_steps(str(Path(root) / "tiny-smoke"))[-1] == 6
    grids = list((Path(root) / "tiny-smoke").rglob("samples-*.png"))
    assert grids, "the smoke run saved no sample grid"
    card = json.loads((model / "run_card.json").read_text())  # how to reproduce the model
    assert (
        card["provenance"]["command"].startswith("python -m jobs.train ")
        and "--smoke-test" in card["provenance"]["command"]
    )
    assert card["provenance"]["git_commit"] and card["job"]["seed"] == 0
    assert card["metrics"]["step"] == 6 and 0 < card["metrics"]["train_seconds"] < wall  # timed inside the job
    return root, str(Path(root) / "tiny-smoke" / "smoke-table" / "faces")


def test_smoke_model_loads_and_generates(smoke_run) -> None:
    import numpy as np

    from sfsr.generate import Generator
    from sfsr.synth.dataset import render_batch

    root, _ = smoke_run
    gen = Generator.from_pretrained(str(Path(root) / "tiny-smoke" / "model"))
    faces, masks, _, _ = render_batch(2, seed=5, n_identities=4, size=32)
    out = gen.swap(faces[:1], faces[1:], masks=masks[1:], steps=2)
    assert out.shape == (1, 16, 16, 3) and out.dtype == np.uint8


@pytest.mark.s3
def test_a_run_on_s3_resumes_after_a_stop_and_recovers_from_a_killed_worker(platform_env, s3_server, smoke_run) -> None:
    _, table = smoke_run
    root = s3_server.uri("train-runs")
    run_dir = storage.join(root, "ft")
    common = (
        "--preset",
        "tiny",
        "--name",
        "ft",
        "--table",
        table,
        "--storage",
        root,
        "--checkpoint-every",
        "5",
        "--sample-every",
        "100000",
        "--batch-size",
        "4",
    )
    # batch 4 of the 32-row smoke table: 8 steps per epoch. Each epoch is a new Ray Data pass, which
    # costs ~5 s on 2 cores whatever its size, so small batches keep the run short (the kill still
    # needs the margin below: steps within a pass take well under a second)

    # stop the job after its first checkpoint, then submit it again: the step count continues
    first = _submit(platform_env, *common, "--steps", "100000", wait=False)
    _wait_for(lambda: _checkpoint_steps(run_dir), 300, "the first checkpoint")
    # another job sees this run's worker and its CPU, under the id `ray job stop` takes (what a
    # training job submitted beside it reads to warn that the two may starve each other's reads)
    probe = (
        "import json, ray; ray.init(); from jobs.train import other_training_runs as o; print('runs', json.dumps(o()))"
    )
    seen = subprocess.run(
        [RAY, "job", "submit", "--", "python", "-c", probe],
        env=platform_env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert f'runs {{"{first}": 1.0}}' in seen.stdout, seen.stdout[-3000:] + seen.stderr[-2000:]
    subprocess.run([RAY, "job", "stop", first], env=platform_env, capture_output=True, timeout=120, cwd=REPO)
    _wait_for(lambda: _status(platform_env, first) in ("STOPPED", "FAILED"), 120, "the job to stop")
    _wait_for(lambda: not _train_worker_pids(platform_env), 120, "the stopped job's workers to exit")
    stopped_at = _checkpoint_steps(run_dir)[-1]
    registered_at_stop = _registered_step(run_dir)
    assert 0 < registered_at_stop <= stopped_at, (registered_at_stop, stopped_at)
    # killed once stopped_at + 10 is registered: the worker is then at most two checkpoints past it
    # (a report waits until the controller has taken the one before), so at stopped_at + 20, and
    # the steps left cross an epoch's ~5 s Ray Data start (8 steps per epoch) besides
    target = stopped_at + 25

    second = _submit(platform_env, *common, "--steps", str(target), wait=False)
    # kill the training worker once Ray Train has registered a checkpoint of the resumed run: one
    # only on storage would be lost with the worker, and the restart would start where this one did
    _wait_for(lambda: _registered_step(run_dir) >= stopped_at + 10, 300, "a registered checkpoint of the resumed run")
    registered_before_kill = _registered_step(run_dir)
    pids = _train_worker_pids(platform_env)
    assert pids, "no Ray Train worker process to kill"
    os.kill(pids[0], signal.SIGKILL)
    on_storage_at_kill = _checkpoint_steps(run_dir)[-1]
    assert on_storage_at_kill < target, "the run finished before the worker could be killed; raise the step margin"
    try:
        _wait_for(lambda: _status(platform_env, second) in ("SUCCEEDED", "FAILED", "STOPPED"), 600, "the run to finish")
    except AssertionError as e:
        raise AssertionError(f"{e}; job logs:\n{_logs(platform_env, second)[-4000:]}") from None
    logs = _logs(platform_env, second)
    assert _status(platform_env, second) == "SUCCEEDED", logs[-4000:]
    resumed = _resumes(logs)
    # each worker line reaches the job's log once (Ray Train's print patch would double it)
    assert logs.count("resumed from a checkpoint") == len(resumed), logs[-3000:]
    steps = [s for _, s, _ in resumed]
    # the second submission continued the first one's step count from the checkpoint registered
    # when it stopped (one being written as the stop landed may be on storage unregistered)
    assert steps and steps[0] == registered_at_stop, (registered_at_stop, resumed, logs[-3000:])
    # after the kill a new worker process restarted from a checkpoint of the resumed run that was
    # registered by then (not from the stop point, not from 0)
    assert len(resumed) == 2 and resumed[0][0] != resumed[1][0], (resumed, logs[-3000:])
    assert registered_before_kill <= steps[1] <= on_storage_at_kill, (
        registered_at_stop,
        registered_before_kill,
        resumed,
        on_storage_at_kill,
    )
    assert _checkpoint_steps(run_dir)[-1] == target
    assert storage.exists(storage.join(run_dir, "model", "config.json"))
    # the training time carries over the resumes: each attempt starts counting from the time its
    # checkpoint stored (logged at the resume), so the model card's duration is the whole run's
    card = json.loads(storage.read_bytes(storage.join(run_dir, "model", "run_card.json")))
    carried = resumed[-1][2]
    assert 0 < resumed[0][2] < carried < card["metrics"]["train_seconds"], (resumed, card["metrics"])
