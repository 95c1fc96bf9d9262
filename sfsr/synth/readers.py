"""Readers of identity and expression that use no network: the nearest exact render.

The renderer can draw the exact face any request asks for (sfsr.synth.render), so an output is
read by which of a few candidate renders it is nearest to, in mean squared pixel difference
inside the region the model repaints. No weights are involved, so nothing a training loss used
(the synth judges) can flatter the model here (issue 11).

- identity: candidates are the target re-rendered with the source's identity, the target's own
  and other identities of the set (same expression, pose, background);
- expression: candidates are the face re-rendered with each family's word target.
Candidates are composited like a model's output: the render inside the region, the input outside.
`nearest` reads a batch with the same number of candidates per row (sfsr.release.evaluate_synth);
`read_one` reads one output against its own list (jobs/evaluate.py, evaluation.synth).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from sfsr.synth.factors import SynthSample
from sfsr.synth.render import render


def nearest(outputs: np.ndarray, candidates: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(B,) index of the candidate nearest each output inside its region.
    outputs (B, S, S, 3) uint8, candidates (B, K, S, S, 3) uint8, region (B, S, S) bool."""
    diff = candidates.astype(np.float32) - outputs[:, None].astype(np.float32)  # (B, K, S, S, 3)
    w = region[:, None, :, :, None].astype(np.float32)
    return np.argmin((diff**2 * w).sum(axis=(2, 3, 4)), axis=1)


def read_one(output: np.ndarray, variants: list[SynthSample], base: np.ndarray, region: np.ndarray) -> int:
    """Index of the variant whose exact render, inside region (S, S) over base (S, S, 3) outside,
    is nearest output (S, S, 3) (ties go to the first)."""
    k = len(variants)
    cand = composite(variants, np.repeat(base[None], k, 0), np.repeat(region[None], k, 0))
    return int(nearest(output[None], cand[None], region[None])[0])


def composite(samples: list[SynthSample], base: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Each sample rendered at base's size, inside region[i], base[i] outside: (B, S, S, 3)."""
    size = base.shape[1]
    drawn = np.stack([render(s, size)[0] for s in samples])
    return np.where(region[..., None], drawn, base)


def identity_candidates(
    targets: list[SynthSample], sources: np.ndarray, pool: np.ndarray, base: np.ndarray, region: np.ndarray, k: int = 8
) -> np.ndarray:
    """(B, K, S, S, 3): target i with identity sources[i] (index 0), its own (index 1) and k-2
    others from `pool`, chosen deterministically."""
    pool = np.unique(pool)
    rows = []
    for i, t in enumerate(targets):
        others = [int(p) for p in np.roll(pool, -i) if p not in (sources[i], t.identity_id)][: k - 2]
        ids = [int(sources[i]), t.identity_id, *others]
        rows.append(
            composite(
                [replace(t, identity_id=j) for j in ids],
                np.repeat(base[i : i + 1], len(ids), 0),
                np.repeat(region[i : i + 1], len(ids), 0),
            )
        )
    return np.stack(rows)


def expression_candidates(
    faces: list[SynthSample], vectors: np.ndarray, base: np.ndarray, region: np.ndarray
) -> np.ndarray:
    """(B, F, S, S, 3): face i with each expression vector of vectors[i] ((B, F, 7), or (F, 7)
    for the same candidates everywhere)."""
    vectors = np.broadcast_to(vectors, (len(faces), *vectors.shape[-2:]))
    rows = []
    for i, f in enumerate(faces):
        samples = [replace(f, expression=tuple(float(v) for v in vec)) for vec in vectors[i]]
        rows.append(
            composite(
                samples, np.repeat(base[i : i + 1], len(samples), 0), np.repeat(region[i : i + 1], len(samples), 0)
            )
        )
    return np.stack(rows)
