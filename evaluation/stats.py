"""Mergeable statistics of per-pair scores (cosines, distances, hits, PSNRs).

Every per-pair metric reduces a batch of values to a `ScalarStats`: count, float64 sum and sum
of squares, min, max and a fixed-bin histogram. Two of them merge by adding, so any split of the
pairs into batches and shards gives the same mean and standard deviation (up to float64
rounding, ~1e-15 relative) and exactly the same histogram. Memory does not grow with the number
of pairs. NaN values are pairs that have no score (no face found in an output, an unreadable
image): they are counted in `missing`, never silently dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Bins:
    """Histogram range [lo, hi) in `count` equal bins, plus an underflow and an overflow bin."""

    lo: float
    hi: float
    count: int = 20

    def edges(self) -> np.ndarray:
        return np.linspace(self.lo, self.hi, self.count + 1)


@dataclass(frozen=True)
class ScalarStats:
    bins: Bins
    n: int = 0  # values counted
    missing: int = 0  # pairs without a value (NaN)
    total: float = 0.0
    total_sq: float = 0.0
    minimum: float = math.inf
    maximum: float = -math.inf
    # counts per bin: [underflow, bin 0 .. bin count-1, overflow]
    counts: tuple[int, ...] = field(default=())

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        """Population standard deviation of the values."""
        if not self.n:
            return math.nan
        mean = self.mean
        return math.sqrt(max(self.total_sq / self.n - mean * mean, 0.0))

    def summary(self) -> dict:
        """JSON-ready: mean, std, min, max, n, missing and the histogram."""
        finite = self.n > 0
        return {
            "mean": self.mean if finite else None,
            "std": self.std if finite else None,
            "min": self.minimum if finite else None,
            "max": self.maximum if finite else None,
            "n": self.n,
            "missing": self.missing,
            "histogram": {"lo": self.bins.lo, "hi": self.bins.hi, "counts": list(self._counts())},
        }

    def _counts(self) -> tuple[int, ...]:
        return self.counts or (0,) * (self.bins.count + 2)


def scalar_stats(values: np.ndarray | list[float], bins: Bins) -> ScalarStats:
    """Reduce a batch of per-pair values (NaN = no value) to mergeable statistics."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    ok = v[~np.isnan(v)]
    idx = np.floor((ok - bins.lo) / (bins.hi - bins.lo) * bins.count).astype(np.int64) + 1
    idx = np.clip(idx, 0, bins.count + 1)  # 0 = underflow, count + 1 = overflow
    counts = np.bincount(idx, minlength=bins.count + 2)
    return ScalarStats(
        bins=bins,
        n=int(ok.size),
        missing=int(v.size - ok.size),
        total=float(ok.sum()),
        total_sq=float(np.square(ok).sum()),
        minimum=float(ok.min()) if ok.size else math.inf,
        maximum=float(ok.max()) if ok.size else -math.inf,
        counts=tuple(int(c) for c in counts),
    )


def merge_scalar(*parts: ScalarStats) -> ScalarStats:
    """The statistics of the union of the parts' values (all parts need the same bins)."""
    if not parts:
        raise ValueError("merge_scalar: nothing to merge; pass at least one ScalarStats")
    bins = parts[0].bins
    for p in parts[1:]:
        if p.bins != bins:
            raise ValueError(
                f"merge_scalar: histogram bins differ ({p.bins} vs {bins}); "
                "statistics of one metric must be built with the same Bins"
            )
    counts = np.sum([np.asarray(p._counts(), np.int64) for p in parts], axis=0)
    return ScalarStats(
        bins=bins,
        n=sum(p.n for p in parts),
        missing=sum(p.missing for p in parts),
        total=math.fsum(p.total for p in parts),
        total_sq=math.fsum(p.total_sq for p in parts),
        minimum=min(p.minimum for p in parts),
        maximum=max(p.maximum for p in parts),
        counts=tuple(int(c) for c in counts),
    )
