"""What jobs/evaluate.py scores, planned before any Ray work: the faces of the table's split, the
pairs drawn from them (evaluation/protocol.py), and what the actors need to know of each pair.

    face table columns (face_id, split, labels) --plan_pairs--> PairPlan --pair_meta--> {pair_id: meta}

Pure functions of the table's columns and the job's settings: no Ray, no model, so the tests
call them directly and a --pairs-only run needs no cluster.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from evaluation.protocol import Face, Pair, draw_pairs, faces_from_rows
from sfsr.synth.factors import EXPRESSION_FACTORS

if TYPE_CHECKING:
    from jobs.evaluate import EvaluateConfig


@dataclass(frozen=True)
class PairPlan:
    faces: list[Face]  # every face of the split, with its person
    pairs: list[Pair]
    synth: dict[str, dict] = field(default_factory=dict)  # face_id -> synthetic parameters (synthetic tables)
    warnings: tuple[str, ...] = ()  # about the faces (unknown identities), shown in the report
    is_synth: bool = False  # the table was encoded by the synthetic judges

    @property
    def labels(self) -> dict[str, str]:
        """face_id -> person."""
        return {f.face_id: f.identity for f in self.faces}


def synth_params(labels: dict | None) -> dict | None:
    """A synthetic face's parameters from its labels.synth_params JSON, expression in
    EXPRESSION_FACTORS order, or None for a face without them."""
    sp = json.loads((labels or {}).get("synth_params") or "null")
    if not sp:
        return None
    # by name: synth_params is JSON with sorted keys, not EXPRESSION_FACTORS order
    return {
        "identity_id": sp["identity_id"],
        "expression": [sp["expression"][f] for f in EXPRESSION_FACTORS],
        "pose": sp.get("pose") or {},
        "background_seed": sp.get("background_seed", 0),
    }


def plan_pairs(
    cfg: EvaluateConfig,
    face_ids: list[str],
    splits: list[str],
    labels: list[dict | None],
    identity_model: str | None,
    where: str,
) -> PairPlan:
    """The pairs of `cfg` (task, number, seed, split, words) drawn from a face table's columns;
    `where` names the table in the error given when the split has no faces."""
    keep = [i for i, s in enumerate(splits) if cfg.split == "all" or s == cfg.split]
    if not keep:
        raise SystemExit(
            f"{where}: no faces in split {cfg.split!r} (splits there: {sorted(set(splits))}); pick another --split"
        )
    faces, warnings = faces_from_rows([face_ids[i] for i in keep], [labels[i] for i in keep])
    is_synth = (identity_model or "").startswith("synth-judge")
    synth = {}
    if is_synth:
        for i in keep:
            params = synth_params(labels[i])
            if params:
                synth[face_ids[i]] = params
    words = None
    if cfg.words:
        from sfsr.expressions import WORDS

        words = tuple(w.word for w in WORDS)
    pairs = draw_pairs(faces, cfg.pairs, cfg.task, cfg.seed, words=words)
    return PairPlan(faces, pairs, synth, tuple(warnings), is_synth)


def pair_meta(plan: PairPlan, buckets: int) -> dict:
    """pair_id -> what the actors need to know of each pair (broadcast to them)."""
    pairs, labels, synth = plan.pairs, plan.labels, plan.synth
    targets = families = None
    if synth:
        from evaluation.synth import render_plan
        from sfsr.synth.conditioning import expression_targets
        from sfsr.synth.factors import FAMILIES

        targets = expression_targets()
        families = {f: targets.target(f).tolist() for f in FAMILIES}
        pool = [synth[p.identity]["identity_id"] for p in pairs]
    meta = {}
    for p in pairs:
        m = {
            "index": p.index,
            "bucket": p.index % buckets,
            "identity": p.identity,
            "background": p.background,
            "driver": p.driver,
            "word": p.word,
            "seed": p.seed,
            "identity_label": labels[p.identity],
        }
        if synth:
            m["synth_identity"] = synth[p.identity]["identity_id"]
            m["synth_expression"] = (
                targets.target(p.word).tolist() if p.word is not None else synth[p.driver]["expression"]
            )
            m.update(
                render_plan(p.index, m["synth_identity"], synth[p.background], m["synth_expression"], pool, families)
            )
        meta[p.pair_id] = m
    return meta
