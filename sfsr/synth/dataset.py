"""Seeded synthetic face datasets with a held-out split over factor combinations.

Split scheme (what "test" means):
- Expression space is cut into six regions, one per family: a vector belongs to the family
  whose neutral -> apex segment it is closest to (`expression_region`).
- Every identity has one held-out family, `held_out_family(identity_id)`, fixed by a hash of
  the id. "train" samples never show an identity with an expression in its held-out region;
  "test" samples always do. So each identity and each family appears in both splits, but no
  (identity, expression region) pair of the test split is ever seen in training - the
  acceptance test of a model trained on "train" is to reproduce seen identities with
  expressions they were never shown with.
- Backgrounds are disjoint too: train seeds lie in [0, 2**30), test seeds in [2**30, 2**31).
- "all" ignores the scheme (any expression, any background seed below 2**31).
Near the neutral face all six regions meet, so weak test expressions resemble weak training
ones of another family; the combination is still new, and the background always is.

Expressions, clipped to EXPRESSION_RANGES: with probability 1/2 one of the family's words
(uniform over its words) at its own target (sfsr.synth.words) plus Gaussian jitter (std 0.06 per
factor); with probability 1/4 the family's neutral -> apex line at a uniform intensity plus
jitter (std 0.12), so every intensity is seen; otherwise uniform over the ranges. A face drawn
from a word is labelled with it (`draw_labelled`; SynthSample itself holds no label); the others
show no word's expression and have no label (a nearest-word label would pull the expression
bank's word means away from the words' targets: by 0.12 in the median, measured).
Pose: yaw, pitch and roll uniform in [-MAX_POSE_DEG, MAX_POSE_DEG] * pose_scale.
Sample k of a dataset depends only on (seed, split, k), so shards reproduce exactly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from sfsr.expressions.vocabulary import WORDS
from sfsr.synth.factors import (
    EXPRESSION_HIGH,
    EXPRESSION_LOW,
    FAMILIES,
    MAX_POSE_DEG,
    NEUTRAL_EXPRESSION,
    Pose,
    SynthSample,
    family_prototype,
    make_sample,
)
from sfsr.synth.render import render
from sfsr.synth.words import word_target

SPLITS: tuple[str, ...] = ("train", "test", "all")
_SPLIT_CODE = {"train": 1, "test": 2, "all": 3}
_BG_HALF = 2**30
_APEX = np.stack([family_prototype(f, 1.0) for f in FAMILIES])  # (6, F)
_FAMILY_WORDS = {f: [w.word for w in WORDS if w.family == f] for f in FAMILIES}


def expression_region(expression: np.ndarray) -> int:
    """Index into FAMILIES of the family segment (neutral -> apex) nearest to `expression`."""
    e = np.asarray(expression, np.float32) - NEUTRAL_EXPRESSION  # (F,)
    d = _APEX - NEUTRAL_EXPRESSION  # (6, F)
    t = np.clip((d @ e) / np.einsum("kf,kf->k", d, d), 0.0, 1.0)  # projection onto each segment
    dist = np.linalg.norm(e[None, :] - t[:, None] * d, axis=1)  # (6,)
    return int(np.argmin(dist))


def held_out_family(identity_id: int) -> str:
    """The family whose expressions identity `identity_id` only shows in the test split."""
    rng = np.random.default_rng(np.random.SeedSequence([0x5E, int(identity_id) & 0xFFFFFFFF]))
    return FAMILIES[int(rng.integers(len(FAMILIES)))]


def _random_expression(rng: np.random.Generator, family: int) -> tuple[np.ndarray, str | None]:
    """(expression, the word it was drawn from or None)."""
    u = rng.random()
    word = None
    if u < 0.5:
        choices = _FAMILY_WORDS[FAMILIES[family]]
        word = choices[int(rng.integers(len(choices)))]
        e = word_target(word) + rng.normal(0.0, 0.06, size=len(NEUTRAL_EXPRESSION)).astype(np.float32)
    elif u < 0.75:
        e = family_prototype(FAMILIES[family], float(rng.uniform(0.0, 1.0)))
        e = e + rng.normal(0.0, 0.12, size=e.shape).astype(np.float32)
    else:
        e = rng.uniform(EXPRESSION_LOW, EXPRESSION_HIGH).astype(np.float32)
    return np.clip(e, EXPRESSION_LOW, EXPRESSION_HIGH).astype(np.float32), word


def draw_sample(index: int, seed: int, n_identities: int, split: str = "train", pose_scale: float = 1.0) -> SynthSample:
    """Sample number `index` of the dataset (seed, split, n_identities) - no rendering."""
    return draw_labelled(index, seed, n_identities, split, pose_scale)[0]


def draw_labelled(
    index: int, seed: int, n_identities: int, split: str = "train", pose_scale: float = 1.0
) -> tuple[SynthSample, str | None]:
    """(sample number `index`, the word its expression was drawn from or None): module docstring."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    if n_identities < 1:
        raise ValueError(f"n_identities={n_identities} must be >= 1")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _SPLIT_CODE[split], int(index)]))
    ident = int(rng.integers(n_identities))
    held = FAMILIES.index(held_out_family(ident))
    for _ in range(1000):  # rejection: the region must match the split (accepts ~70 % at once)
        if split == "test":
            family = held
        else:
            family = int(rng.integers(len(FAMILIES)))
            if split == "train" and family == held:
                continue
        expr, word = _random_expression(rng, family)
        region = expression_region(expr)
        if split == "all" or (region == held) == (split == "test"):
            break
    else:  # pragma: no cover - would need an astronomically unlucky stream
        raise RuntimeError(f"could not draw a {split} expression for identity {ident}")
    pose = Pose(*(rng.uniform(-MAX_POSE_DEG, MAX_POSE_DEG, size=3) * pose_scale).tolist())
    bg_ranges = {"train": (0, _BG_HALF), "test": (_BG_HALF, 2 * _BG_HALF)}
    lo, hi = bg_ranges.get(split, (0, 2 * _BG_HALF))
    sample = make_sample(ident, expr, pose, int(rng.integers(lo, hi)))
    return sample, word


def sample_dataset(
    n: int,
    seed: int = 0,
    n_identities: int = 200,
    size: int = 64,
    split: str = "train",
    pose_scale: float = 1.0,
) -> Iterator[tuple[SynthSample, np.ndarray, np.ndarray]]:
    """Yield n (sample, image RGB uint8 (size, size, 3), mask uint8 (size, size)) triples.

    Identities are 0..n_identities-1; see the module docstring for the split scheme.
    """
    for k in range(int(n)):
        sample = draw_sample(k, seed, n_identities, split, pose_scale)
        image, mask = render(sample, size)
        yield sample, image, mask


def render_batch(
    n: int, seed: int = 0, n_identities: int = 200, size: int = 64, split: str = "train"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Arrays for training: images (n, S, S, 3) uint8, masks (n, S, S) uint8, identity ids
    (n,) int64 and expressions (n, F) float32."""
    images, masks, ids, exprs = [], [], [], []
    for sample, image, mask in sample_dataset(n, seed, n_identities, size, split):
        images.append(image)
        masks.append(mask)
        ids.append(sample.identity_id)
        exprs.append(sample.expression_array)
    return np.stack(images), np.stack(masks), np.asarray(ids, np.int64), np.stack(exprs)
