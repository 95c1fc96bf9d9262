"""Each of the 135 words' own expression in the synthetic-face space (issue 14, item 1).

A word's target is its family's line from neutral to apex (factors.family_prototype) at the word's
intensity, moved off that line by its subcluster's shift and its nuance (vocabulary.py):

    target = clip(neutral + intensity * (apex_f - neutral + shift_s) + nuance * NUANCE_STEP * axis_f)

- shift_s (SUBCLUSTER_SHIFT) says how the subcluster's face differs from its family's typical
  one: contentment smiles with the mouth closed, zest with raised brows and wide eyes, disgust
  narrows the mouth and the eyes, suffering opens the mouth in a grimace. It scales with intensity,
  so a mild word differs less from its family than a strong one.
- axis_f (NUANCE_AXIS) is one small change per family that tells apart the words sharing family,
  subcluster and intensity (gaiety and jolliness); nuance is in [-1, 1].
Both are projected off the family's direction (apex_f - neutral) before use, so the family
intensity of a target (its projection on that direction, `family_intensity`) is the word's own
intensity whatever its subcluster and nuance: word intensity stays what the judges can rank.
"""

from __future__ import annotations

import numpy as np

from sfsr.expressions.vocabulary import WORDS, ExpressionWord, lookup
from sfsr.synth.factors import (
    EXPRESSION_FACTORS,
    EXPRESSION_HIGH,
    EXPRESSION_LOW,
    NEUTRAL_EXPRESSION,
    family_prototype,
)

NUANCE_STEP = 0.08  # factor units between the two ends of a nuance group, halved


def _vec(**changes: float) -> np.ndarray:
    out = np.zeros(len(EXPRESSION_FACTORS), np.float32)
    for name, value in changes.items():
        out[EXPRESSION_FACTORS.index(name)] = value
    return out


# (family, subcluster) -> change of the apex; subclusters not listed are their family's own face
SUBCLUSTER_SHIFT: dict[tuple[str, str], np.ndarray] = {
    ("love", "lust"): _vec(mouth_open=0.35, eye_open=-0.2, brow_raise=-0.3),
    ("love", "longing"): _vec(mouth_curve=-0.45, brow_angle=-0.45, brow_raise=0.25),
    ("joy", "zest"): _vec(brow_raise=0.5, eye_open=0.45, mouth_open=0.2),
    ("joy", "contentment"): _vec(mouth_open=-0.55, mouth_width=-0.4, eye_open=-0.2),
    ("joy", "pride"): _vec(mouth_open=-0.5, brow_raise=-0.4, brow_angle=0.35),
    ("joy", "optimism"): _vec(brow_raise=0.55, mouth_open=-0.35),
    ("joy", "enthrallment"): _vec(mouth_open=0.4, eye_open=0.6, brow_raise=0.5, mouth_width=-0.6),
    ("joy", "relief"): _vec(brow_angle=-0.55, eye_open=-0.25, mouth_open=-0.25),
    ("anger", "exasperation"): _vec(brow_raise=0.7, brow_angle=-0.7),
    ("anger", "rage"): _vec(mouth_open=0.6, mouth_width=0.4, eye_open=0.3),
    ("anger", "disgust"): _vec(mouth_width=-0.7, mouth_curve=-0.4, eye_open=-0.45),
    ("anger", "envy"): _vec(eye_open=-0.45, mouth_curve=0.35, mouth_width=-0.35),
    ("anger", "torment"): _vec(brow_angle=-0.9, mouth_open=0.45, brow_raise=0.5),
    ("sadness", "suffering"): _vec(mouth_open=0.5, mouth_width=0.55, eye_open=-0.2),
    ("sadness", "disappointment"): _vec(brow_angle=0.7, brow_raise=-0.35),
    ("sadness", "shame"): _vec(eye_open=-0.25, brow_raise=-0.45, mouth_curve=0.35),
    ("sadness", "neglect"): _vec(brow_angle=0.45, mouth_width=-0.4, eye_open=-0.15),
    ("sadness", "sympathy"): _vec(mouth_curve=0.65, brow_raise=0.25),
    ("fear", "nervousness"): _vec(mouth_open=-0.5, mouth_curve=0.25, mouth_width=-0.3),
}
# family -> the direction nuance moves a word along
NUANCE_AXIS: dict[str, np.ndarray] = {
    "love": _vec(mouth_width=1.0),
    "joy": _vec(mouth_width=1.0),
    "surprise": _vec(mouth_width=1.0),
    "anger": _vec(eye_open=1.0),
    "sadness": _vec(mouth_width=1.0),
    "fear": _vec(brow_raise=1.0),
}


def _direction(family: str) -> np.ndarray:
    return family_prototype(family, 1.0) - NEUTRAL_EXPRESSION  # (F,)


def _off_family_line(family: str, change: np.ndarray) -> np.ndarray:
    """`change` less its component along the family's direction."""
    d = _direction(family).astype(np.float64)
    c = np.asarray(change, np.float64)
    return (c - (c @ d) / (d @ d) * d).astype(np.float32)


def family_intensity(family: str, expression: np.ndarray) -> float | np.ndarray:
    """Projection of expression(s) (..., F) on the family's neutral -> apex direction: 0 neutral, 1 apex."""
    d = _direction(family).astype(np.float64)
    e = np.asarray(expression, np.float64) - NEUTRAL_EXPRESSION
    return (e @ d) / (d @ d)


def word_target(word: str | ExpressionWord) -> np.ndarray:
    """The word's own expression vector (F,) float32 (module docstring)."""
    w = lookup(word) if isinstance(word, str) else word
    shift = SUBCLUSTER_SHIFT.get((w.family, w.subcluster))
    e = family_prototype(w.family, w.intensity).astype(np.float64)
    if shift is not None:
        e += w.intensity * _off_family_line(w.family, shift)
    e += w.nuance * NUANCE_STEP * _off_family_line(w.family, NUANCE_AXIS[w.family])
    return np.clip(e, EXPRESSION_LOW, EXPRESSION_HIGH).astype(np.float32)


class SynthWordPrototypes:
    """The synthetic space's prototype function for ExpressionTargets: a family at an intensity
    is its neutral -> apex line; a word is its own target (word_target)."""

    def __call__(self, family: str, intensity: float) -> np.ndarray:
        return family_prototype(family, intensity)

    def for_word(self, word: ExpressionWord) -> np.ndarray:
        return word_target(word)


def all_word_targets() -> np.ndarray:
    """(135, F) float32, in vocabulary order."""
    return np.stack([word_target(w) for w in WORDS])
