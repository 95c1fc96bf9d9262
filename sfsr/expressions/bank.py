"""The expression bank: word -> mean expression vector, built by the ingest job from labelled faces.

One row per word: word (a vocabulary word, or "neutral"), vector (the mean expression vector of
its faces, list<float32>), count (how many faces). ExpressionTargets reads it (targets.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from sfsr.expressions.vocabulary import WORDS, UnknownExpressionError, lookup, normalize

NEUTRAL_WORD = "neutral"  # the one bank key outside the vocabulary: intensity 0


class ExpressionBank:
    """word -> (mean expression vector, face count), keys validated against the vocabulary.

    Accepts a mapping word -> vector or word -> (vector, count), or a pyarrow Table with columns
    word (string), vector (list<float32>) and count (int; optional, 1 when absent). Rows with the
    same word are merged by count-weighted mean. "neutral" is kept as the neutral anchor. Other
    words outside the vocabulary raise, or are listed in `.skipped` with unknown="skip".
    """

    def __init__(self, data: Any, dim: int, unknown: str = "error") -> None:
        if unknown not in ("error", "skip"):
            raise ValueError(f"unknown must be 'error' or 'skip', got {unknown!r}")
        sums: dict[str, np.ndarray] = {}
        counts: dict[str, int] = {}
        skipped: list[str] = []
        for i, (word, vector, count) in enumerate(_bank_rows(data)):
            where = f"expression bank row {i} ({word!r})"
            vec = np.asarray(vector, np.float64)
            if vec.shape != (dim,) or not np.all(np.isfinite(vec)):
                raise ValueError(
                    f"{where}: vector has shape {vec.shape}"
                    f"{'' if vec.shape != (dim,) else ' with non-finite values'}, the expression "
                    f"space has {dim} finite values; rebuild the bank with the same face pack"
                )
            if int(count) <= 0:
                raise ValueError(f"{where}: count is {count}, must be a positive face count")
            key = normalize(word)
            if key != NEUTRAL_WORD:
                try:
                    key = lookup(word).word
                except UnknownExpressionError as err:
                    if unknown == "skip":
                        skipped.append(word)
                        continue
                    raise ValueError(f"{where}: {err}; relabel it in the ingest job or pass unknown='skip'") from err
            sums[key] = sums.get(key, 0.0) + vec * int(count)
            counts[key] = counts.get(key, 0) + int(count)
        self.dim = dim
        self.means = {k: (sums[k] / counts[k]).astype(np.float32) for k in sums}
        self.counts = counts
        self.skipped = tuple(skipped)

    def neutral(self) -> np.ndarray | None:
        return self.means.get(NEUTRAL_WORD)

    def overall_mean(self) -> np.ndarray | None:
        if not self.means:
            return None
        total = sum(self.counts.values())
        return (sum(self.means[k] * self.counts[k] for k in self.means) / total).astype(np.float32)

    def family_mean(self, family: str) -> tuple[np.ndarray, float] | None:
        """Count-weighted mean vector of the family's rows and their mean word intensity."""
        rows = [w for w in WORDS if w.family == family and w.word in self.means]
        if not rows:
            return None
        total = sum(self.counts[w.word] for w in rows)
        vec = sum(self.means[w.word].astype(np.float64) * self.counts[w.word] for w in rows) / total
        intensity = sum(w.intensity * self.counts[w.word] for w in rows) / total
        return vec.astype(np.float32), float(intensity)


def _bank_rows(data: Any) -> list[tuple[str, Any, int]]:
    if hasattr(data, "column_names") and hasattr(data, "to_pylist"):  # a pyarrow Table
        missing = {"word", "vector"} - set(data.column_names)
        if missing:
            raise ValueError(
                f"expression bank table lacks column(s) {sorted(missing)}; it needs word "
                f"(string), vector (list<float32>) and count (int)"
            )
        rows = data.to_pylist()
        return [(r["word"], r["vector"], r.get("count", 1)) for r in rows]
    if isinstance(data, Mapping):
        out = []
        for word, value in data.items():
            if isinstance(value, tuple) and len(value) == 2:
                out.append((word, value[0], value[1]))
            else:
                out.append((word, value, 1))
        return out
    raise TypeError(f"expression bank must be a mapping word -> vector or a pyarrow Table, got {type(data).__name__}")
