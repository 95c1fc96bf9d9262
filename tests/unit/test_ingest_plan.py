"""jobs/ingest.py's actor plan: every CPU busy, never more CPUs asked for than the cluster has."""

from __future__ import annotations

import pytest

from jobs.ingest import actor_plan


@pytest.mark.parametrize("cpus", [1, 2, 3, 4, 16, 64])
def test_cpu_plan_uses_exactly_the_cluster_cpus(cpus: int) -> None:
    plan = actor_plan(cpus, 0)
    used = plan["detect"] * plan["detect_cpus"] + plan["encode"] * plan["encode_cpus"]
    assert used == pytest.approx(cpus, abs=0.01)
    assert plan["detect"] >= 1 and plan["encode"] >= 1
    assert plan["detect"] * plan["detect_cpus"] >= 0.7 * cpus  # detection gets most of the machine


def test_two_cpus_run_two_detectors_and_one_encoder() -> None:
    assert actor_plan(2, 0) == {"detect": 2, "detect_cpus": 0.75, "encode": 1, "encode_cpus": 0.5}


def test_gpu_plan_gives_one_encoder_per_gpu_and_the_other_cpus_to_detection() -> None:
    plan = actor_plan(8, 2)
    assert plan == {"detect": 6, "detect_cpus": 1.0, "encode": 2, "encode_cpus": 1.0}


def test_explicit_pool_sizes_win() -> None:
    plan = actor_plan(4, 0, detect=1, encode=3)
    assert (plan["detect"], plan["encode"]) == (1, 3)
    assert plan["detect_cpus"] * 1 + plan["encode_cpus"] * 3 == pytest.approx(4, abs=0.01)
