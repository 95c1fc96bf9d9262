"""The expression bank: per word, the mean expression vector and exemplar faces, built by the
ingest job from labelled faces.

One row per word: word (a vocabulary word, or "neutral"), vector (the mean expression vector of
its faces, list<float32>), count (how many faces), and optionally the word's exemplars, its most
typical faces (nearest the mean): exemplar_vectors (list<list<float32>>), exemplar_images (PNG
crops, list<binary>) and exemplar_sources (list<string>). ExpressionTargets reads the means
(targets.py); a generator can take a word's target from one of its exemplars instead, as the
paper retrieves an expression image for a word (sfsr.generate, `expression_source`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sfsr.expressions.vocabulary import WORDS, UnknownExpressionError, lookup, normalize

NEUTRAL_WORD = "neutral"  # the one bank key outside the vocabulary: intensity 0
BANK_FILE = "expression_bank.parquet"  # its name in an ingest output and in a model folder


@dataclass(frozen=True)
class Exemplar:
    """One labelled face kept for its word: its expression encoding and its crop (PNG)."""

    vector: np.ndarray  # (dim,) float32
    image_png: bytes
    source: str  # where the face came from (the table's source_uri)


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
        exemplars: dict[str, list[Exemplar]] = {}
        for i, (word, vector, count, kept) in enumerate(_bank_rows(data)):
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
            for k, ex in enumerate(kept):
                if ex.vector.shape != (dim,) or not np.all(np.isfinite(ex.vector)):
                    raise ValueError(
                        f"{where}: exemplar {k} has shape {ex.vector.shape} or non-finite values, not {dim} values"
                    )
                exemplars.setdefault(key, []).append(ex)
        self.dim = dim
        self.means = {k: (sums[k] / counts[k]).astype(np.float32) for k in sums}
        self.counts = counts
        self.exemplars = exemplars
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

    def exemplar(self, word: str, index: int) -> Exemplar:
        """Exemplar `index` of a vocabulary word; ValueError naming how many there are."""
        key = lookup(word).word if normalize(word) != NEUTRAL_WORD else NEUTRAL_WORD
        kept = self.exemplars.get(key, [])
        if not kept:
            raise ValueError(f"the expression bank keeps no exemplar faces of {key!r}; ask for its prototype target")
        if not 0 <= int(index) < len(kept):
            raise ValueError(f"exemplar {index} of {key!r}: the bank keeps {len(kept)} (0 to {len(kept) - 1})")
        return kept[int(index)]

    def to_table(self) -> Any:
        """The bank as the Parquet table the ingest job writes (module docstring)."""
        import pyarrow as pa

        words = sorted(self.means)
        kept = [self.exemplars.get(w, []) for w in words]
        return pa.table(
            {
                "word": words,
                "vector": pa.array([self.means[w].tolist() for w in words], pa.list_(pa.float32())),
                "count": pa.array([self.counts[w] for w in words], pa.int64()),
                "exemplar_vectors": pa.array(
                    [[e.vector.tolist() for e in k] for k in kept], pa.list_(pa.list_(pa.float32()))
                ),
                "exemplar_images": pa.array([[e.image_png for e in k] for k in kept], pa.list_(pa.binary())),
                "exemplar_sources": pa.array([[e.source for e in k] for k in kept], pa.list_(pa.string())),
            }
        )


def build_bank(
    parts: Iterable[Callable[[list[str]], Any]], dim: int | None = None, exemplars: int = 4, unknown: str = "skip"
) -> ExpressionBank:
    """A bank from face-table parts, each given as a function columns -> pyarrow Table, read
    three times one part at a time (memory holds the sums and the kept rows' vectors only):
    the words' means, then each word's `exemplars` faces nearest its mean, then their crops.
    `dim` defaults to the vectors' length."""
    parts = list(parts)
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for read in parts:
        for word, vec in _labelled(read(["expression_label", "expression"])):
            sums[word] = sums.get(word, 0.0) + vec
            counts[word] = counts.get(word, 0) + 1
    means = {w: sums[w] / counts[w] for w in sums}
    nearest: dict[str, list[tuple[float, int, int, np.ndarray]]] = {}  # word -> (distance, part, row, vector)
    for p, read in enumerate(parts):
        for row, (word, vec) in enumerate(_labelled(read(["expression_label", "expression"]), keep_rows=True)):
            if word is None:
                continue
            kept = nearest.setdefault(word, [])
            kept.append((float(np.linalg.norm(vec - means[word])), p, row, vec))
            kept.sort(key=lambda k: k[:3])
            del kept[exemplars:]
    wanted: dict[int, dict[int, str]] = {}
    for word, kept in nearest.items():
        for _, p, row, _ in kept:
            wanted.setdefault(p, {})[row] = word
    crops: dict[tuple[int, int], tuple[bytes, str]] = {}
    for p, rows in wanted.items():
        t = parts[p](["image", "source_uri"])
        images, sources = t.column("image"), t.column("source_uri")
        for row in rows:
            crops[(p, row)] = (images[row].as_py(), sources[row].as_py())
    data = {
        w: (
            means[w].astype(np.float32),
            counts[w],
            [Exemplar(v.astype(np.float32), *crops[(p, row)]) for _, p, row, v in nearest.get(w, [])],
        )
        for w in sorted(means)
    }
    if dim is None:
        dim = len(next(iter(means.values()))) if means else 0
    return ExpressionBank(data, dim, unknown=unknown)


def _labelled(t: Any, keep_rows: bool = False) -> Iterable[tuple[str | None, np.ndarray]]:
    labels = t.column("expression_label").to_pylist()
    vecs = np.asarray(t.column("expression").to_pylist(), np.float64)
    for word, vec in zip(labels, vecs):
        if word or keep_rows:
            yield (word or None), vec


def _bank_rows(data: Any) -> list[tuple[str, Any, int, list[Exemplar]]]:
    if hasattr(data, "column_names") and hasattr(data, "to_pylist"):  # a pyarrow Table
        missing = {"word", "vector"} - set(data.column_names)
        if missing:
            raise ValueError(
                f"expression bank table lacks column(s) {sorted(missing)}; it needs word "
                f"(string), vector (list<float32>) and count (int)"
            )
        rows = data.to_pylist()
        return [(r["word"], r["vector"], r.get("count", 1), _exemplars_of(r)) for r in rows]
    if isinstance(data, Mapping):
        out = []
        for word, value in data.items():
            if isinstance(value, tuple) and len(value) == 3:
                out.append((word, value[0], value[1], list(value[2])))
            elif isinstance(value, tuple) and len(value) == 2:
                out.append((word, value[0], value[1], []))
            else:
                out.append((word, value, 1, []))
        return out
    raise TypeError(f"expression bank must be a mapping word -> vector or a pyarrow Table, got {type(data).__name__}")


def _exemplars_of(row: dict) -> list[Exemplar]:
    vectors = row.get("exemplar_vectors") or []
    images = row.get("exemplar_images") or []
    sources = row.get("exemplar_sources") or [""] * len(vectors)
    if len(images) != len(vectors) or len(sources) != len(vectors):
        raise ValueError(
            f"expression bank row {row.get('word')!r}: {len(vectors)} exemplar vectors, {len(images)} images and "
            f"{len(sources)} sources; rebuild the bank with the ingest job"
        )
    return [Exemplar(np.asarray(v, np.float32), bytes(i), str(s)) for v, i, s in zip(vectors, images, sources)]
