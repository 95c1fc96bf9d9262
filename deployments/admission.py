"""Latency-bounded admission: answer excess load 503 at once instead of queueing it without bound.

The ingress asks before it sends a generation to the model deployments. A request is admitted
when its predicted latency stays within the latency budget:

    predicted = overhead + (queued steps + its steps) x step_cost / replicas

- step_cost: seconds of generator time per denoising step per job, from the batches the
  generator reports (model seconds / jobs in the batch / steps), an exponential moving average;
  under load the batches are full, so it is the batched cost that sizes the queue (Little's law:
  jobs in flight = throughput x latency);
- overhead: what a request spends outside the generator (HTTP, decoding, face detection, paste
  back, watermark, PNG), measured the same way;
- queued steps: the steps of every admitted generation not yet answered;
- replicas: the generator replicas that answered in the last REPLICA_WINDOW_S seconds.

The budget is `max_latency_s` when set, else LATENCY_FACTOR x the latency of a request alone
(overhead + its steps x the cost per step of a batch of one, measured on requests that had the
generator to themselves). Until a first request has been measured everything is admitted (the
deployments' max_queued_requests still bound the queues).

Refused requests get a Retry-After of the time the queue needs to drain back under the budget.
Pure Python, no Ray: tests/unit/test_admission.py drives it with made-up timings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LATENCY_FACTOR = 2.5  # default budget: this many times the latency of a request alone
EWMA = 0.2  # weight of a new measurement in the moving averages
REPLICA_WINDOW_S = 30.0


@dataclass(frozen=True)
class Ticket:
    """An admitted request; give it back to `Admission.finish` (also when it failed)."""

    steps: int
    alone: bool  # nothing else was in flight when it was admitted


@dataclass(frozen=True)
class Refusal:
    predicted_s: float
    budget_s: float
    retry_after_s: int

    def message(self) -> str:
        return (
            f"the server is at capacity: this request would take about {self.predicted_s:.1f} s, over the "
            f"latency budget of {self.budget_s:.1f} s; retry after {self.retry_after_s} s"
        )


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - EWMA) * old + EWMA * new


@dataclass
class Admission:
    max_latency_s: float | None = None  # None: LATENCY_FACTOR x a request alone
    min_retry_after_s: int = 1
    step_cost: float | None = None  # s per step per job, batched as the load makes it
    step_cost_alone: float | None = None  # s per step of a batch of one
    overhead: float | None = None  # s outside the generator per request
    queued_steps: int = 0
    in_flight: int = 0
    _replicas: dict[str, float] = field(default_factory=dict)

    def replicas(self, now: float) -> int:
        self._replicas = {r: t for r, t in self._replicas.items() if now - t <= REPLICA_WINDOW_S}
        return max(1, len(self._replicas))

    def budget(self, steps: int) -> float | None:
        if self.max_latency_s is not None:
            return self.max_latency_s
        if self.step_cost_alone is None or self.overhead is None:
            return None
        return LATENCY_FACTOR * (self.overhead + steps * self.step_cost_alone)

    def predict(self, steps: int, now: float) -> float | None:
        if self.step_cost is None or self.overhead is None:
            return None
        return self.overhead + (self.queued_steps + steps) * self.step_cost / self.replicas(now)

    def ask(self, steps: int, now: float) -> Ticket | Refusal:
        """Admit a generation of `steps` denoising steps, or refuse it with a Retry-After."""
        budget, predicted = self.budget(steps), self.predict(steps, now)
        if budget is not None and predicted is not None and predicted > budget and self.in_flight > 0:
            # a request alone is always admitted: refusing it could not make anything faster
            excess = predicted - budget
            return Refusal(predicted, budget, max(self.min_retry_after_s, math.ceil(excess)))
        ticket = Ticket(steps, alone=self.in_flight == 0)
        self.in_flight += 1
        self.queued_steps += steps
        return ticket

    def finish(
        self,
        ticket: Ticket,
        now: float,
        *,
        latency_s: float | None = None,
        model_s: float | None = None,
        queue_s: float = 0.0,
        batch_size: int = 1,
        replica: str | None = None,
    ) -> None:
        """Release `ticket`; with the timings of a generation that completed, learn from them."""
        self.in_flight = max(0, self.in_flight - 1)
        self.queued_steps = max(0, self.queued_steps - ticket.steps)
        if latency_s is None or model_s is None or ticket.steps < 1 or batch_size < 1:
            return  # failed or refused downstream: nothing to learn
        if replica is not None:
            self._replicas[replica] = now
        per_step = model_s / batch_size / ticket.steps
        self.step_cost = _ewma(self.step_cost, per_step)
        if batch_size == 1 and ticket.alone:
            self.step_cost_alone = _ewma(self.step_cost_alone, per_step)
        self.overhead = _ewma(self.overhead, max(0.0, latency_s - queue_s - model_s))
