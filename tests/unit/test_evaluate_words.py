"""sfsr.release.evaluate_words: the request plan and the granularity figures (issue 14, item 1)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from sfsr.expressions.vocabulary import FAMILIES, WORDS
from sfsr.release.evaluate_synth import held_out_set
from sfsr.release.evaluate_words import granularity, plan
from sfsr.synth.dataset import expression_region
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
