"""Expression transfer: L2 distance between the expression vectors of output and reference.

The reference is the driver (reenactment, simultaneous generation with a driver) or the target
(face swapping: the output should keep the target's expression). The encoder is any expression
encoder of a pack (the builtin FER + geometry vector, an insightface pack's, or a user-supplied
ONNX expression / 3DMM regressor wrapped as a pack encoder): this module only sees its (B, D)
vectors and records its name, since distances from different encoders are not comparable.
For expression words there is no driver image: the reference is the word's target vector in the
same encoder's space (sfsr.expressions.ExpressionTargets).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.stats import Bins, ScalarStats, merge_scalar, scalar_stats


def expression_distance(output: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Row-wise L2 of (N, D) and (N, D) -> (N,) float64 (NaN where a row is NaN)."""
    a, b = np.asarray(output, np.float64), np.asarray(reference, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"expression_distance: need two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
    return np.sqrt(np.square(a - b).sum(axis=1))


@dataclass(frozen=True)
class ExpressionStats:
    encoder: str
    l2: ScalarStats


REPORT_BINS = Bins(0.0, 2.0, 40)


def expression_statistics(
    output: np.ndarray, reference: np.ndarray, encoder: str, bins: Bins = REPORT_BINS
) -> ExpressionStats:
    """Per-pair L2 of a batch. `bins` only shapes the report's histogram (values beyond it are
    counted in the overflow bin); keep it the same for every shard of one evaluation."""
    return ExpressionStats(encoder, scalar_stats(expression_distance(output, reference), bins))


def merge_expression(*parts: ExpressionStats) -> ExpressionStats:
    names = {p.encoder for p in parts}
    if len(names) != 1:
        raise ValueError(f"merge_expression: parts come from different encoders {sorted(names)}")
    return ExpressionStats(parts[0].encoder, merge_scalar(*[p.l2 for p in parts]))


def expression_score(stats: ExpressionStats) -> dict:
    return {"encoder": stats.encoder, "l2": stats.l2.summary()}
