"""jobs/evaluate.py's pure parts without Ray: the pairs planned from a face table's columns
(jobs._evaluate_plan), and a --pairs-only run, which needs no cluster."""

from __future__ import annotations

import json

import pytest

from jobs._evaluate_plan import pair_meta, plan_pairs, synth_params
from jobs.evaluate import EvaluateConfig, run
from sfsr.synth import EXPRESSION_FACTORS, draw_sample, synth_params_json
from tests.fixtures.tables import face_table

JUDGE = "synth-judge-identity-32px"


def _synth_columns(n: int = 12) -> tuple[list[str], list[str], list[dict]]:
    """face_id, split and labels columns of `n` synthetic faces, every third one held out."""
    samples = [draw_sample(k, 5, 4, "test") for k in range(n)]
    ids = [f"f{k:02d}" for k in range(n)]
    splits = ["test" if k % 3 else "train" for k in range(n)]
    labels = [{"identity_label": None, "expression_word": None, "synth_params": synth_params_json(s)} for s in samples]
    return ids, splits, labels


def _cfg(**kw) -> EvaluateConfig:
    return EvaluateConfig(**({"table": "t", "output": "o", "pairs_only": True} | kw))


def test_pairs_come_from_the_split_and_never_pair_a_person_with_themselves() -> None:
    ids, splits, labels = _synth_columns()
    plan = plan_pairs(_cfg(pairs=40, seed=3), ids, splits, labels, JUDGE, where="t")
    held_out = {i for i, s in zip(ids, splits) if s == "test"}
    assert {f.face_id for f in plan.faces} == held_out and len(plan.pairs) == 40 and plan.is_synth
    people = plan.labels
    assert all(p.identity in held_out and p.background in held_out for p in plan.pairs)
    assert all(people[p.identity] != people[p.background] for p in plan.pairs)
    assert plan.pairs == plan_pairs(_cfg(pairs=40, seed=3), ids, splits, labels, JUDGE, where="t").pairs  # seeded
    assert plan.pairs != plan_pairs(_cfg(pairs=40, seed=4), ids, splits, labels, JUDGE, where="t").pairs
    assert len(plan_pairs(_cfg(split="all"), ids, splits, labels, JUDGE, where="t").faces) == len(ids)


def test_synth_params_are_read_by_factor_name_and_only_on_a_judge_table() -> None:
    ids, splits, labels = _synth_columns()
    params = json.loads(labels[1]["synth_params"])
    got = synth_params(labels[1])
    assert got["expression"] == [params["expression"][f] for f in EXPRESSION_FACTORS]
    assert got["identity_id"] == params["identity_id"] and synth_params(None) is None
    plan = plan_pairs(_cfg(), ids, splits, labels, JUDGE, where="t")
    assert set(plan.synth) == {f.face_id for f in plan.faces}
    other = plan_pairs(_cfg(), ids, splits, labels, "insightface-arcface@1", where="t")
    assert other.synth == {} and not other.is_synth


def test_unlabelled_faces_warn_and_an_empty_split_names_the_table() -> None:
    plan = plan_pairs(_cfg(pairs=4, split="all"), ["a", "b", "c"], ["x"] * 3, [None] * 3, None, where="t")
    assert len(plan.warnings) == 1 and "3 of 3 faces have no identity label" in plan.warnings[0]
    with pytest.raises(SystemExit, match=r"photos/faces: no faces in split 'test' \(splits there: \['x'\]\)"):
        plan_pairs(_cfg(), ["a"], ["x"], [None], None, where="photos/faces")


def test_word_pairs_and_meta_carry_what_the_actors_need() -> None:
    ids, splits, labels = _synth_columns()
    plan = plan_pairs(_cfg(task="reenact", words=True, pairs=10), ids, splits, labels, JUDGE, where="t")
    assert all(p.word and p.driver is None for p in plan.pairs)
    meta = pair_meta(plan, buckets=3)
    assert list(meta) == [p.pair_id for p in plan.pairs]
    for p in plan.pairs:
        m = meta[p.pair_id]
        assert m["bucket"] == p.index % 3 and m["identity_label"] == plan.labels[p.identity]
        assert m["synth_identity"] == plan.synth[p.identity]["identity_id"]
        assert len(m["synth_expression"]) == len(EXPRESSION_FACTORS) and "render_identities" in m
    swap = plan_pairs(_cfg(pairs=6), ids, splits, labels, "insightface-arcface@1", where="t")
    assert all("synth_identity" not in m for m in pair_meta(swap, 1).values())


def test_pairs_only_run_writes_the_pairs_without_a_cluster(tmp_path) -> None:
    rows = [(who, "test", [1.0, 0.0]) for who in "aabbcc"]
    face_table(tmp_path / "faces", rows)
    out = tmp_path / "eval"
    summary = run(_cfg(table=str(tmp_path), output=str(out), pairs=5))  # the ingest folder holding faces/
    written = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert summary == {"pairs": 5, "pairs_file": str(out / "pairs.jsonl")} and len(written) == 5
    person = {f"f{i}": who for i, (who, _, _) in enumerate(rows)}
    assert all(person[p["identity"]] != person[p["background"]] for p in written)
