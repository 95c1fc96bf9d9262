"""The 135 fine-grained emotion words the paper conditions on (DESIGN.md, "expression words").

Source: Shaver, Schwartz, Kirson & O'Connor (1987), "Emotion knowledge: further exploration of a
prototype approach", Journal of Personality and Social Psychology 52(6):1061-1086, Figure 1. Their
hierarchical cluster analysis groups 135 emotion words under six basic-level categories (love,
joy, surprise, anger, sadness, fear), each split into subclusters (joy -> cheerfulness, zest,
contentment, pride, optimism, enthrallment, relief; ...). The list is reconstructed here, word
for word, in words.json next to this file (the same hierarchy is reproduced in Parrott 2001,
"Emotions in social psychology"). Surprise has a single subcluster, "surprise", holding
amazement, surprise and astonishment.

Intensity is ours, not Shaver's: Shaver gives no intensity ratings. Each word's intensity in
[0, 1] is `clip(subcluster base + word adjustment, 0, 1)`, both read from words.json:
- the subcluster base rates how strong that subcluster's typical feeling is (irritation 0.3,
  exasperation 0.5, rage 0.8, torment 0.9; contentment 0.3, cheerfulness 0.6, zest 0.7, ...);
- the word adjustment, in steps of 0.1, moves a word milder (dislike -0.5 within rage) or
  stronger (fury +0.2) than that typical feeling, judged from the word's dictionary meaning.
So irritation = 0.3, anger = 0.6, rage = fury = 1.0, satisfaction = 0.4, ecstasy = 1.0.
Intensity 0 would be a neutral face; no word sits there, the mildest are 0.2.

Nuance tells apart words that share family, subcluster and intensity (gaiety, jolliness,
joviality and happiness are all cheerfulness at 0.6): the k-th of n such words, in words.json
order, has nuance (2k - (n - 1)) / (n - 1), evenly spread over [-1, 1]; a word alone in its group
has 0. Each expression space turns nuance into a small shift that leaves the word's intensity
alone (sfsr.synth.words, targets.FerPrototypes), so every word has its own target.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

FAMILIES: tuple[str, ...] = ("love", "joy", "surprise", "anger", "sadness", "fear")

_WORDS_FILE = Path(__file__).with_name("words.json")


@dataclass(frozen=True)
class ExpressionWord:
    """One vocabulary word: its Shaver family and subcluster, and our intensity in [0, 1]."""

    word: str
    family: str
    subcluster: str
    intensity: float
    nuance: float = 0.0  # in [-1, 1]: which of the words sharing family, subcluster, intensity


class UnknownExpressionError(ValueError):
    """A word that is not in the 135-word vocabulary; `.suggestions` holds the nearest words."""

    def __init__(self, word: str, suggestions: tuple[str, ...]) -> None:
        self.word = word
        self.suggestions = suggestions
        if suggestions:
            hint = f"did you mean {', '.join(repr(s) for s in suggestions)}?"
        elif normalize(word) == "neutral":
            hint = "a neutral face is intensity 0 of any family, not a word (ExpressionTargets.neutral())"
        else:
            hint = "no close match"
        super().__init__(
            f"expression word {word!r} is not in the 135-word vocabulary; {hint} "
            f"(run `sfsr expressions list` to see every word)"
        )


def _load_words(path: Path = _WORDS_FILE) -> tuple[ExpressionWord, ...]:
    data = json.loads(path.read_text(encoding="utf-8"))
    families = data["families"]
    if tuple(families) != FAMILIES:
        raise ValueError(
            f"{path}: families are {tuple(families)}, expected {FAMILIES} in that order; "
            f"restore words.json from the repository"
        )
    words: list[ExpressionWord] = []
    for family, subclusters in families.items():
        for subcluster, entry in subclusters.items():
            base = float(entry["base"])
            for word, adjustment in entry["words"].items():
                # round() keeps 0.6 + 0.1 from printing as 0.7000000000000001.
                intensity = round(min(1.0, max(0.0, base + float(adjustment))), 3)
                words.append(ExpressionWord(word, family, subcluster, intensity))
    words = _with_nuance(words)
    names = [w.word for w in words]
    if len(names) != 135 or len(set(names)) != 135:
        raise ValueError(
            f"{path}: holds {len(names)} words ({len(set(names))} unique), Shaver et al. list "
            f"exactly 135 unique words; restore words.json from the repository"
        )
    return tuple(words)


def _with_nuance(words: list[ExpressionWord]) -> list[ExpressionWord]:
    groups: dict[tuple[str, str, float], list[int]] = {}
    for i, w in enumerate(words):
        groups.setdefault((w.family, w.subcluster, w.intensity), []).append(i)
    out = list(words)
    for members in groups.values():
        n = len(members)
        for k, i in enumerate(members):
            nuance = 0.0 if n == 1 else round((2 * k - (n - 1)) / (n - 1), 6)
            out[i] = replace(words[i], nuance=nuance)
    return out


WORDS: tuple[ExpressionWord, ...] = _load_words()
_BY_NAME: dict[str, ExpressionWord] = {w.word: w for w in WORDS}


def words_by_family() -> dict[str, tuple[ExpressionWord, ...]]:
    """The vocabulary grouped by family, families in FAMILIES order, words in Shaver's order."""
    return {f: tuple(w for w in WORDS if w.family == f) for f in FAMILIES}


def normalize(word: str) -> str:
    """Case- and space-insensitive key: 'Hysteria ', 'HYS teria' -> 'hysteria'."""
    return re.sub(r"[\s_\-]+", "", word).lower()


def lookup(word: str) -> ExpressionWord:
    """The vocabulary entry for `word` (case and spaces ignored).

    Raises UnknownExpressionError, whose message and `.suggestions` name the nearest words.
    """
    if not isinstance(word, str):
        raise TypeError(f"expression word must be a str, got {type(word).__name__}: {word!r}")
    key = normalize(word)
    found = _BY_NAME.get(key)
    if found is None:
        raise UnknownExpressionError(word, suggest(word))
    return found


# Suffixes stripped (repeatedly, longest first) to compare word stems: happy/happiness -> happ,
# excited/excitement -> excit, fearful/fear -> fear, sad/sadness -> sad.
_SUFFIXES = (
    "ified",
    "ness",
    "ment",
    "ation",
    "ition",
    "ity",
    "ful",
    "ous",
    "ing",
    "ion",
    "ed",
    "en",
    "ly",
    "ic",
    "y",
    "e",
)

# A few label words of face datasets that no suffix rule reaches.
_IRREGULAR = {"afraid": "fear", "scared": "fear", "mad": "anger", "upset": "distress"}


def _stem(word: str) -> str:
    if word.endswith("iness"):
        # y -> i before -ness: happiness -> happy, loneliness -> lonely, then stripped below.
        word = word[: -len("iness")] + "y"
    changed = True
    while changed:
        changed = False
        for suffix in _SUFFIXES:
            # Keep at least three letters so joy, woe, hate stay themselves.
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)]
                changed = True
                break
    return word


def _skeleton(stem: str) -> str:
    # First letter plus the remaining consonants: angr (angry) and anger both -> "angr".
    return stem[:1] + re.sub(r"[aeiou]", "", stem[1:])


@lru_cache(maxsize=1)
def _stem_index() -> tuple[tuple[str, str, str], ...]:
    return tuple((w.word, _stem(w.word), _skeleton(_stem(w.word))) for w in WORDS)


def suggest(word: str, n: int = 3) -> tuple[str, ...]:
    """Up to `n` vocabulary words nearest to `word`, best first.

    Morphological matches come first (a few irregular label words such as afraid -> fear, then
    same stem, same consonant skeleton of the stem, or a stem prefix: happy -> happiness,
    angry -> anger, excited -> excitement, terrified -> terror), then difflib's closest spellings
    of the word and of its stem (typos such as 'hysterya' -> hysteria).
    """
    key = normalize(word)
    if not key:
        return ()
    stem = _stem(key)
    skeleton = _skeleton(stem)
    out: list[str] = []

    def add(candidates: list[str]) -> None:
        for c in candidates:
            if c not in out and len(out) < n:
                out.append(c)

    index = _stem_index()
    add([_IRREGULAR[key]] if key in _IRREGULAR else [])
    add([w for w, s, _ in index if s == stem])
    add([w for w, _, k in index if k == skeleton and len(skeleton) >= 3])
    # A stem that is the start of a word's stem: terrified -> terr -> terror.
    add([w for w, s, _ in index if len(stem) >= 4 and s.startswith(stem)])
    add(difflib.get_close_matches(key, list(_BY_NAME), n=n, cutoff=0.75))
    stems = {s: w for w, s, _ in index}
    add([stems[s] for s in difflib.get_close_matches(stem, list(stems), n=n, cutoff=0.75)])
    add(difflib.get_close_matches(key, list(_BY_NAME), n=n, cutoff=0.6))
    return tuple(out)
