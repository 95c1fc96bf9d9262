"""sfsr.progress and jobs._quiet: the jobs' quiet default (Ray Data's progress off), the verbose way back, and
the concise counters that replace it. No Ray cluster: a DataContext is a plain object."""

from __future__ import annotations

import io

import pytest

from jobs._quiet import quiet_ray_data
from sfsr import progress


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _context():
    from ray.data import DataContext

    return DataContext()  # a fresh one, not the process's current context


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # DataContext() reads its deprecated settings
def test_quiet_default_turns_ray_datas_progress_off_and_verbose_restores_it() -> None:
    ctx = _context()
    assert all(getattr(ctx, k) is True for k in progress.QUIET_DATA_CONTEXT)  # Ray's defaults, for the record
    assert quiet_ray_data(False, ctx) == progress.QUIET_DATA_CONTEXT
    assert (ctx.enable_progress_bars, ctx.enable_operator_progress_bars, ctx.print_on_execution_start) == (
        False,
        False,
        False,
    )
    quiet_ray_data(True, ctx)
    assert (ctx.enable_progress_bars, ctx.enable_operator_progress_bars, ctx.print_on_execution_start) == (
        True,
        True,
        True,
    )


def test_a_renamed_data_context_setting_fails_loudly() -> None:
    class Old:
        enable_progress_bars = True

    with pytest.raises(AttributeError, match="no 'enable_operator_progress_bars'.*QUIET_DATA_CONTEXT"):
        quiet_ray_data(False, Old())


@pytest.mark.parametrize(
    "flag,env,expected",
    [(False, None, False), (True, None, True), (False, "1", True), (False, "0", False), (False, "", False)],
)
def test_verbose_is_the_flag_or_the_environment(flag: bool, env: str | None, expected: bool) -> None:
    environ = {} if env is None else {progress.VERBOSE_ENV: env}
    assert progress.verbose_requested(flag, environ) is expected


def test_counter_in_a_log_prints_a_line_at_most_every_period_and_one_at_the_end() -> None:
    out, clock = io.StringIO(), _Clock()
    with progress.Counter("train", "step", 100, every_s=15, out=out, clock=clock) as c:
        for _ in range(100):
            clock.t += 2.0  # 2 s per step: 200 s in all
            c.update()
    lines = out.getvalue().splitlines()
    assert len(lines) == 200 // 16 + 1  # a line each time 15 s have passed (every 8th step), and the last
    assert lines[0] == "train: step 8/100 (8%), 2 s each, about 3.1 min left"
    assert lines[-1] == "train: step 100/100 (100%), 2 s each, done in 200 s"


def test_counter_of_a_resumed_loop_counts_its_rate_from_where_it_started() -> None:
    out, clock = io.StringIO(), _Clock()
    c = progress.Counter("train", "step", 100, every_s=10, out=out, clock=clock, start=90)
    clock.t += 10.0
    c.update(5)
    assert out.getvalue().strip() == "train: step 95/100 (95%), 2 s each, about 10 s left"


def test_counter_on_a_terminal_is_a_tqdm_bar() -> None:
    out = io.StringIO()
    with progress.Counter("ingest", "inputs", 10, out=out, bar=True) as c:
        c.update(10)
    text = out.getvalue()
    assert "ingest: inputs" in text and "10/10" in text and "\r" in text  # redrawn in place


def test_counter_refuses_a_negative_total() -> None:
    with pytest.raises(ValueError, match="total -1 is negative"):
        progress.Counter("ingest", "inputs", -1)
