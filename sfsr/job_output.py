"""What a person sees of a `ray job submit` run: the job's own lines, not the submit banner nor
Ray's INFO log lines. Every line still goes to a log file, and `verbose` shows them all.

`ray job submit` prints about 17 lines of banner around each job (the job's id and the commands
to query it), and Ray's components log INFO lines (`2026-12-07 02:52:33,230\tINFO file.py:12 --
...`, sometimes behind an actor's `(Name pid=N)` prefix) and C++ info and warning lines
(`[2026-12-07 02:52:28,105 W 4826 4826] file.cc:330: ...`). The jobs' own progress
(sfsr.progress) is plain lines; Python warnings, errors and tracebacks are kept.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PREFIX = re.compile(r"^\((?:[\w.]+ )?pid=\d+(?:, ip=[\d.]+)?\)\s*")  # an actor's or task's "(Name pid=N)"
# Ray's Python log lines below warning level; `ray job submit` itself logs its banner this way
_RAY_LOG = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(?:INFO|DEBUG|SUCC) ")
_GLOG = re.compile(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [IW] \d+ \d+\] ")  # Ray's C++ info/warning lines
# an error-level line Ray logs for every actor pool, harmless here (ray-project/ray#53727)
_ACTOR_ARGS = re.compile(
    r"core_worker\.cc:\d+: Actor with class name: .* has constructor arguments in the object store"
)
_BANNER_END = "Tailing logs until the job exits"
_NOTES = (
    "Progress bars disabled. To enable",  # Ray Data's note that jobs/_quiet.py turned them off
    "Running entrypoint for job ",  # the command, which the quickstart has echoed already
)
_RULE = re.compile(r"^-{10,}$")
_DONE = re.compile(r"^Job '[^']+' succeeded$")
REPEAT_WINDOW = 8
FAILED_TAIL_LINES = 40


def plain(line: str) -> str:
    """The line without colour codes and without an actor's `(Name pid=N)` prefix."""
    return _PREFIX.sub("", _ANSI.sub("", line)).rstrip("\n")


class JobOutputFilter:
    """Decides line by line what a quiet run shows (all of it when `verbose`)."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.in_banner = True  # until "Tailing logs until the job exits"
        # Ray Train V2 prints each line of a worker twice, not always side by side: an actor's
        # line already shown among the last few is not shown again
        self.recent: list[str] = []

    def shown(self, line: str) -> bool:
        if self.verbose:
            return True
        text = plain(line)
        if self.in_banner:
            self.in_banner = _BANNER_END not in text
            return False
        noise = (_RAY_LOG, _GLOG, _RULE, _DONE)
        if not text.strip() or any(r.match(text) for r in noise) or _ACTOR_ARGS.search(text):
            return False
        if text.startswith(_NOTES):
            return False
        # only sentences: a traceback's indented lines or a "```" may repeat on purpose
        sentence = len(text) >= 20 and not text[0].isspace()
        if sentence and _PREFIX.match(_ANSI.sub("", line)) and text in self.recent:
            return False
        self.recent = (self.recent + [text])[-REPEAT_WINDOW:]
        return True


def shown_lines(lines: Iterable[str], verbose: bool) -> list[str]:
    """The lines of one `ray job submit` run that a quiet (or verbose) run prints."""
    f = JobOutputFilter(verbose)
    return [line for line in lines if f.shown(line)]


def run_submit(
    cmd: list[str], env: dict[str, str], *, timeout: float, verbose: bool, log: Path, out: IO[str] | None = None
) -> int:
    """Run a `ray job submit` command: every line to `log`, the shown ones to `out` (stdout). A
    failed or timed-out job prints the last lines of the log and its path."""
    out = out or sys.stdout
    log.parent.mkdir(parents=True, exist_ok=True)
    f = JobOutputFilter(verbose)
    tail: list[str] = []
    with open(log, "w", encoding="utf-8") as written:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1
        )
        try:
            for line in _lines(proc, timeout):
                written.write(line)
                tail = (tail + [line])[-FAILED_TAIL_LINES:]
                if f.shown(line):
                    out.write(line)
                    out.flush()
            rc = proc.wait()
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            print(f"error: the job did not finish within {timeout:.0f} s; its output is in {log}", file=sys.stderr)
            return 1
    if rc and not verbose:
        print(f"--- the last {len(tail)} lines of {log} ---", file=sys.stderr)
        sys.stderr.write("".join(plain(t) + "\n" for t in tail))
    if rc:
        print(f"error: the job failed (exit {rc}); its whole output is in {log}", file=sys.stderr)
    return rc


def _lines(proc: subprocess.Popen, timeout: float) -> Iterable[str]:
    """The process's output lines; TimeoutExpired once `timeout` seconds have passed (checked
    between lines, and by a timer that kills a silent process)."""
    import threading
    import time

    deadline = time.monotonic() + timeout
    expired = threading.Event()

    def stop() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, stop)
    timer.daemon = True
    timer.start()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            yield line
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(proc.args, timeout)
        if expired.is_set():
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        timer.cancel()
