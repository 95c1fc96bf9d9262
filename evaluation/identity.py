"""Identity transfer: cosine similarity to the source and identity retrieval.

features -> statistics -> score, as the face-swapping papers measure it (FaceShifter, SimSwap):

- cosine: for each pair, cos(identity(output), identity(source)) with the chosen recogniser;
- retrieval: each output is compared with a gallery holding the identity vectors of all source
  faces of the evaluation (each labelled with its person); top-k is the fraction of outputs whose
  k nearest gallery entries (by cosine) include an entry of their source's person.

The recogniser is any identity encoder (a pack's `identity`, the synthetic judges' embedding); the
features are its (B, D) vectors. A model trained with an identity loss from the same recogniser
scores well on it by construction, so the report warns when they are the same network
(`same_recogniser`). NaN rows (no vector: unreadable output) are counted as missing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.stats import Bins, ScalarStats, merge_scalar, scalar_stats

COSINE_BINS = Bins(-1.0, 1.0, 40)
HIT_BINS = Bins(0.0, 1.0 + 1e-9, 2)  # two bins: miss, hit


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, x / norm, np.nan)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of (N, D) and (N, D) -> (N,) float64 (NaN where a row is NaN or zero)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"cosine_similarity: need two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    return np.einsum("nd,nd->n", _unit(a), _unit(b))


@dataclass(frozen=True)
class Gallery:
    """Identity vectors of every source face, unit length, with the person each belongs to."""

    embeddings: np.ndarray  # (G, D) float64, unit rows
    labels: np.ndarray  # (G,) str


def make_gallery(embeddings: np.ndarray, labels: list[str] | np.ndarray) -> Gallery:
    e = _unit(np.asarray(embeddings))
    lab = np.asarray([str(x) for x in labels])
    if e.ndim != 2 or lab.shape != (e.shape[0],):
        raise ValueError(f"make_gallery: need (G, D) embeddings and G labels, got {e.shape} and {lab.shape}")
    if np.isnan(e).any():
        raise ValueError("make_gallery: some gallery vectors are NaN or zero; leave those faces out of the gallery")
    return Gallery(e, lab)


def retrieval_ranks(
    gallery: Gallery, queries: np.ndarray, true_labels: list[str] | np.ndarray, exclude: np.ndarray | None = None
) -> np.ndarray:
    """1-based rank of the first gallery entry with the query's true label, ordering the gallery
    by cosine to the query (ties by gallery index). (N,) float64: inf when the label is not in
    the gallery, NaN when the query is NaN. `exclude` (N, G) bool hides entries per query (for
    leave-one-out retrieval of a gallery against itself)."""
    q = _unit(np.asarray(queries))
    labels = np.asarray([str(x) for x in true_labels])
    sims = q @ gallery.embeddings.T  # (N, G)
    if exclude is not None:
        sims = np.where(exclude, -np.inf, sims)
    order = np.argsort(-sims, axis=1, kind="stable")  # (N, G), most similar first
    hit = gallery.labels[order] == labels[:, None]  # (N, G)
    if exclude is not None:
        hit &= ~np.take_along_axis(exclude, order, axis=1)
    ranks = np.where(hit.any(axis=1), hit.argmax(axis=1) + 1.0, np.inf)
    return np.where(np.isnan(q).any(axis=1), np.nan, ranks)


@dataclass(frozen=True)
class IdentityStats:
    recogniser: str
    cosine: ScalarStats
    top1: ScalarStats  # values 0/1; mean = top-1 retrieval accuracy
    top5: ScalarStats


def identity_statistics(
    output: np.ndarray,
    source: np.ndarray,
    source_labels: list[str] | np.ndarray,
    gallery: Gallery | None,
    recogniser: str,
) -> IdentityStats:
    """Per-pair identity scores of a batch: outputs (B, D) and their sources (B, D)."""
    cos = cosine_similarity(output, source)
    if gallery is None:
        ranks = np.full(len(cos), np.nan)
    else:
        ranks = retrieval_ranks(gallery, output, source_labels)
    with np.errstate(invalid="ignore"):
        top1 = np.where(np.isnan(ranks), np.nan, (ranks <= 1).astype(np.float64))
        top5 = np.where(np.isnan(ranks), np.nan, (ranks <= 5).astype(np.float64))
    return IdentityStats(
        recogniser, scalar_stats(cos, COSINE_BINS), scalar_stats(top1, HIT_BINS), scalar_stats(top5, HIT_BINS)
    )


def merge_identity(*parts: IdentityStats) -> IdentityStats:
    names = {p.recogniser for p in parts}
    if len(names) != 1:
        raise ValueError(f"merge_identity: parts come from different recognisers {sorted(names)}")
    return IdentityStats(
        parts[0].recogniser,
        merge_scalar(*[p.cosine for p in parts]),
        merge_scalar(*[p.top1 for p in parts]),
        merge_scalar(*[p.top5 for p in parts]),
    )


def identity_score(stats: IdentityStats) -> dict:
    return {
        "recogniser": stats.recogniser,
        "cosine": stats.cosine.summary(),
        "retrieval_top1": stats.top1.mean if stats.top1.n else None,
        "retrieval_top5": stats.top5.mean if stats.top5.n else None,
        "retrieval_n": stats.top1.n,
    }


def same_recogniser(evaluation_recogniser: str, training_recognisers: list[str] | tuple[str, ...]) -> bool:
    """True when the evaluation recogniser is one the model was trained against (by name, any
    "@version" suffix ignored: another version of the same network flatters the model too)."""
    base = lambda name: name.split("@", 1)[0].strip().lower()  # noqa: E731
    return base(evaluation_recogniser) in {base(n) for n in training_recognisers}
