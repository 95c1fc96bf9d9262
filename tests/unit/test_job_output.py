"""sfsr.job_output: a quiet `ray job submit` shows the job's own lines, the log keeps them all,
--verbose shows them all. The sample is the shape of a real submission (Ray 2.60)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

from sfsr import job_output

# the shape of a real submission through a pipe (Ray 2.60): the banner is logged by the CLI
SUBMIT = """\
2026-12-07 03:17:07,534\tINFO cli.py:42 -- \x1b[37mJob submission server address\x1b[39m: http://127.0.0.1:8265
2026-12-07 03:17:07,548\tSUCC cli.py:66 -- \x1b[32m-------------------------------------------------------\x1b[39m
2026-12-07 03:17:07,548\tSUCC cli.py:67 -- \x1b[32mJob 'raysubmit_P1N6' submitted successfully\x1b[39m
2026-12-07 03:17:07,549\tINFO cli.py:330 -- \x1b[36mNext steps\x1b[39m
2026-12-07 03:17:07,549\tINFO cli.py:331 -- Query the logs of the job:
2026-12-07 03:17:07,549\tINFO cli.py:333 -- \x1b[1mray job logs raysubmit_P1N6\x1b[22m
2026-12-07 03:17:07,568\tINFO cli.py:351 -- Tailing logs until the job exits (disable with --no-wait):
2026-12-07 03:17:07,541\tINFO job_manager.py:581 -- Runtime env is setting up.
Running entrypoint for job raysubmit_P1N6: python -m jobs.ingest --synthetic 2000 --output s3://sfsr/synth
2026-12-07 03:17:08,841\tINFO worker.py:1841 -- Connecting to existing Ray cluster at address: 127.0.0.1:6379...
[2026-12-07 02:52:28,105 W 4826 4826] network_util.cc:330: Failed to determine local IP, falling back
ingest: 2000 inputs (0 other files ignored), 0 already in s3://sfsr/synth, 2000 to do
[2026-12-07 03:17:10,946 E 5497 5497] core_worker.cc:2465: Actor with class name: 'MapWorker(MapBatches(Encode))' \
and ID: '4969' has constructor arguments in the object store and max_restarts > 0. If the arguments go out of scope
2026-12-07 02:52:33,230\tINFO streaming_executor.py:215 -- Starting execution of Dataset dataset_0.
2026-12-07 02:52:33,441\tINFO logging_progress.py:225 -- Total Progress: 0/?
2026-12-07 02:52:33,442\tINFO logging_progress.py:231 -- MapBatches(render_synthetic): 0/1
\x1b[36m(SplitCoordinator pid=6975)\x1b[0m Progress bars disabled. To enable, set `ray.data.DataContext...`.
\x1b[36m(RayTrainWorker pid=6764)\x1b[0m ```
\x1b[36m(RayTrainWorker pid=6764)\x1b[0m pip install accelerate
\x1b[36m(RayTrainWorker pid=6764)\x1b[0m ```
\x1b[36m(RayTrainWorker pid=6764)\x1b[0m train: step 12/100 (12%), 1.3 s each, about 1.9 min left
\x1b[36m(RayTrainWorker pid=6764)\x1b[0m train: step 12/100 (12%), 1.3 s each, about 1.9 min left
\x1b[36m(RayTrainWorker pid=6764)\x1b[0m train: step 100/100 (100%), 1.1 s each, done in 109 s
\x1b[36m(RayTrainWorker pid=6764)\x1b[0m Checkpoint successfully created at: Checkpoint(path=q/c2)
\x1b[36m(RayTrainWorker pid=6764)\x1b[0m train: step 100/100 (100%), 1.1 s each, done in 109 s
/work/jobs/train.py:232: DeprecationWarning: `columns=` on `read_parquet` is deprecated.
ingest: committing 2000 faces, 0 errors to s3://sfsr/synth
2026-12-07 03:17:26,619\tINFO sdk.py:520 -- WebSocket closed for job raysubmit_P1N6 with close code 1000
2026-12-07 03:17:26,625\tSUCC cli.py:66 -- \x1b[32m------------------------------------------\x1b[39m
2026-12-07 03:17:26,625\tSUCC cli.py:67 -- \x1b[32mJob 'raysubmit_P1N6' succeeded\x1b[39m
2026-12-07 03:17:26,625\tSUCC cli.py:68 -- \x1b[32m------------------------------------------\x1b[39m
"""
WORKER = "\x1b[36m(RayTrainWorker pid=6764)\x1b[0m "
OWN = [
    "ingest: 2000 inputs (0 other files ignored), 0 already in s3://sfsr/synth, 2000 to do",
    WORKER + "```",
    WORKER + "pip install accelerate",
    WORKER + "```",  # a short line may repeat on purpose
    WORKER + "train: step 12/100 (12%), 1.3 s each, about 1.9 min left",
    WORKER + "train: step 100/100 (100%), 1.1 s each, done in 109 s",  # Ray Train V2 printed each twice
    WORKER + "Checkpoint successfully created at: Checkpoint(path=q/c2)",
    "/work/jobs/train.py:232: DeprecationWarning: `columns=` on `read_parquet` is deprecated.",
    "ingest: committing 2000 faces, 0 errors to s3://sfsr/synth",
]


def test_quiet_shows_the_jobs_own_lines_and_warnings_only() -> None:
    lines = SUBMIT.splitlines()
    assert job_output.shown_lines(lines, verbose=False) == OWN
    assert job_output.shown_lines(lines, verbose=True) == lines


def test_a_failed_job_keeps_its_traceback_and_the_failure_line() -> None:
    lines = [*SUBMIT.splitlines()[:9], "Traceback (most recent call last):", "ValueError: no faces", ""]
    lines += [
        "2026-12-07 03:17:26,625\tSUCC cli.py:66 -- " + "-" * 40,
        "2026-12-07 03:17:26,625\tERROR cli.py:67 -- Job 'raysubmit_abc' failed",
        "2026-12-07 03:17:26,625\tSUCC cli.py:68 -- " + "-" * 40,
        "Status message: Job entrypoint command failed with exit code 1",
    ]
    shown = job_output.shown_lines(lines, verbose=False)
    assert shown == [
        "Traceback (most recent call last):",
        "ValueError: no faces",
        "2026-12-07 03:17:26,625\tERROR cli.py:67 -- Job 'raysubmit_abc' failed",
        "Status message: Job entrypoint command failed with exit code 1",
    ]


def _fake_submit(tmp_path: Path, rc: int) -> list[str]:
    script = tmp_path / "submit.py"
    script.write_text(f"import sys\nsys.stdout.write({SUBMIT!r})\nsys.exit({rc})\n")
    return [sys.executable, str(script)]


def test_run_submit_prints_the_own_lines_and_logs_every_line(tmp_path: Path, capsys) -> None:
    out, log = io.StringIO(), tmp_path / "logs" / "jobs.ingest-1.log"
    rc = job_output.run_submit(_fake_submit(tmp_path, 0), {}, timeout=60, verbose=False, log=log, out=out)
    assert rc == 0
    assert out.getvalue().splitlines() == OWN
    assert log.read_text() == SUBMIT
    assert capsys.readouterr().err == ""


def test_run_submit_of_a_failed_job_shows_the_logs_tail_and_path(tmp_path: Path, capsys) -> None:
    log = tmp_path / "jobs.train-1.log"
    rc = job_output.run_submit(_fake_submit(tmp_path, 3), {}, timeout=60, verbose=False, log=log, out=io.StringIO())
    err = capsys.readouterr().err
    assert rc == 3
    shown = min(job_output.FAILED_TAIL_LINES, len(SUBMIT.splitlines()))
    assert f"the last {shown} lines of {log}" in err and "Total Progress: 0/?" in err  # Ray's lines too
    assert f"the job failed (exit 3); its whole output is in {log}" in err


def test_run_submit_stops_a_silent_job_at_its_timeout(tmp_path: Path, capsys) -> None:
    cmd = [sys.executable, "-c", "import time; time.sleep(30)"]
    rc = job_output.run_submit(cmd, {}, timeout=1, verbose=False, log=tmp_path / "x.log", out=io.StringIO())
    assert rc == 1 and "did not finish within 1 s" in capsys.readouterr().err
