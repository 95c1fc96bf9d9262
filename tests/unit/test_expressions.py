"""sfsr.expressions: the 135-word vocabulary, lookup, word -> target resolution, travel, CLI."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from sfsr.expressions import (
    FAMILIES,
    FER_CLASSES,
    WORDS,
    ExpressionBank,
    ExpressionSpace,
    ExpressionTargets,
    UnknownExpressionError,
    builtin_face_space,
    interpolate,
    lookup,
    space_from_output_spec,
    words_by_family,
)
from sfsr.expressions.cli import register
from sfsr.synth.conditioning import expression_targets
from sfsr.synth.words import word_target

# Shaver et al. (1987), Figure 1: words per family and the subclusters of each family.
SHAVER_COUNTS = {"love": 16, "joy": 33, "surprise": 3, "anger": 29, "sadness": 37, "fear": 17}
SHAVER_SUBCLUSTERS = {
    "love": {"affection", "lust", "longing"},
    "joy": {"cheerfulness", "zest", "contentment", "pride", "optimism", "enthrallment", "relief"},
    "surprise": {"surprise"},
    "anger": {"irritation", "exasperation", "rage", "disgust", "envy", "torment"},
    "sadness": {"suffering", "sadness", "disappointment", "shame", "neglect", "sympathy"},
    "fear": {"horror", "nervousness"},
}


# -- vocabulary -------------------------------------------------------------------------------


def test_exactly_135_unique_words_in_six_families():
    names = [w.word for w in WORDS]
    assert len(names) == 135
    assert len(set(names)) == 135
    groups = words_by_family()
    assert tuple(groups) == FAMILIES == ("love", "joy", "surprise", "anger", "sadness", "fear")
    assert {f: len(ws) for f, ws in groups.items()} == SHAVER_COUNTS
    for family, words in groups.items():
        assert {w.subcluster for w in words} == SHAVER_SUBCLUSTERS[family]
    # Every family name is itself one of the words (Shaver's prototype words).
    assert all(lookup(f).family == f for f in FAMILIES)


def test_known_placements():
    assert (lookup("hysteria").family, lookup("hysteria").subcluster) == ("fear", "horror")
    assert lookup("contentment").family == "joy"
    assert lookup("contentment").subcluster == "contentment"
    assert lookup("contempt").subcluster == "disgust"
    assert lookup("homesickness").subcluster == "neglect"
    assert lookup("astonishment").family == "surprise"


def test_intensities_in_range_and_ordered_by_meaning():
    assert all(0.0 <= w.intensity <= 1.0 for w in WORDS)
    i = {w.word: w.intensity for w in WORDS}
    assert i["irritation"] < i["anger"] < i["rage"]
    assert i["annoyance"] < i["fury"]
    assert i["contentment"] < i["happiness"] < i["ecstasy"]
    assert i["worry"] < i["terror"]
    assert i["disappointment"] < i["grief"]
    assert i["liking"] < i["adoration"]
    # Intensities are spread out, not all one value.
    assert min(i.values()) <= 0.3 and max(i.values()) == 1.0


def test_expression_word_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        lookup("joy").intensity = 0.1  # type: ignore[misc]


def test_lookup_ignores_case_and_spaces():
    assert lookup("  HysTeria\n") is lookup("hysteria")
    assert lookup("Content ment") is lookup("contentment")
    assert lookup("home-sickness").word == "homesickness"
    with pytest.raises(TypeError):
        lookup(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "typed, nearest",
    [
        ("angry", "anger"),
        ("happy", "happiness"),
        ("hysterya", "hysteria"),
        ("afraid", "fear"),
        ("terrified", "terror"),
        ("Excited", "excitement"),
    ],
)
def test_unknown_word_suggests_nearest(typed, nearest):
    with pytest.raises(UnknownExpressionError) as info:
        lookup(typed)
    err = info.value
    assert isinstance(err, ValueError)
    assert err.suggestions[0] == nearest
    assert repr(nearest) in str(err) and repr(typed) in str(err)


def test_unknown_word_without_match_says_so():
    with pytest.raises(UnknownExpressionError) as info:
        lookup("qwxz")
    assert info.value.suggestions == ()
    assert "no close match" in str(info.value)


# -- targets: toy space with a known prototype function ----------------------------------------

TOY = ExpressionSpace("toy", 6)


def toy_prototype(family: str, intensity: float) -> np.ndarray:
    """Intensity along the family's own axis: family k -> intensity * e_k."""
    vec = np.zeros(6, np.float32)
    vec[FAMILIES.index(family)] = intensity
    return vec


def test_prototypes_only():
    t = ExpressionTargets(TOY, prototype_fn=toy_prototype)
    vec, source = t.resolve("rage")
    assert source == "prototype" and vec.dtype == np.float32
    np.testing.assert_array_equal(vec, toy_prototype("anger", lookup("rage").intensity))
    np.testing.assert_array_equal(t.target("fear"), toy_prototype("fear", lookup("fear").intensity))
    np.testing.assert_array_equal(t.neutral(), np.zeros(6, np.float32))


def test_bank_beats_prototype_and_family_fallback():
    v_rage = np.array([0, 0, 0, 5, 1, 0], np.float32)
    v_scorn = np.array([0, 0, 0, 2, 4, 0], np.float32)
    bank = {"Rage": (v_rage, 2), "scorn": (v_scorn, 1)}
    t = ExpressionTargets(TOY, bank=bank, prototype_fn=toy_prototype)

    vec, source = t.resolve("rage")  # own mean beats the prototype
    assert source == "bank"
    np.testing.assert_array_equal(vec, v_rage)

    # irritation has no rows: family mean (count-weighted) scaled from neutral by intensity.
    vec, source = t.resolve("irritation")
    assert source == "family"
    mean = (2 * v_rage + v_scorn) / 3
    mean_intensity = (2 * lookup("rage").intensity + lookup("scorn").intensity) / 3
    expected = lookup("irritation").intensity / mean_intensity * mean  # neutral = prototype(0) = 0
    np.testing.assert_allclose(vec, expected, rtol=1e-6)

    # No bank rows for joy at all: prototypes.
    vec, source = t.resolve("bliss")
    assert source == "prototype"
    np.testing.assert_array_equal(vec, toy_prototype("joy", lookup("bliss").intensity))


def test_family_fallback_uses_bank_neutral_row():
    neutral = np.full(6, 1.0, np.float32)
    v_grief = np.array([0, 0, 0, 0, 3, 1], np.float32)
    t = ExpressionTargets(TOY, bank={"neutral": neutral, "grief": v_grief})  # no prototype_fn
    np.testing.assert_array_equal(t.neutral(), neutral)
    w = lookup("gloom")
    expected = neutral + w.intensity / lookup("grief").intensity * (v_grief - neutral)
    np.testing.assert_allclose(t.target("gloom"), expected, rtol=1e-6)
    # Family with no rows and no prototype function: a clear error.
    with pytest.raises(ValueError, match="no faces of family 'joy'"):
        t.target("joy")


def test_bank_from_arrow_table_matches_dict_and_merges_duplicates():
    a = np.arange(6, dtype=np.float32)
    b = np.arange(6, dtype=np.float32)[::-1].copy()
    table = pa.table(
        {
            "word": ["sorrow", "sorrow", "panic"],
            "vector": pa.array([a.tolist(), b.tolist(), a.tolist()], pa.list_(pa.float32())),
            "count": [1, 3, 2],
        }
    )
    bank = ExpressionBank(table, 6)
    np.testing.assert_allclose(bank.means["sorrow"], (a + 3 * b) / 4)
    assert bank.counts == {"sorrow": 4, "panic": 2}
    t_table = ExpressionTargets(TOY, bank=table, prototype_fn=toy_prototype)
    t_dict = ExpressionTargets(TOY, bank={"sorrow": ((a + 3 * b) / 4, 4), "panic": (a, 2)}, prototype_fn=toy_prototype)
    for word in ("sorrow", "grief", "panic", "worry", "joy"):
        np.testing.assert_allclose(t_table.target(word), t_dict.target(word), rtol=1e-6)


def test_bank_errors_name_the_row():
    with pytest.raises(ValueError, match=r"row 0 \('rage'\).*shape \(3,\)"):
        ExpressionBank({"rage": [1.0, 2.0, 3.0]}, 6)
    with pytest.raises(ValueError, match="'happy'.*'happiness'"):
        ExpressionBank({"happy": np.zeros(6)}, 6)
    bank = ExpressionBank({"happy": np.zeros(6), "joy": np.ones(6)}, 6, unknown="skip")
    assert bank.skipped == ("happy",) and set(bank.means) == {"joy"}
    with pytest.raises(ValueError, match="count is 0"):
        ExpressionBank({"joy": (np.ones(6), 0)}, 6)


def test_target_accepts_vectors_and_checks_shape():
    t = ExpressionTargets(TOY, prototype_fn=toy_prototype)
    v = np.arange(6, dtype=np.float64)
    out = t.target(v)
    assert out.dtype == np.float32 and out is not v
    np.testing.assert_array_equal(out, v)
    with pytest.raises(ValueError, match="expected 6 finite values"):
        t.target(np.zeros(5))
    with pytest.raises(ValueError, match="need an expression bank, a prototype function"):
        ExpressionTargets(TOY)


# -- builtin face pack space (FER2013 probabilities + geometry) --------------------------------


def test_builtin_prototypes_pick_the_right_fer_class():
    t = ExpressionTargets.for_builtin()
    expected = {
        "joy": "happy",
        "love": "happy",
        "surprise": "surprise",
        "anger": "angry",
        "sadness": "sad",
        "fear": "fear",
        "disgust": "disgust",
        "revulsion": "disgust",
    }
    for word, cls in expected.items():
        vec = t.target(word)
        assert vec.shape == (7,)
        assert abs(float(vec.sum()) - 1.0) < 1e-6 and vec.min() >= 0
        probs_wo_neutral = vec[:6]
        assert FER_CLASSES[int(np.argmax(probs_wo_neutral))] == cls, word
    # Intensity blends from neutral: neutral mass is 1 - intensity for single-class families.
    rage, irritation = t.target("rage"), t.target("irritation")
    n = FER_CLASSES.index("neutral")
    assert rage[n] == pytest.approx(1 - lookup("rage").intensity)
    assert irritation[n] == pytest.approx(1 - lookup("irritation").intensity)
    assert irritation[0] < rage[0]


def test_builtin_geometry_from_bank_else_neutral_zero():
    space = builtin_face_space(("mouth_open", "brow_height"))
    assert space.dim == 9 and space.n_probabilities == 7
    plain = ExpressionTargets.for_builtin(space)
    np.testing.assert_array_equal(plain.target("fear")[7:], [0.0, 0.0])
    neutral = np.array([0, 0, 0, 0, 0, 0, 1, 0.2, 0.4], np.float32)
    joyful = np.array([0, 0, 0, 0.9, 0, 0, 0.1, 0.6, 0.5], np.float32)
    t = ExpressionTargets.for_builtin(space, bank={"neutral": neutral, "happiness": joyful})
    np.testing.assert_allclose(t.target("terror")[7:], [0.2, 0.4])  # prototype + bank geometry
    assert t.resolve("terror")[1] == "prototype"
    ecstasy, source = t.resolve("ecstasy")  # family path extrapolates past the mean, reprojected
    assert source == "family"
    assert ecstasy[:7].min() >= 0 and float(ecstasy[:7].sum()) == pytest.approx(1.0)
    assert ecstasy[FER_CLASSES.index("happy")] > joyful[FER_CLASSES.index("happy")]


def test_family_target_and_space_from_output_spec():
    from sfsr.faces.base import OutputSpec

    spec = OutputSpec(9, "fer + geometry", FER_CLASSES + ("g0", "g1"))
    space = space_from_output_spec("builtin", spec)
    assert (space.dim, space.n_probabilities) == (9, 7)
    assert space_from_output_spec("arc", OutputSpec(4, "opaque")).n_probabilities == 0
    t = ExpressionTargets.for_builtin(space)
    np.testing.assert_array_equal(t.family_target("sadness", 0.0), t.neutral())
    half = t.family_target("sadness", 0.5)
    assert half[FER_CLASSES.index("sad")] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown expression family 'calm'"):
        t.family_target("calm", 0.5)


def test_bounds_clip_family_extrapolation():
    space = ExpressionSpace("bounded", 2, low=(0.0, 0.0), high=(1.0, 1.0))
    t = ExpressionTargets(space, bank={"neutral": [0.0, 0.0], "irritation": [0.6, 0.0]})
    # rage (1.0) is 1/0.3 of the way along irritation's (0.3) direction: 2.0, clipped to 1.
    np.testing.assert_allclose(t.target("rage"), [1.0, 0.0])
    np.testing.assert_allclose(t.target("annoyance"), [0.6, 0.0], rtol=1e-6)


# -- interpolation and travel -----------------------------------------------------------------


def test_interpolate_endpoints_and_midpoint():
    a = np.array([0.1, -2.0, 3.3], np.float32)
    b = np.array([1.7, 4.0, -0.3], np.float32)
    np.testing.assert_array_equal(interpolate(a, b, 0.0), a)
    np.testing.assert_array_equal(interpolate(a, b, 1.0), b)
    np.testing.assert_allclose(interpolate(a, b, 0.5), (a + b) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="t must be in"):
        interpolate(a, b, 1.5)
    with pytest.raises(ValueError, match="shapes differ"):
        interpolate(a, b[:2], 0.5)


def test_travel_length_endpoints_and_even_steps():
    t = ExpressionTargets.for_builtin()
    path = t.travel("irritation", "ecstasy", 5)
    assert len(path) == 5
    np.testing.assert_array_equal(path[0], t.target("irritation"))
    np.testing.assert_array_equal(path[-1], t.target("ecstasy"))
    steps = np.diff(np.stack(path), axis=0)  # (4, 7)
    np.testing.assert_allclose(steps, np.broadcast_to(steps[0], steps.shape), atol=1e-6)
    assert all(abs(float(p.sum()) - 1.0) < 1e-5 for p in path)  # stays on the simplex
    with pytest.raises(ValueError, match="steps >= 2"):
        t.travel("joy", "fear", 1)


def test_synth_space_uses_synth_prototypes():
    from sfsr.synth import factors

    t = expression_targets()
    assert t.space.dim == len(factors.EXPRESSION_FACTORS)
    rage = lookup("rage")
    np.testing.assert_array_equal(t.target("rage"), word_target(rage))
    np.testing.assert_array_equal(
        t.family_target("anger", rage.intensity), factors.family_prototype("anger", rage.intensity)
    )
    np.testing.assert_array_equal(t.neutral(), factors.NEUTRAL_EXPRESSION)


@pytest.mark.parametrize("space", ["synth", "builtin"])
def test_every_word_has_its_own_target(space):
    """135 distinct targets (issue 14): family, subcluster, intensity and nuance all count."""
    t = expression_targets() if space == "synth" else ExpressionTargets.for_builtin()
    vecs = np.stack([t.target(w.word) for w in WORDS])  # (135, dim)
    dist = np.linalg.norm(vecs[:, None] - vecs[None], axis=-1) + np.eye(len(WORDS))
    i, j = np.unravel_index(np.argmin(dist), dist.shape)
    assert dist.min() > 0.005, f"{WORDS[i].word} and {WORDS[j].word} are {dist.min():.4f} apart"


def test_synth_word_targets_keep_the_word_intensity():
    """Subcluster and nuance move a word off its family's line, not along it: the projection on
    the family's direction is the word's intensity (within what clipping to the ranges costs)."""
    from sfsr.synth.words import SUBCLUSTER_SHIFT, family_intensity

    errors = [abs(family_intensity(w.family, word_target(w)) - w.intensity) for w in WORDS]
    assert max(errors) < 0.08
    assert np.median(errors) < 1e-5
    # a subcluster's shift shows: contentment smiles with a closed mouth, cheerfulness does not
    shifted = {sub for _, sub in SUBCLUSTER_SHIFT}
    assert "contentment" in shifted and "cheerfulness" not in shifted
    open_ = factors_index("mouth_open")
    assert word_target("contentment")[open_] < word_target("cheerfulness")[open_]


def test_words_with_a_bank_row_only_for_their_family_keep_their_own_targets():
    """A bank with one row per family (the old synthetic ingest) still gives 135 targets."""
    from sfsr.synth.factors import family_prototype

    bank = {f: family_prototype(f, lookup(f).intensity) for f in FAMILIES}
    t = expression_targets(bank=bank)
    vecs = {tuple(np.round(t.target(w.word), 6)) for w in WORDS}
    assert len(vecs) == 135
    assert t.resolve("gaiety")[1] == "family"


def factors_index(name: str) -> int:
    from sfsr.synth import factors

    return factors.EXPRESSION_FACTORS.index(name)


# -- CLI ---------------------------------------------------------------------------------------


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="sfsr")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_list_and_show(capsys):
    assert _run(["expressions", "list", "--family", "surprise"]) == 0
    out = capsys.readouterr().out
    assert "astonishment" in out and "3 words" in out and "rage" not in out
    assert _run(["expressions", "list"]) == 0
    assert "135 words" in capsys.readouterr().out
    assert _run(["expressions", "show", "Disgust"]) == 0
    out = capsys.readouterr().out
    assert "disgust" in out and "from prototype" in out and "+0.4200" in out
    assert _run(["expressions", "show", "angry"]) == 2
    assert "'anger'" in capsys.readouterr().err
