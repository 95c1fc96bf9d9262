"""Readers with no weights (sfsr.synth.readers): the nearest exact render tells identity and
expression apart, so they can check the judges (issue 11)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from sfsr.model.training import face_region
from sfsr.release.evaluate_synth import held_out_set, ideal_swaps, render_readings, source_of_each
from sfsr.synth import readers as R
from sfsr.synth.conditioning import expression_targets
from sfsr.synth.dataset import expression_region
from sfsr.synth.factors import FAMILIES

DILATE = 1


@pytest.fixture(scope="module")
def data():
    return held_out_set(16, seed=1)


def _region(data):
    return face_region(torch.from_numpy(data["masks"][:, None]).float(), DILATE)[:, 0].numpy() > 0


def _words(data):
    return [FAMILIES[(expression_region(data["factors"][i]) + 1 + i % 5) % 6] for i in range(len(data["ids"]))]


def _word_outputs(data, words, region):
    targets = expression_targets()
    drawn = [replace(s, expression=tuple(float(v) for v in targets.target(w))) for s, w in zip(data["samples"], words)]
    return R.composite(drawn, data["images"], region)


def _driver_outputs(data, src, region):
    drawn = [replace(s, expression=data["samples"][j].expression) for s, j in zip(data["samples"], src)]
    return R.composite(drawn, data["images"], region)


def test_nearest_picks_the_closest_candidate_inside_the_region_only():
    out = np.zeros((1, 4, 4, 3), np.uint8)
    cand = np.zeros((1, 2, 4, 4, 3), np.uint8)
    cand[0, 0, :2] = 200  # far from the output, but only in rows 0-1
    cand[0, 1, 2:] = 50  # nearer, but only in rows 2-3
    region = np.zeros((1, 4, 4), bool)
    assert R.nearest(out, cand, region | True)[0] == 1
    region[0, 2:] = True  # only rows 2-3 count: candidate 0 is exact there
    assert R.nearest(out, cand, region)[0] == 0


def test_faithful_outputs_are_read_as_what_was_asked_and_copies_as_the_target(data):
    src, region = source_of_each(data["ids"]), _region(data)
    words = _words(data)
    ideal = render_readings(
        data,
        src,
        words,
        ideal_swaps(data, src, DILATE),
        _word_outputs(data, words, region),
        _driver_outputs(data, src, region),
        DILATE,
    )
    assert ideal["swap_identity_rate_render"] == 1.0 and ideal["reenact_word_family_rate_render"] == 1.0
    assert ideal["reenact_driver_rate_render"] == 1.0
    img = data["images"]
    copy = render_readings(data, src, words, img, img, img, DILATE)
    assert copy["swap_identity_rate_render"] == 0.0 and copy["swap_target_id_rate_render"] == 1.0
    assert copy["reenact_word_kept_target_render"] == 1.0 and copy["reenact_word_family_rate_render"] == 0.0
    assert copy["reenact_driver_kept_target_render"] == 1.0


def test_readings_survive_sampling_noise_but_not_another_identity(data):
    rng = np.random.default_rng(0)
    src = source_of_each(data["ids"])
    ideal = ideal_swaps(data, src, DILATE)
    noisy = np.clip(ideal + rng.normal(0, 12, ideal.shape), 0, 255).astype(np.uint8)
    words = _words(data)
    m = render_readings(data, src, words, noisy, data["images"], data["images"], DILATE)
    assert m["swap_identity_rate_render"] >= 0.9
    wrong = ideal_swaps(data, np.roll(src, 1), DILATE)  # each target with a third face's identity
    m = render_readings(data, src, words, wrong, data["images"], data["images"], DILATE)
    assert m["swap_identity_rate_render"] <= 0.2


def test_every_family_is_told_apart(data):
    region = _region(data)
    fam = np.stack([expression_targets().target(f) for f in FAMILIES])
    for k, f in enumerate(FAMILIES):
        out = _word_outputs(data, [f] * len(data["ids"]), region)
        read = R.nearest(out, R.expression_candidates(data["samples"], fam, data["images"], region), region)
        assert (read == k).all(), f


# -- the same reading inside jobs/evaluate.py (evaluation.synth.render_plan / render_statistics)


def _job_pairs(n=12, word=False):
    """Swap (or word reenact) pairs of held-out faces as jobs/evaluate plans them."""
    import json

    from evaluation.synth import render_plan
    from sfsr.synth import draw_sample, synth_params_json

    samples = [draw_sample(k, 3, 200, "test") for k in range(n)]
    params = [json.loads(synth_params_json(s)) for s in samples]
    targets = expression_targets()
    fams = {f: targets.target(f).tolist() for f in FAMILIES}
    pool = [s.identity_id for s in samples]
    plans = []
    for i, t in enumerate(samples):
        if word:  # reenact: identity and background are the same face; the word is another family
            ident, ref = t.identity_id, fams[FAMILIES[(expression_region(t.expression_array) + 1) % 6]]
        else:  # swap: the next face's identity, the target's own expression
            ident, ref = samples[(i + 1) % n].identity_id, list(t.expression)
        plans.append(render_plan(i, ident, params[i], ref, pool, fams))
    return samples, plans


def _drawn(samples, plans, mask, identity=True, expression=False):
    from sfsr.synth.render import render

    out = []
    for s, p, m in zip(samples, plans, mask):
        asked = replace(
            s,
            identity_id=p["render_identities"][0] if identity else s.identity_id,
            expression=tuple(p["render_expressions"][0]) if expression else s.expression,
        )
        out.append(np.where(m[..., None] > 0, render(asked, 32)[0], render(s, 32)[0]))
    return np.stack(out)


def test_job_reader_scores_faithful_outputs_one_and_copies_zero():
    from evaluation.synth import merge_render, render_score, render_statistics
    from sfsr.synth.render import render

    samples, plans = _job_pairs()
    images, masks = map(np.stack, zip(*[render(s, 32) for s in samples]))
    assert all(len(p["render_identities"]) == 8 and len(set(p["render_identities"])) == 8 for p in plans)
    swap = render_score(render_statistics(_drawn(samples, plans, masks), plans, masks))
    assert swap["identity_accuracy"] == 1.0 and swap["expression_accuracy"] == 1.0
    copy = render_score(render_statistics(images, plans, masks))
    assert copy["identity_accuracy"] == 0.0 and copy["expression_accuracy"] == 1.0  # a copy keeps the expression
    ok = np.arange(len(images)) % 2 == 0  # missing outputs are counted as missing, not as misses
    half = render_statistics(images, plans, masks, ok)
    assert half.identity_hit.n == 6 and half.identity_hit.missing == 6
    both = render_score(merge_render(render_statistics(_drawn(samples, plans, masks), plans, masks), half))
    assert both["identity_accuracy"] == pytest.approx(12 / 18)

    samples, plans = _job_pairs(word=True)
    assert all(len(p["render_identities"]) == 8 for p in plans)  # identity == background: 7 others
    moved = render_score(render_statistics(_drawn(samples, plans, masks, expression=True), plans, masks))
    assert moved["identity_accuracy"] == 1.0 and moved["expression_accuracy"] == 1.0
    still = render_score(render_statistics(images, plans, masks))
    assert still["identity_accuracy"] == 1.0 and still["expression_accuracy"] == 0.0
