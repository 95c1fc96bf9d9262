"""jobs/evaluate.py's metrics, assembled on the driver from what the Score actors return:

    Score rows (pickled EvalStats, pairs, examples, errors) --StatsCollector.add--> merged statistics
      --assemble_metrics--> metrics.json: every method's scores, warnings, errors, the resolved config

No Ray and no models: the job hands in the names of the networks that scored the outputs
(Networks), so the tests assemble metrics from Score's output directly.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pyarrow as pa

from evaluation.identity import same_recogniser
from evaluation.report import Example
from evaluation.suite import EvalStats, KIDConfig, eval_scores, merge_eval_stats

if TYPE_CHECKING:
    from jobs._evaluate_plan import PairPlan
    from jobs.evaluate import EvaluateConfig


class StatsCollector:
    """The Score actors' rows merged as they arrive, so the driver's memory stays flat in N."""

    def __init__(self) -> None:
        self.merged: EvalStats | None = None  # None until some pair could be scored
        self.examples: list[Example] = []
        self.errors: list[dict] = []  # {pair_id, reason} of every pair that failed somewhere
        self.pairs = 0  # pairs seen, scored or not

    def add(self, batch: pa.Table) -> None:
        """One batch of Score rows (jobs._evaluate_stages.STATS_ROW)."""
        for stats_b, n, ex_b, err in zip(
            *(batch.column(c).to_pylist() for c in ("stats", "pairs", "examples", "errors"))
        ):
            stats = pickle.loads(stats_b)  # our own Score actors' output, never user data
            if stats is not None:
                self.merged = stats if self.merged is None else merge_eval_stats(self.merged, stats)
            self.examples += pickle.loads(ex_b)
            self.errors += json.loads(err)
            self.pairs += n

    def shown(self, n: int) -> list[Example]:
        """The report's examples: the first `n` by pair id, whichever actor scored them."""
        return sorted(self.examples, key=lambda e: e.pair_id)[:n]


@dataclass(frozen=True)
class Networks:
    """What scored the outputs, and what the model was trained against (names, no weights)."""

    identity: str  # the evaluation recogniser
    expression: str
    features: dict | None  # the FD/KID network: name, score_name, kid_name, comparable_to_published, weights
    trained_with: tuple[str, ...] = ()  # identity encoders the model was trained against
    weights_sha256: str | None = None  # of the evaluated model (--checkpoint)


def assemble_metrics(
    cfg: EvaluateConfig,
    plan: PairPlan,
    table_uri: str,
    collected: StatsCollector,
    networks: Networks,
    *,
    commit: str | None,
    seconds: float,
) -> dict:
    """metrics.json: the scores of the model's outputs and of the task's baselines, with the
    warnings a reader needs, the failed pairs, and the resolved config (`commit`: the code's)."""
    if collected.merged is None:
        raise ValueError("assemble_metrics: no pair was scored, nothing to assemble")
    warnings = list(plan.warnings)
    if same_recogniser(networks.identity, networks.trained_with):
        warnings.append(
            f"the identity recogniser {networks.identity} is the one the model was trained "
            "against: its identity scores flatter the model; also report an independent recogniser"
        )
    features = networks.features
    if features and not features["comparable_to_published"]:
        warnings.append(
            f"{features['score_name']}: pass --fid-weights with the standard Inception weights "
            "for FID and KID comparable to papers"
        )
    scores = eval_scores(
        collected.merged,
        features["score_name"] if features else "",
        KIDConfig(cfg.kid_subsets, cfg.kid_subset_size, cfg.seed),
    )
    errors = collected.errors
    return {
        "task": cfg.task,
        "pairs": len(plan.pairs),
        "seed": cfg.seed,
        "split": cfg.split,
        "table": table_uri,
        "source": {"checkpoint": cfg.checkpoint, "images": cfg.images, "weights_sha256": networks.weights_sha256},
        "git_commit": commit,
        "feature_network": features,
        "recogniser": networks.identity,
        "expression_encoder": networks.expression,
        "methods": scores,
        "warnings": warnings,
        "config": asdict(cfg),
        "errors": {
            "count": len(errors),
            "model_outputs_missing_or_bad": scores.get("model", {}).get("failed", 0),
            "items": [{"uri": e["pair_id"], "reason": e["reason"]} for e in errors[:1000]],
        },
        "seconds": seconds,
    }
