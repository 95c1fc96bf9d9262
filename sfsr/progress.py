"""The jobs' own progress: one line per stage and a bar (on a terminal) or a periodic one-line
count (in a job log) for long loops, instead of Ray Data's progress.

Ray Data prints a block of about a dozen lines every 10 s when stdout is not a terminal (a job
run by `ray job submit` never has one), and a tqdm bar per operator from inside actors (Ray
Train's SplitCoordinator): most of the quickstart's output. jobs/_quiet.py turns that off
through the DataContext with `data_context_settings`; `--verbose` (or SFSR_VERBOSE=1) keeps
Ray Data's defaults.

No Ray: this is plain Python, like the rest of sfsr/.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import IO

VERBOSE_ENV = "SFSR_VERBOSE"
VERBOSE_HELP = "show Ray Data's progress bars and execution plans too (also SFSR_VERBOSE=1)"

# DataContext attributes (ray/data/context.py, Ray 2.60) and their values when quiet. Verbose sets
# Ray's defaults back: every one of them is True there.
QUIET_DATA_CONTEXT: dict[str, bool] = {
    "enable_progress_bars": False,  # the 10 s blocks (no tty) and the tqdm bars (actors)
    "enable_operator_progress_bars": False,  # the per-operator lines of those blocks and bars
    "print_on_execution_start": False,  # "Starting execution of Dataset ..." and its plan
}


def verbose_requested(flag: bool = False, environ: dict[str, str] | None = None) -> bool:
    """--verbose, or SFSR_VERBOSE set to anything but '' or '0'."""
    value = (os.environ if environ is None else environ).get(VERBOSE_ENV, "")
    return bool(flag) or value not in ("", "0")


def data_context_settings(verbose: bool) -> dict[str, bool]:
    """The DataContext attributes to set and their values: quiet, or Ray's defaults when verbose
    (jobs/_quiet.py applies them; sfsr/ itself never imports Ray)."""
    return {k: (True if verbose else v) for k, v in QUIET_DATA_CONTEXT.items()}


def stage(job: str, text: str, out: IO[str] | None = None) -> None:
    """One line saying what a job does now: `ingest: rendering 2000 faces`."""
    print(f"{job}: {text}", file=out or sys.stdout, flush=True)


class Counter:
    """A count towards `total` (steps, rows, pairs). On a terminal a tqdm bar; otherwise (a job's
    log) one line at most every `every_s` seconds and at the end:
    `train: step 40/100 (40%), 1.9 s/step, about 1.9 min left`."""

    def __init__(
        self,
        job: str,
        what: str,
        total: int,
        *,
        every_s: float = 15.0,
        out: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        bar: bool | None = None,
        start: int = 0,
    ) -> None:
        if total < 0:
            raise ValueError(f"Counter({job!r}, {what!r}): total {total} is negative; give the number to reach")
        self.job, self.what, self.total, self.every_s = job, what, total, every_s
        self.out = out or sys.stdout
        self.clock = clock
        self.done = self.start = start  # a resumed loop counts from where it was
        self.t0 = self.last = clock()
        use_bar = bar if bar is not None else bool(getattr(self.out, "isatty", lambda: False)())
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=start, desc=f"{job}: {what}", file=self.out, leave=True)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = self.clock()
        if now - self.last >= self.every_s and self.done < self.total:
            self.last = now
            self._line(now)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._line(self.clock(), final=True)

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.t0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        text = f"{self.job}: {self.what} {self.done}/{self.total}{pct}"
        counted = self.done - self.start
        if counted > 0:
            rate = elapsed / counted
            text += f", {rate:.2g} s each" if rate >= 0.1 else f", {1 / max(rate, 1e-9):.3g}/s"
        if final:
            text += f", done in {elapsed:.0f} s"
        elif counted > 0:
            text += f", about {_duration(rate * (self.total - self.done))} left"
        print(text, file=self.out, flush=True)

    def __enter__(self) -> Counter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
