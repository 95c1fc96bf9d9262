"""Latency-bounded admission (deployments/admission.py) and the Server-Timing header, without Ray."""

from __future__ import annotations

import pytest

from deployments.admission import LATENCY_FACTOR, Admission, Refusal, Ticket
from deployments.timing import StageTimer, parse_server_timing


def _serve_alone(adm: Admission, steps: int, model_s: float, overhead_s: float, now: float = 0.0) -> None:
    t = adm.ask(steps, now)
    assert isinstance(t, Ticket) and t.alone
    adm.finish(t, now, latency_s=model_s + overhead_s, model_s=model_s, batch_size=1, replica="r1")


def test_everything_is_admitted_until_a_request_was_measured() -> None:
    adm = Admission()
    tickets = [adm.ask(10, 0.0) for _ in range(50)]
    assert all(isinstance(t, Ticket) for t in tickets)
    assert adm.in_flight == 50 and adm.queued_steps == 500
    for t in tickets:
        adm.finish(t, 1.0)  # failures teach nothing
    assert adm.in_flight == 0 and adm.queued_steps == 0 and adm.step_cost is None


def test_the_queue_is_sized_from_the_measured_service_time() -> None:
    adm = Admission()
    _serve_alone(adm, steps=10, model_s=0.2, overhead_s=0.05)  # 0.02 s per step alone
    budget = LATENCY_FACTOR * (0.05 + 10 * 0.02)
    assert adm.budget(10) == pytest.approx(budget)
    admitted = []
    while True:
        t = adm.ask(10, 1.0)
        if isinstance(t, Refusal):
            break
        admitted.append(t)
    # predicted = 0.05 + n x 10 x 0.02 <= 0.625 -> n <= 2.875: two more than the first... exactly
    # the largest n that fits
    n = len(admitted)
    assert 0.05 + n * 0.2 <= budget < 0.05 + (n + 1) * 0.2
    assert t.predicted_s > t.budget_s and t.retry_after_s >= 1 and "retry after" in t.message()
    # batched generations are cheaper per job: the measured batched cost admits more
    for ticket in admitted:
        adm.finish(ticket, 2.0, latency_s=0.5, model_s=0.4, batch_size=4, replica="r1")  # 0.01 s/step
    for _ in range(20):
        t = adm.ask(10, 3.0)
        adm.finish(t, 3.0, latency_s=0.5, model_s=0.4, batch_size=4, replica="r1")
    more = [adm.ask(10, 4.0) for _ in range(12)]
    assert sum(isinstance(t, Ticket) for t in more) > n


def test_a_second_replica_doubles_what_is_admitted_and_a_fixed_budget_wins() -> None:
    one, two = Admission(max_latency_s=1.0), Admission(max_latency_s=1.0)
    for adm, replicas in ((one, ["a"]), (two, ["a", "b"])):
        for r in replicas:
            t = adm.ask(10, 0.0)
            adm.finish(t, 0.0, latency_s=0.15, model_s=0.1, batch_size=1, replica=r)  # 0.01 s/step
    count = {}
    for name, adm in (("one", one), ("two", two)):
        tickets = [adm.ask(10, 1.0) for _ in range(40)]
        count[name] = sum(isinstance(t, Ticket) for t in tickets)
    assert count["two"] >= 2 * count["one"] - 1 and count["one"] >= 2
    # replicas not heard from for a while no longer count
    assert two.replicas(1000.0) == 1


def test_a_request_alone_is_never_refused() -> None:
    adm = Admission(max_latency_s=0.01)
    _serve_alone(adm, steps=10, model_s=1.0, overhead_s=0.1)
    t = adm.ask(100, 5.0)
    assert isinstance(t, Ticket)
    assert isinstance(adm.ask(1, 5.0), Refusal)


def test_server_timing_round_trips() -> None:
    timer = StageTimer()
    timer.lap("read")
    timer.lap("parse")
    header = timer.header(queue=0.25, model=0.5, batch=8)
    parsed = parse_server_timing(header)
    assert set(parsed) == {"read", "parse", "queue", "model", "batch", "total"}
    assert parsed["queue"] == 250.0 and parsed["model"] == 500.0 and parsed["batch"] == 8
    assert parsed["total"] >= parsed["read"] + parsed["parse"] - 0.2
    assert parse_server_timing('x;desc="not a number", y;dur=2.5') == {"y": 2.5}
