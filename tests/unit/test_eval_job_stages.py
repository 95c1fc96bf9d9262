"""The evaluation job's stages without Ray: face rows -> pairs -> outputs -> statistics, with
missing faces, missing outputs and unreadable outputs counted and listed, and merged into metrics."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from evaluation.protocol import Face, draw_pairs
from evaluation.suite import eval_scores
from jobs import _evaluate_stages as st
from jobs._evaluate_metrics import Networks, StatsCollector, assemble_metrics
from jobs._evaluate_plan import PairPlan
from jobs.evaluate import EvaluateConfig
from sfsr.io.images import decode_png, encode_png
from sfsr.synth import EXPRESSION_FACTORS, draw_sample, render, synth_params_json

S = 64


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    samples = [draw_sample(k, 9, 200, "test") for k in range(24)]
    rendered = [render(s, S) for s in samples]
    ids = [f"face{k:02d}" for k in range(24)]
    faces_tbl = pa.table(
        {
            "face_id": ids,
            "image": [encode_png(r[0]) for r in rendered],
            "face_mask": [encode_png(r[1]) for r in rendered],
        }
    )
    faces = [Face(i, f"synth-{s.identity_id}") for i, s in zip(ids, samples)]
    pairs = draw_pairs(faces + [Face("ghost", "nobody")], 20, "swap", seed=2)
    labels = {f.face_id: f.identity for f in faces} | {"ghost": "nobody"}
    synth = {i: json.loads(synth_params_json(s)) for i, s in zip(ids, samples)}
    meta = {
        p.pair_id: {
            "index": p.index,
            "bucket": p.index % 3,
            "identity": p.identity,
            "background": p.background,
            "driver": p.driver,
            "word": None,
            "seed": p.seed,
            "identity_label": labels[p.identity],
            "synth_identity": synth.get(p.identity, {}).get("identity_id", -1),
            "synth_expression": [synth.get(p.driver, synth[ids[0]])["expression"][f] for f in EXPRESSION_FACTORS],
        }
        for p in pairs
    }
    return faces_tbl, pairs, meta, tmp_path_factory.mktemp("outputs")


def _assembled(faces_tbl, pairs, meta) -> pa.Table:
    exploded = st.explode_faces(faces_tbl, st.role_refs(pairs, 3))
    groups = [exploded.filter(pa.compute.equal(exploded.column("bucket"), b)) for b in range(3)]
    return pa.concat_tables([st.assemble_pairs(g, meta) for g in groups if g.num_rows])


def test_pairs_are_assembled_with_every_role(setup):
    faces_tbl, pairs, meta, _ = setup
    rows = _assembled(faces_tbl, pairs, meta).to_pylist()
    ghost = [p.pair_id for p in pairs if "ghost" in (p.identity, p.background)]
    assert ghost, "the fixture should draw at least one pair with a face missing from the table"
    got = {r["pair_id"]: r for r in rows}
    assert set(got) | set(ghost) == {p.pair_id for p in pairs}
    for p in pairs:
        r = got.get(p.pair_id)
        if r is None:
            continue  # a pair with no face at all in the table has no rows to assemble
        if p.pair_id in ghost:
            assert "face not in the table" in r["error"] and "ghost" in r["error"]
        else:
            assert r["error"] is None and decode_png(r["identity_png"]).shape == (S, S, 3)
            assert r["background_png"] == r["driver_png"]  # swap: the target is the driver
            assert decode_png(r["background_mask"]).shape == (S, S)


def test_outputs_read_scored_and_failures_listed(setup):
    faces_tbl, pairs, meta, out_dir = setup
    assembled = _assembled(faces_tbl, pairs, meta)
    good = [r for r in assembled.to_pylist() if r["error"] is None]
    outputs = {}
    for k, r in enumerate(good):
        path = out_dir / f"{r['pair_id']}.png"
        if k == 0:
            continue  # missing output
        if k == 1:
            path.write_bytes(b"not a png")  # unreadable output
        else:  # the target itself, at twice the size: resized back to the crop size
            big = np.repeat(np.repeat(decode_png(r["background_png"]), 2, axis=0), 2, axis=1)
            path.write_bytes(encode_png(big))
        outputs[r["pair_id"]] = str(path)
    with_out = st.read_outputs(assembled, outputs, S)
    errs = {r["pair_id"]: r["error"] for r in with_out.to_pylist() if r["error"]}
    assert errs[good[0]["pair_id"]].startswith("missing output") and errs[good[1]["pair_id"]].startswith("bad output")
    spec = st.ModelSpec(features="none", recogniser="judges")
    score = st.Score("swap", meta, spec, examples=4)
    collected = StatsCollector()
    for i in range(0, with_out.num_rows, 5):
        collected.add(score(with_out.slice(i, 5)))
    listed = collected.errors
    scores = eval_scores(collected.merged)
    model = scores["model"]
    # every pair is accounted for: scored, failed (no output) or listed (missing face)
    assert model["pairs"] + sum("face not in the table" in e["reason"] for e in listed) == with_out.num_rows
    assert model["failed"] == 2 and len(listed) == len(errs)
    # the outputs are the targets, so the model scores exactly like the copy-target baseline
    assert model["synth"]["identity_accuracy"] == scores["copy_target"]["synth"]["identity_accuracy"]
    assert model["synth"]["background_psnr_db"]["min"] > 40
    # the judge reads the target's own expression back from a copy of the target: small error
    assert scores["copy_target"]["synth"]["expression_mae"]["mean"] < 0.15
    examples = collected.examples
    assert examples and all({"source", "target", "copy_target", "paste_source"} <= set(e.images) for e in examples)
    assert collected.pairs == with_out.num_rows
    assert [e.pair_id for e in collected.shown(2)] == sorted(e.pair_id for e in examples)[:2]

    # metrics.json from the same statistics: scores, warnings, every failure listed, the config
    plan = PairPlan(faces=[], pairs=pairs, warnings=("3 of 24 faces have no identity label",))
    cfg = EvaluateConfig(
        table="t",
        output="o",
        images=str(out_dir),
        seed=2,
        kid_subsets=4,
        kid_subset_size=4,
        training_recognisers=("Synth-Judge-Identity-32px@2",),
    )
    networks = Networks(
        "synth-judge-identity-32px",
        "synth-judge-factors-32px",
        {
            "name": "lite",
            "score_name": "FD_lite",
            "kid_name": "KID_lite",
            "comparable_to_published": False,
            "weights": None,
        },
        cfg.training_recognisers,
    )
    metrics = assemble_metrics(cfg, plan, "t/faces", collected, networks, commit="abc", seconds=1.5)
    assert metrics["methods"] == scores and metrics["pairs"] == len(pairs) and metrics["table"] == "t/faces"
    assert metrics["errors"]["count"] == len(errs) and metrics["errors"]["model_outputs_missing_or_bad"] == 2
    assert {e["uri"] for e in metrics["errors"]["items"]} == {e["pair_id"] for e in listed}
    assert metrics["config"]["training_recognisers"] == ("Synth-Judge-Identity-32px@2",)
    assert metrics["config"]["images"] == str(out_dir) and metrics["git_commit"] == "abc"
    warned = metrics["warnings"]  # the plan's, the recogniser the model was trained against, non-standard FD
    assert warned[0] == plan.warnings[0] and "is the one the model was trained against" in warned[1]
    assert warned[2].startswith("FD_lite: pass --fid-weights") and len(warned) == 3
    plain = assemble_metrics(cfg, plan, "t/faces", collected, Networks("arcface", "expr", None), commit=None, seconds=1)
    assert plain["warnings"] == list(plan.warnings) and plain["feature_network"] is None
    with pytest.raises(ValueError, match="no pair was scored"):
        assemble_metrics(cfg, plan, "t/faces", StatsCollector(), networks, commit=None, seconds=0)
