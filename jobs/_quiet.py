"""Ray Data's progress output in a job: off by default, Ray's own with --verbose (sfsr.progress
says which DataContext settings and why)."""

from __future__ import annotations

from typing import Any

from sfsr.progress import data_context_settings


def quiet_ray_data(verbose: bool, context: Any = None) -> dict[str, bool]:
    """Set Ray Data's progress output on `context` (default: the current DataContext) and return
    the values set. Call before building datasets: a dataset keeps the context it was made with,
    and Ray Train's SplitCoordinator runs it with that copy."""
    if context is None:
        from ray.data import DataContext

        context = DataContext.get_current()
    values = data_context_settings(verbose)
    for name, value in values.items():
        if not hasattr(context, name):  # a renamed setting must fail here, not be set silently
            raise AttributeError(
                f"DataContext has no {name!r}: Ray Data renamed its progress settings; update "
                "sfsr.progress.QUIET_DATA_CONTEXT from ray/data/context.py"
            )
        setattr(context, name, value)
    if not verbose:
        # Ray Data warns once per process that its bars are off and how to set them on through
        # the DataContext; here --verbose is the way. (Actors, such as Ray Train's
        # SplitCoordinator, still warn once: sfsr.job_output leaves that line out.)
        from ray.util.debug import log_once

        log_once("ray_data_progress_manager_disabled")
    return values
