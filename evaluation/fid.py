"""Frechet distance between feature distributions: FID on the FID Inception, FD on others.

features -> statistics -> score:

    feats = extractor(images)                     # (B, D) float32, evaluation/features.py
    m = feature_moments(feats, extractor.info.name)  # (n, sum, sum of outer products), float64
    m = merge_moments(m_shard1, m_shard2, ...)    # exact up to float64 rounding, any split
    score = frechet_distance(m_real, m_fake)

The statistics are (n, sum x, sum x x^T) rather than (mean, covariance): they add, so shards
merge without knowing each other's sizes and memory is O(D^2) whatever the number of images.
A small batch (B <= D/2 rows) keeps its rows instead of the D x D sum, and rows are folded into
the sum once more than D/2 have gathered: what a Ray worker ships per batch is then B x D instead
of D x D (4 MB instead of 32 MB for 256 images on the 2048-d Inception), with the same result.
The covariance is the unbiased one (divide by n - 1), as pytorch-fid (np.cov) and torchmetrics.

The score is ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)). The trace of the matrix
square root is computed as tr((S1^(1/2) S2 S1^(1/2))^(1/2)) (the same eigenvalues), which only
needs symmetric eigendecompositions: stable for the singular covariances of small sets (n < D),
where scipy's sqrtm needs the epsilon offset pytorch-fid adds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FeatureMoments:
    n: int
    total: np.ndarray  # (D,) float64, sum of features
    outer: np.ndarray | None  # (D, D) float64, sum of x x^T over the folded rows; None: nothing folded
    feature: str = ""  # name of the feature network, checked when merging and scoring
    rows: np.ndarray | None = None  # (k, D) float64 rows not folded into `outer` yet (k <= D/2)

    @property
    def dim(self) -> int:
        return int(self.total.shape[0])

    def mean(self) -> np.ndarray:
        return self.total / self.n  # (D,)

    def outer_sum(self) -> np.ndarray:
        """sum of x x^T over every row, (D, D)."""
        out = np.zeros((self.dim, self.dim)) if self.outer is None else self.outer.copy()
        if self.rows is not None and len(self.rows):
            out += self.rows.T @ self.rows
        return out

    def cov(self) -> np.ndarray:
        """Unbiased covariance (D, D)."""
        if self.n < 2:
            raise ValueError(f"covariance of {self.n} feature vector(s): FD/FID needs at least 2 images per set")
        mu = self.mean()
        return (self.outer_sum() - self.n * np.outer(mu, mu)) / (self.n - 1)


def _make(n: int, total: np.ndarray, outer: np.ndarray | None, rows: np.ndarray, feature: str) -> FeatureMoments:
    if len(rows) > total.shape[0] // 2:  # fold: beyond D/2 rows the D x D sum is the smaller form
        folded = rows.T @ rows
        outer = folded if outer is None else outer + folded
        rows = rows[:0]
    return FeatureMoments(n, total, outer, feature, rows)


def empty_moments(dim: int, feature: str = "") -> FeatureMoments:
    return FeatureMoments(0, np.zeros(dim), None, feature, np.zeros((0, dim)))


def feature_moments(features: np.ndarray, feature: str = "") -> FeatureMoments:
    """(B, D) features -> mergeable moments. Rows with NaN are an error (drop failed images first)."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"feature_moments: features must be (B, D), got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("feature_moments: features contain NaN/inf; leave failed images out and count them")
    return _make(int(x.shape[0]), x.sum(axis=0), None, x, feature)


def merge_moments(*parts: FeatureMoments) -> FeatureMoments:
    if not parts:
        raise ValueError("merge_moments: nothing to merge; pass at least one FeatureMoments")
    first = parts[0]
    for p in parts[1:]:
        if p.dim != first.dim or p.feature != first.feature:
            raise ValueError(
                f"merge_moments: cannot merge features of {p.feature or '?'} (dim {p.dim}) with "
                f"{first.feature or '?'} (dim {first.dim}); all shards must use one feature network"
            )
    total = np.sum([p.total for p in parts], axis=0)
    outers = [p.outer for p in parts if p.outer is not None]
    outer = np.sum(outers, axis=0) if outers else None
    rows = np.concatenate([p.rows if p.rows is not None else np.zeros((0, first.dim)) for p in parts])
    return _make(sum(p.n for p in parts), total, outer, rows, first.feature)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)  # symmetrise away rounding
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance_from(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) for means (D,) and covariances (D, D)."""
    r1 = _sqrt_psd(s1)
    inner = r1 @ s2 @ r1  # symmetric PSD with the eigenvalues of S1 S2
    w = np.linalg.eigvalsh((inner + inner.T) / 2)
    tr_sqrt = float(np.sqrt(np.clip(w, 0.0, None)).sum())
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def frechet_distance(real: FeatureMoments, fake: FeatureMoments) -> float:
    """FID (on the FID Inception) or FD (on another network) between two sets of moments."""
    if real.feature != fake.feature or real.dim != fake.dim:
        raise ValueError(
            f"frechet_distance: real features come from {real.feature or '?'} (dim {real.dim}), fake "
            f"from {fake.feature or '?'} (dim {fake.dim}); compute both with the same network"
        )
    return frechet_distance_from(real.mean(), real.cov(), fake.mean(), fake.cov())


def moments_to_npz(m: FeatureMoments) -> dict[str, np.ndarray]:
    """Arrays for np.savez (to cache the real set's statistics next to a face table)."""
    return {"n": np.asarray(m.n), "total": m.total, "outer": m.outer_sum(), "feature": np.asarray(m.feature)}


def moments_from_npz(data: dict) -> FeatureMoments:
    total = np.asarray(data["total"], np.float64)
    return FeatureMoments(
        int(data["n"]),
        total,
        np.asarray(data["outer"], np.float64),
        str(data["feature"]),
        np.zeros((0, total.shape[0])),
    )
