"""The pairing protocol, the trivial baselines, and every metric through the suite on synthetic
pairs: baselines score as they must, and batching or sharding never changes a number."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest

from evaluation.features import load_extractor
from evaluation.identity import make_gallery
from evaluation.protocol import Face, baseline_outputs, draw_pairs, faces_from_rows, paste
from evaluation.suite import EvalModels, KIDConfig, PairBatch, batch_statistics, eval_scores, merge_eval_stats
from evaluation.synth import background_psnr, judge_encoders
from sfsr.synth import draw_sample, load_judges, render

S = 64


def _faces(n_people: int, per_person: int) -> list[Face]:
    return [Face(f"f{p}-{k}", f"person{p}") for p in range(n_people) for k in range(per_person)]


def test_pairs_never_repeat_a_person_and_are_reproducible():
    faces = _faces(6, 3)
    person = {f.face_id: f.identity for f in faces}
    for task in ("swap", "reenact", "generate"):
        pairs = draw_pairs(faces, 300, task, seed=4)
        assert pairs == draw_pairs(faces, 300, task, seed=4)
        assert pairs[:50] == draw_pairs(faces, 50, task, seed=4)  # pair k does not depend on n
        assert pairs != draw_pairs(faces, 300, task, seed=5)
        assert len({p.pair_id for p in pairs}) == 300
        for p in pairs:
            assert person[p.identity] != person[p.driver]
            if task == "swap":
                assert p.background == p.driver
            elif task == "reenact":
                assert p.background == p.identity
            else:
                assert person[p.background] != person[p.identity]
        used = {p.identity for p in pairs} | {p.driver for p in pairs}
        assert used == set(person)  # every face is drawn, from every person


def test_pairs_are_uniform_over_other_faces():
    faces = [Face("a0", "a"), Face("a1", "a"), Face("b0", "b"), Face("c0", "c"), Face("c1", "c")]
    pairs = draw_pairs(faces, 4000, "swap", seed=0)
    from_a = [p.background for p in pairs if p.identity.startswith("a")]
    counts = {f: from_a.count(f) / len(from_a) for f in ("b0", "c0", "c1")}
    assert all(abs(c - 1 / 3) < 0.04 for c in counts.values()), counts


def test_words_self_reenactment_and_errors():
    faces = _faces(3, 2)
    words = ("joyful", "furious", "gloomy")
    pairs = draw_pairs(faces, 30, "generate", seed=1, words=words)
    assert all(p.driver is None and p.word in words for p in pairs)
    selfr = draw_pairs(faces, 30, "reenact", seed=1, self_reenactment=True)
    person = {f.face_id: f.identity for f in faces}
    assert all(person[p.driver] == person[p.identity] and p.driver != p.identity for p in selfr)
    with pytest.raises(ValueError, match="at least 2 identities"):
        draw_pairs(_faces(1, 4), 5, "swap")
    with pytest.raises(ValueError, match="choose one of"):
        draw_pairs(faces, 5, "morph")


def test_identity_labels_from_the_face_table():
    faces, warnings = faces_from_rows(
        ["x", "y", "z"], [{"identity_label": "obama"}, {"synth_params": '{"identity_id": 7}'}, None]
    )
    assert [f.identity for f in faces] == ["obama", "synth-7", "z"]
    assert len(warnings) == 1 and "1 of 3 faces have no identity label" in warnings[0]


def test_baselines_copy_and_paste():
    a = np.full((2, 4, 4, 3), 10, np.uint8)
    b = np.full((2, 4, 4, 3), 200, np.uint8)
    mask = np.zeros((2, 4, 4), np.uint8)
    mask[:, 1:3, 1:3] = 255
    out = baseline_outputs("swap", a, mask, b, b)
    assert (out["copy_target"] == b).all()
    assert (out["paste_source"][:, 1:3, 1:3] == 10).all() and out["paste_source"][:, 0].min() == 200
    assert set(baseline_outputs("reenact", a, mask, a, b)) == {"copy_source", "copy_driver"}
    assert (paste(a, np.zeros((2, 4, 4)), b) == b).all()
    assert background_psnr(b, b, mask).tolist() == [100.0, 100.0]


@pytest.fixture(scope="module")
def synthetic():
    """32 swap pairs of synthetic faces with the judges as recogniser and EfficientNet features."""
    judges = load_judges(32)
    samples = [draw_sample(k, 3, judges.cfg.n_identities, "test") for k in range(60)]
    rendered = [render(s, S) for s in samples]
    faces = [Face(f"f{k}", f"synth-{s.identity_id}") for k, s in enumerate(samples)]
    at = {f.face_id: k for k, f in enumerate(faces)}
    pairs = draw_pairs(faces, 32, "swap", seed=0)

    def stack(role: str, j: int) -> np.ndarray:
        return np.stack([rendered[at[getattr(p, role)]][j] for p in pairs])

    enc = judge_encoders(judges)
    sources = sorted({p.identity for p in pairs})
    from sfsr.faces.analyze import encode_crops

    gallery = make_gallery(
        encode_crops(enc, np.stack([rendered[at[f]][0] for f in sources]))[0], [faces[at[f]].identity for f in sources]
    )
    batch = PairBatch(
        "swap",
        [p.pair_id for p in pairs],
        [faces[at[p.identity]].identity for p in pairs],
        stack("identity", 0),
        stack("identity", 1),
        stack("background", 0),
        stack("background", 1),
        stack("driver", 0),
        synth_identity=np.array([samples[at[p.identity]].identity_id for p in pairs]),
        synth_expression=np.stack([samples[at[p.driver]].expression_array for p in pairs]),
    )
    # a stand-in "model": the paste baseline with every 4th output missing (an unreadable file)
    batch.outputs["model"] = baseline_outputs("swap", batch.identity, batch.identity_mask, batch.background, None)[
        "paste_source"
    ]
    batch.output_ok["model"] = np.arange(32) % 4 != 0
    models = EvalModels(
        extractor=_Cached(load_extractor()), pack=enc, judges=judges, gallery=gallery, pose=False, kid_capacity=30
    )
    return batch, models


class _Cached:
    """The feature extractor with a cache by image content, keeping the first `dims` features:
    this file checks how statistics merge, which does not depend on the feature size (test_eval_fid
    checks full-size features, and that they do not depend on the batch)."""

    def __init__(self, extractor, dims: int = 128) -> None:  # noqa: ANN001
        self.extractor, self.cache, self.dims = extractor, {}, dims
        self.info = dataclasses.replace(extractor.info, dim=dims)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        keys = [hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest() for a in images]
        todo = sorted({k: i for i, k in enumerate(keys) if k not in self.cache}.values())
        if todo:
            for i, f in zip(todo, self.extractor(np.stack([images[i] for i in todo]))):
                self.cache[keys[i]] = f[: self.dims]
        return np.stack([self.cache[k] for k in keys]) if keys else np.zeros((0, self.info.dim), np.float32)


def _slice(batch: PairBatch, idx: np.ndarray) -> PairBatch:
    pick = lambda a: None if a is None else a[idx]  # noqa: E731
    return PairBatch(
        batch.task,
        [batch.pair_ids[i] for i in idx],
        [batch.identity_labels[i] for i in idx],
        batch.identity[idx],
        batch.identity_mask[idx],
        batch.background[idx],
        batch.background_mask[idx],
        pick(batch.driver),
        {k: v[idx] for k, v in batch.outputs.items()},
        {k: v[idx] for k, v in batch.output_ok.items()},
        pick(batch.expression_reference),
        pick(batch.synth_identity),
        pick(batch.synth_expression),
    )


@pytest.fixture(scope="module")
def reference(synthetic):
    batch, models = synthetic
    return eval_scores(batch_statistics(batch, models), "fd", KIDConfig(subsets=10, subset_size=20))


def test_baselines_score_as_they_must(reference):
    copy, pasted = reference["copy_target"], reference["paste_source"]
    # copying the target transfers no identity; pasting the source face transfers most of it
    assert copy["synth"]["identity_accuracy"] <= 0.05 and pasted["synth"]["identity_accuracy"] >= 0.8
    assert copy["identity"]["cosine"]["mean"] < 0.3 and pasted["identity"]["cosine"]["mean"] > 0.7
    assert copy["identity"]["retrieval_top1"] <= 0.05 and pasted["identity"]["retrieval_top1"] >= 0.8
    # ... and the copy keeps the target's expression and background perfectly, the paste does not
    assert copy["expression"]["l2"]["max"] == 0.0 and pasted["expression"]["l2"]["mean"] > 0.3
    assert copy["synth"]["background_psnr_db"]["min"] == 100.0 and pasted["synth"]["background_psnr_db"]["mean"] < 40
    # identical sets: FD 0 up to the numerical floor of singular covariances (32 images, 128 dims)
    assert abs(copy["fd"]["value"]) < 1e-3 < 1 < pasted["fd"]["value"]


def test_failed_outputs_are_counted_not_scored(reference):
    model = reference["model"]
    assert model["failed"] == 8 and model["fd"]["n_fake"] == 24
    assert model["identity"]["cosine"]["n"] == 24 and model["identity"]["cosine"]["missing"] == 8
    assert model["synth"]["background_psnr_db"]["missing"] == 8


def _leaves(d, prefix=""):  # noqa: ANN001, ANN202
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _leaves(v, f"{prefix}/{k}")
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _leaves(v, f"{prefix}[{i}]")
    else:
        yield prefix, d


@pytest.mark.parametrize(("batch_size", "shards"), [(1, 1), (7, 1), (64, 1), (7, 2), (7, 5)])
def test_every_metric_is_independent_of_batching_and_sharding(synthetic, reference, batch_size, shards):
    batch, models = synthetic
    parts = []
    for shard in np.array_split(np.arange(32), shards):
        acc = None  # merge as batches arrive, as a shard's actor does: memory stays flat
        for j in range(0, len(shard), batch_size):
            st = batch_statistics(_slice(batch, shard[j : j + batch_size]), models)
            acc = st if acc is None else merge_eval_stats(acc, st)
        parts.append(acc)
    got = eval_scores(merge_eval_stats(*parts), "fd", KIDConfig(subsets=10, subset_size=20))
    ref = dict(_leaves(reference))
    checked = 0
    for key, value in _leaves(got):
        want = ref[key]
        if isinstance(value, float) and not math.isnan(value):
            # FD of identical sets (copy baseline) sits at the ~1e-5 floor of singular covariances
            floor = 1e-4 if key.endswith("fd/value") else 1e-9
            assert abs(value - want) <= 1e-6 * max(abs(value), abs(want)) + floor, key
            checked += 1
        else:
            assert value == want, key
    assert checked > 60
