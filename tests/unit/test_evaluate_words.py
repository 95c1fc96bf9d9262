"""sfsr.release.evaluate_words: the request plan and the granularity figures (issue 14, item 1)."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import torch

from sfsr.expressions.vocabulary import FAMILIES, WORDS
from sfsr.model.training import face_region
from sfsr.release.evaluate_synth import held_out_set
from sfsr.release.evaluate_words import evaluate, granularity, plan
from sfsr.synth.dataset import expression_region
from sfsr.synth.render import render
from sfsr.synth.words import word_target


def test_plan_asks_every_word_of_faces_outside_its_family():
    data = held_out_set(12, seed=3)
    faces, words = plan(data, repeats=2)
    assert Counter(w.word for w in words) == {w.word: 2 for w in WORDS}
    regions = [FAMILIES[expression_region(data["factors"][i])] for i in faces]
    assert all(r != w.family for r, w in zip(regions, words))
    assert max(Counter(faces.tolist()).values()) - min(Counter(faces.tolist()).values()) <= 30  # spread


def test_granularity_of_exact_targets_is_perfect_and_of_noise_is_not():
    words = list(WORDS)
    exact = granularity(np.stack([word_target(w) for w in words]), words)
    assert min(v for f, v in exact["intensity_rank_correlation"].items() if f != "surprise") > 0.9
    assert all(v == 1.0 for v in exact["subcluster_accuracy"].values())
    assert "surprise" not in exact["subcluster_accuracy"] and exact["subcluster_chance"]["joy"] == round(1 / 7, 4)
    rng = np.random.default_rng(0)
    noise = granularity(rng.uniform(-1, 1, (len(words), 7)).astype(np.float32), words)
    assert np.mean(list(noise["subcluster_accuracy"].values())) < 0.6


class _StandIn:
    """A generator stand-in for evaluate(): `exact` paints the exact render of the vector it is
    given inside the repainted region (a perfect model), else it returns its input (a copy)."""

    def __init__(self, data: dict, repeats: int, exact: bool) -> None:
        from sfsr.synth.conditioning import expression_targets

        faces, _ = plan(data, repeats)
        self.samples = [data["samples"][i] for i in faces]
        self.exact = exact
        self.encoders = SimpleNamespace(targets=expression_targets())
        self.model = SimpleNamespace(config=SimpleNamespace(mask_dilate=1))

    def generate(self, images, *, expression, masks, **_) -> np.ndarray:
        if not self.exact:
            return images.copy()
        region = face_region(torch.from_numpy(masks[:, None]).float(), 1)[:, 0].numpy() > 0
        drawn = [render(replace(s, expression=tuple(map(float, v))), 32)[0] for s, v in zip(self.samples, expression)]
        return np.where(region[..., None], np.stack(drawn), images)


def test_retrieval_reads_exact_renders_as_the_word_and_copies_as_kept():
    data = held_out_set(12, seed=3)
    perfect = evaluate(_StandIn(data, 1, exact=True), data, 1)
    assert perfect["retrieval_rate"] == 1.0 and perfect["retrieval_kept_rate"] == 0.0
    assert set(perfect["retrieval_rate_by_intensity"]) == {"low", "mid", "high"}
    assert all(v == 1.0 for v in perfect["retrieval_rate_by_intensity"].values())
    assert perfect["progress_mean"] > 0.9
    copy = evaluate(_StandIn(data, 1, exact=False), data, 1)
    assert copy["retrieval_rate"] == 0.0 and copy["retrieval_kept_rate"] == 1.0 and copy["progress_mean"] == 0.0
