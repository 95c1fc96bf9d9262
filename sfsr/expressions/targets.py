"""Word -> expression target vector in an expression encoder's space, and expression travel.

A target is the vector the model's expression condition is given in place of an encoded face
(DESIGN.md, "expression words"). `ExpressionTargets.target(word)` resolves in this order:

1. bank: the word's own mean vector in an expression bank (built by the ingest job from
   labelled faces: one row per word with its mean expression vector and face count);
2. family: no faces for the word, but some for its family. Expression is modelled as linear in
   intensity along the family's direction from neutral:
       target = neutral + (intensity / family_intensity) * (family_mean - neutral) + offset
   where family_mean and family_intensity are the count-weighted mean vector and mean word
   intensity of the family's bank rows, and neutral is the bank's "neutral" row, else the
   prototype at intensity 0, else the bank's overall mean; offset is how the prototype of the
   word differs from its family's prototype at the same intensity (its subcluster and nuance),
   so words without faces of their own still get targets of their own;
3. prototype: `prototype_fn(family, intensity)`, for the synthetic-face space
   `sfsr.synth.factors.family_prototype` (sfsr/synth/conditioning.py builds those targets), for
   the builtin face pack `FerPrototypes` below.
Step 2 can extrapolate past the family mean (a word stronger than the family's average), so its
result is clipped to the space's bounds (`ExpressionSpace.low/high`, the synthetic factor
ranges) and class probabilities (`n_probabilities`) are clipped at 0 and renormalised.

Travel is linear, target(a) + t * (target(b) - target(a)): bank rows are means and prototypes
are class mixtures, so a convex combination is again a valid mixture (probabilities stay on the
simplex, no renormalising needed), intensity itself is linear along a family's direction (step
2), and these spaces are not unit-normalised, so the arc (slerp) used for normalised identity
embeddings has no meaning here. It also makes the midpoint of a -> b exactly their mean.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from sfsr.expressions.bank import ExpressionBank
from sfsr.expressions.vocabulary import FAMILIES, ExpressionWord, lookup

# The builtin pack's expression vector starts with FER2013 class probabilities in this order.
FER_CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Family -> FER2013 class mixture at full intensity; lower intensity blends toward neutral.
# Love has no FER class: its faces are soft smiles, so part happy, part neutral.
FAMILY_MIXTURES: dict[str, dict[str, float]] = {
    "love": {"happy": 0.6, "neutral": 0.4},
    "joy": {"happy": 1.0},
    "surprise": {"surprise": 1.0},
    "anger": {"angry": 1.0},
    "sadness": {"sad": 1.0},
    "fear": {"fear": 1.0},
}
# (family, subcluster) -> its FER2013 mixture at full intensity, where it differs from the
# family's: how FER's classes would split such faces (zest and enthrallment carry surprise,
# disgust is mostly FER's disgust class, torment and suffering carry fear). Every subcluster of a
# family differs, so words of different subclusters get different targets.
SUBCLUSTER_MIXTURES: dict[tuple[str, str], dict[str, float]] = {
    ("love", "lust"): {"happy": 0.5, "surprise": 0.1, "neutral": 0.4},
    ("love", "longing"): {"sad": 0.4, "happy": 0.3, "neutral": 0.3},
    ("joy", "zest"): {"happy": 0.8, "surprise": 0.2},
    ("joy", "contentment"): {"happy": 0.7, "neutral": 0.3},
    ("joy", "pride"): {"happy": 0.75, "angry": 0.05, "neutral": 0.2},
    ("joy", "optimism"): {"happy": 0.85, "surprise": 0.05, "neutral": 0.1},
    ("joy", "enthrallment"): {"happy": 0.6, "surprise": 0.4},
    ("joy", "relief"): {"happy": 0.7, "sad": 0.1, "neutral": 0.2},
    ("anger", "irritation"): {"angry": 0.9, "disgust": 0.1},
    ("anger", "exasperation"): {"angry": 0.7, "sad": 0.2, "disgust": 0.1},
    ("anger", "disgust"): {"disgust": 0.7, "angry": 0.3},
    ("anger", "envy"): {"angry": 0.5, "disgust": 0.3, "sad": 0.2},
    ("anger", "torment"): {"angry": 0.4, "sad": 0.3, "fear": 0.3},
    ("sadness", "suffering"): {"sad": 0.7, "fear": 0.3},
    ("sadness", "disappointment"): {"sad": 0.8, "angry": 0.2},
    ("sadness", "shame"): {"sad": 0.7, "fear": 0.1, "disgust": 0.2},
    ("sadness", "neglect"): {"sad": 0.8, "fear": 0.05, "neutral": 0.15},
    ("sadness", "sympathy"): {"sad": 0.6, "happy": 0.1, "neutral": 0.3},
    ("fear", "horror"): {"fear": 0.8, "surprise": 0.2},
    ("fear", "nervousness"): {"fear": 0.8, "sad": 0.2},
}
# A word's nuance (vocabulary.py) moves this much probability, times its intensity, from the
# mixture's first class to its second (to neutral when it has one class).
FER_NUANCE_MASS = 0.03


@dataclass(frozen=True)
class ExpressionSpace:
    """An expression encoder's output space: `dim` floats; the first `n_probabilities` are
    class probabilities summing to 1 (0 when the space has none); `low`/`high` optional bounds."""

    name: str
    dim: int
    components: tuple[str, ...] = ()
    n_probabilities: int = 0
    # Per-component valid range (both empty when unbounded), e.g. the synthetic factors'.
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for bound in (self.low, self.high):
            if bound and len(bound) != self.dim:
                raise ValueError(
                    f"expression space {self.name!r}: bounds have {len(bound)} values for dim "
                    f"{self.dim}; give one per component or none"
                )
        if self.dim <= 0:
            raise ValueError(f"expression space {self.name!r}: dim must be positive, got {self.dim}")
        if self.components and len(self.components) != self.dim:
            raise ValueError(
                f"expression space {self.name!r}: {len(self.components)} component names for "
                f"dim {self.dim}; give one name per component or none"
            )
        if not 0 <= self.n_probabilities <= self.dim:
            raise ValueError(
                f"expression space {self.name!r}: n_probabilities {self.n_probabilities} is outside [0, dim={self.dim}]"
            )


def builtin_face_space(geometry: Sequence[str] = (), name: str = "builtin") -> ExpressionSpace:
    """The builtin pack's space: the 7 FER2013 probabilities, then named geometry measures."""
    components = FER_CLASSES + tuple(geometry)
    return ExpressionSpace(name, len(components), components, n_probabilities=len(FER_CLASSES))


def space_from_output_spec(name: str, spec: Any) -> ExpressionSpace:
    """An ExpressionSpace from an encoder's `sfsr.faces.base.OutputSpec` (dim, components).

    A spec whose components start with FER_CLASSES is treated as the builtin layout.
    """
    components = tuple(spec.components)
    n_prob = len(FER_CLASSES) if components[: len(FER_CLASSES)] == FER_CLASSES else 0
    return ExpressionSpace(name, int(spec.dim), components, n_probabilities=n_prob)


PrototypeFn = Callable[[str, float], np.ndarray]
# A word or family name, an ExpressionWord, or an expression vector (array-like of dim floats).
Target = str | ExpressionWord | np.ndarray | Sequence[float]


@runtime_checkable
class WordPrototypes(Protocol):
    """A prototype function that can also use the word's subcluster (FerPrototypes does)."""

    def __call__(self, family: str, intensity: float) -> np.ndarray: ...

    def for_word(self, word: ExpressionWord) -> np.ndarray: ...


class FerPrototypes:
    """Family prototypes in the builtin face space.

    Probabilities: (1 - intensity) * neutral + intensity * the family's (or subcluster's) FER
    mixture. Geometry components (everything after the 7 probabilities) are `geometry`: the
    bank's neutral row or overall mean when a bank exists (ExpressionTargets.for_builtin does
    this), else zeros, which is the neutral face only if the pack reports geometry standardised
    (0 = average face); pass the pack's neutral values otherwise.
    """

    def __init__(self, space: ExpressionSpace, geometry: np.ndarray | None = None) -> None:
        if space.components[: len(FER_CLASSES)] != FER_CLASSES:
            raise ValueError(
                f"expression space {space.name!r} does not start with the FER2013 classes "
                f"{FER_CLASSES}; FerPrototypes only fits the builtin pack's space"
            )
        n_geo = space.dim - len(FER_CLASSES)
        geo = np.zeros(n_geo, np.float32) if geometry is None else np.asarray(geometry, np.float32)
        if geo.shape != (n_geo,):
            raise ValueError(
                f"FerPrototypes: geometry has shape {geo.shape}, space {space.name!r} has {n_geo} geometry components"
            )
        self.space = space
        self.geometry = geo

    def _vector(self, mixture: Mapping[str, float], intensity: float) -> np.ndarray:
        if not 0.0 <= intensity <= 1.0:
            raise ValueError(f"intensity must be in [0, 1], got {intensity}")
        probs = np.zeros(len(FER_CLASSES), np.float64)
        probs[FER_CLASSES.index("neutral")] = 1.0 - intensity
        for cls, weight in mixture.items():
            probs[FER_CLASSES.index(cls)] += intensity * weight
        return np.concatenate([probs, self.geometry]).astype(np.float32)  # (dim,)

    def __call__(self, family: str, intensity: float) -> np.ndarray:
        if family not in FAMILY_MIXTURES:
            raise ValueError(f"unknown expression family {family!r}; families are {FAMILIES}")
        return self._vector(FAMILY_MIXTURES[family], intensity)

    def for_word(self, word: ExpressionWord) -> np.ndarray:
        """The word's own target: its subcluster's mixture at its intensity, moved by its nuance."""
        mixture = dict(SUBCLUSTER_MIXTURES.get((word.family, word.subcluster), FAMILY_MIXTURES[word.family]))
        first, *rest = list(mixture)
        second = rest[0] if rest else "neutral"
        moved = word.nuance * FER_NUANCE_MASS
        mixture[first] -= moved
        mixture[second] = mixture.get(second, 0.0) + moved
        return self._vector(mixture, word.intensity)


class ExpressionTargets:
    """Resolves words (or family names, or vectors) to target vectors in one expression space."""

    def __init__(
        self,
        space: ExpressionSpace,
        *,
        bank: ExpressionBank | Any | None = None,
        prototype_fn: PrototypeFn | None = None,
    ) -> None:
        if bank is None and prototype_fn is None:
            raise ValueError(
                f"expression targets for space {space.name!r} need an expression bank, a prototype function, or both"
            )
        if bank is not None and not isinstance(bank, ExpressionBank):
            bank = ExpressionBank(bank, space.dim)
        if bank is not None and bank.dim != space.dim:
            raise ValueError(
                f"expression bank has dim {bank.dim}, space {space.name!r} has {space.dim}; "
                f"build the bank with the same expression encoder"
            )
        self.space = space
        self.bank: ExpressionBank | None = bank
        self.prototype_fn = prototype_fn

    @classmethod
    def for_builtin(
        cls,
        space: ExpressionSpace | None = None,
        bank: Any | None = None,
        neutral_geometry: np.ndarray | None = None,
    ) -> ExpressionTargets:
        """Targets in the builtin face pack's space (FER2013 probabilities + geometry)."""
        space = space or builtin_face_space()
        if bank is not None and not isinstance(bank, ExpressionBank):
            bank = ExpressionBank(bank, space.dim)
        geometry = neutral_geometry
        if geometry is None and bank is not None:
            anchor = bank.neutral() if bank.neutral() is not None else bank.overall_mean()
            geometry = None if anchor is None else anchor[len(FER_CLASSES) :]
        return cls(space, bank=bank, prototype_fn=FerPrototypes(space, geometry))

    # -- resolution -------------------------------------------------------------------------

    def _check(self, vec: Any, what: str) -> np.ndarray:
        out = np.array(vec, dtype=np.float32)  # a copy, so callers cannot change the bank
        if out.shape != (self.space.dim,) or not np.all(np.isfinite(out)):
            raise ValueError(
                f"{what}: got shape {out.shape}, expected {self.space.dim} finite values for "
                f"expression space {self.space.name!r}"
            )
        return out

    def _project(self, vec: np.ndarray) -> np.ndarray:
        n = self.space.n_probabilities
        if self.space.low:
            vec = np.maximum(vec, np.asarray(self.space.low, np.float32))
        if self.space.high:
            vec = np.minimum(vec, np.asarray(self.space.high, np.float32))
        if n:
            probs = np.clip(vec[:n], 0.0, None)
            total = float(probs.sum())
            vec[:n] = probs / total if total > 0 else probs
        return vec

    def _prototype(self, family: str, intensity: float, word: ExpressionWord | None) -> np.ndarray:
        fn = self.prototype_fn
        assert fn is not None
        if word is not None and isinstance(fn, WordPrototypes):
            vec = fn.for_word(word)
        else:
            vec = fn(family, intensity)
        return self._check(vec, f"prototype for {family!r} at intensity {intensity}")

    def neutral(self, family: str | None = None) -> np.ndarray:
        """The intensity-0 face: bank "neutral" row, else prototype at 0, else the bank mean."""
        if self.bank is not None and self.bank.neutral() is not None:
            return self._check(self.bank.neutral(), "bank row 'neutral'")
        if self.prototype_fn is not None:
            fams = [family] if family else list(FAMILIES)
            # Averaged over families in case a prototype's neutral depends on the family.
            return np.mean([self._prototype(f, 0.0, None) for f in fams], axis=0).astype(np.float32)
        assert self.bank is not None
        return self._check(self.bank.overall_mean(), "bank overall mean")

    def resolve(self, x: Target) -> tuple[np.ndarray, str]:
        """(target vector (dim,) float32, source) with source "bank", "family", "prototype" or
        "vector". Strings are vocabulary words; each family name is itself one of the words."""
        if isinstance(x, str):
            x = lookup(x)
        if not isinstance(x, ExpressionWord):
            return self._check(x, "expression vector"), "vector"
        if self.bank is not None and x.word in self.bank.means:
            return self._check(self.bank.means[x.word], f"bank row {x.word!r}"), "bank"
        vec = self._from_family_mean(x.family, x.intensity)
        if vec is not None:
            return self._project(vec + self._word_offset(x)), "family"
        self._need_prototype(x.family)
        return self._project(self._prototype(x.family, x.intensity, x)), "prototype"

    def _from_family_mean(self, family: str, intensity: float) -> np.ndarray | None:
        """neutral + (intensity / family_intensity) * (family_mean - neutral), or None when the
        bank has no rows of the family (module docstring, step 2)."""
        found = None if self.bank is None else self.bank.family_mean(family)
        if found is None:
            return None
        mean, mean_intensity = found
        neutral = self.neutral(family)
        vec = neutral + intensity / mean_intensity * (mean - neutral)  # (dim,)
        return self._project(vec.astype(np.float32))

    def _word_offset(self, word: ExpressionWord) -> np.ndarray:
        """How the prototype of the word differs from its family's at the same intensity (its
        subcluster and nuance), added to a family-mean target so words keep their own targets;
        zero without a word-aware prototype function."""
        if not isinstance(self.prototype_fn, WordPrototypes):
            return np.zeros(self.space.dim, np.float32)
        own = self._prototype(word.family, word.intensity, word)
        line = self._prototype(word.family, word.intensity, None)
        return (own - line).astype(np.float32)

    def _need_prototype(self, family: str) -> None:
        if self.prototype_fn is None:
            raise ValueError(
                f"expression space {self.space.name!r}: the bank has no faces of family "
                f"{family!r} and no prototype function was given; add labelled {family} faces "
                f"to the bank"
            )

    def target(self, x: Target) -> np.ndarray:
        """Target vector (dim,) float32 for a word, a family name or an expression vector."""
        return self.resolve(x)[0]

    def family_target(self, family: str, intensity: float) -> np.ndarray:
        """A family at any intensity in [0, 1], between and beyond the words' own intensities."""
        if family not in FAMILIES:
            raise ValueError(f"unknown expression family {family!r}; families are {FAMILIES}")
        if not 0.0 <= intensity <= 1.0:
            raise ValueError(f"intensity must be in [0, 1], got {intensity}")
        vec = self._from_family_mean(family, intensity)
        if vec is not None:
            return vec
        self._need_prototype(family)
        return self._project(self._prototype(family, intensity, None))

    def travel(self, a: Target, b: Target, steps: int) -> list[np.ndarray]:
        """`steps` targets from a to b inclusive, evenly spaced in t (linear: see module doc)."""
        if int(steps) < 2:
            raise ValueError(f"travel needs steps >= 2 (both endpoints), got {steps}")
        va, vb = self.target(a), self.target(b)
        return [interpolate(va, vb, float(t)) for t in np.linspace(0.0, 1.0, int(steps))]


def interpolate(a: Any, b: Any, t: float) -> np.ndarray:
    """(1 - t) * a + t * b for t in [0, 1]; exact at both endpoints. Returns float32."""
    va, vb = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if va.shape != vb.shape:
        raise ValueError(f"interpolate: shapes differ, {va.shape} vs {vb.shape}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"interpolate: t must be in [0, 1], got {t}")
    return ((1.0 - t) * va + t * vb).astype(np.float32)


# expression space -> the module that provides its word targets (`expression_targets(bank=None)`),
# imported only when asked, so this package never imports the provider (see sfsr.conditions)
TARGET_PROVIDERS: dict[str, str] = {"synth": "sfsr.synth.conditioning"}


def targets_for_space(space: str, bank: Any | None = None) -> ExpressionTargets:
    """Word targets in a provider's expression space (e.g. "synth"), from `bank` where it has the word."""
    import importlib

    if space not in TARGET_PROVIDERS:
        raise ValueError(f"no provider for expression space {space!r}; known: {', '.join(sorted(TARGET_PROVIDERS))}")
    return importlib.import_module(TARGET_PROVIDERS[space]).expression_targets(bank=bank)
