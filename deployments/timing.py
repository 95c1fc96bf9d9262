"""Where a request's time went, as an HTTP Server-Timing header (W3C Server Timing).

    timer = StageTimer()
    ...; timer.lap("read"); ...; timer.lap("parse")
    headers["Server-Timing"] = timer.header(queue=0.12, model=0.31, batch=8)

Stages are consecutive laps of the ingress (read, parse, detect, generate, finish); `queue` and
`model` are the generator's own share of `generate` (waiting for a batch, the batched model call);
`batch` is how many jobs shared that call. bench/serve.py reads the header to print the breakdown,
and browsers' developer tools show it. No Ray, no HTTP framework.
"""

from __future__ import annotations

import time


class StageTimer:
    def __init__(self) -> None:
        self.start = self._last = time.perf_counter()
        self.laps: dict[str, float] = {}  # stage -> seconds

    def lap(self, stage: str) -> float:
        """Seconds since the previous lap (or the start), recorded under `stage`."""
        now = time.perf_counter()
        self.laps[stage] = self.laps.get(stage, 0.0) + now - self._last
        self._last = now
        return self.laps[stage]

    def header(self, **generator: float | int) -> str:
        """`stage;dur=ms` for each lap, the generator's figures, and the total so far."""
        parts = [f"{k};dur={v * 1000:.1f}" for k, v in self.laps.items()]
        for k, v in generator.items():
            parts.append(f'{k};desc="{v}"' if isinstance(v, int) else f"{k};dur={v * 1000:.1f}")
        parts.append(f"total;dur={(time.perf_counter() - self.start) * 1000:.1f}")
        return ", ".join(parts)


def parse_server_timing(header: str) -> dict[str, float]:
    """{name: milliseconds (dur) or the number in desc} from a Server-Timing header."""
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in header.split(","))):
        name, *params = (x.strip() for x in item.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key in ("dur", "desc"):
                try:
                    out[name] = float(value.strip('"'))
                except ValueError:
                    continue
    return out
