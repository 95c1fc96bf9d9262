"""Synthetic training data for local runs: a rendered pool with judge-encoded conditions.

The face table made by `jobs.ingest --synthetic` holds the same thing (PNG crops, masks, judge
identity embeddings and judge expression factors); this module builds it in memory, without
Ray, for sfsr.model.train_local and the benchmarks.

Identity conditioning: each training sample gets the judge embedding of ANOTHER pool image of
the same identity (or, with probability p_mean, the identity's mean embedding), never its own.
Its own embedding would also carry whatever of this photo's expression and pose leaks into the
judge, and the model would learn to read expression from the identity stream; then a swap would
copy the source's expression too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from sfsr.synth.dataset import render_batch
from sfsr.synth.judges import Judges
from sfsr.synth.render import MIN_SIZE


@dataclass(frozen=True)
class SynthPool:
    images: np.ndarray  # (N, S, S, 3) uint8
    masks: np.ndarray  # (N, S, S) uint8, 255 = face
    ids: np.ndarray  # (N,) int64 identity ids
    factors: np.ndarray  # (N, F) float32 ground-truth expression factors
    identity: np.ndarray  # (N, D) float32 judge identity embeddings (unit norm)
    expression: np.ndarray  # (N, F) float32 judge expression factors

    def __len__(self) -> int:
        return len(self.ids)

    def identity_means(self) -> dict[int, np.ndarray]:
        """identity id -> unit-norm mean judge embedding over the pool."""
        out = {}
        for i in np.unique(self.ids):
            v = self.identity[self.ids == i].mean(axis=0)
            out[int(i)] = (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)
        return out


def encode_images(judges: Judges, images: np.ndarray, batch: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Judge (identity embedding (N, D), expression factors (N, F)) of uint8 (N, S, S, 3)."""
    ids, exprs = [], []
    for k in range(0, len(images), batch):
        ids.append(judges.identity_embedding_np(images[k:k + batch]))
        exprs.append(judges.expression_np(images[k:k + batch]))
    return np.concatenate(ids), np.concatenate(exprs)


def build_pool(n: int, *, seed: int, n_identities: int, size: int, split: str, judges: Judges,
               cache_dir: str | None = None) -> SynthPool:
    """Render n samples of sfsr.synth (seed, split) and encode them with the judges.
    With cache_dir, the pool is saved as / loaded from an .npz keyed by its arguments."""
    path = None
    if cache_dir:
        path = Path(cache_dir) / f"pool_{split}_n{n}_s{seed}_id{n_identities}_{size}px.npz"
        if path.is_file():
            with np.load(path) as z:
                return SynthPool(**{k: z[k] for k in z.files})
    # The renderer's smallest size is 32 px; smaller models (tiny) get a downscaled render.
    rsize = max(size, MIN_SIZE)
    images, masks, ids, factors = render_batch(n, seed=seed, n_identities=n_identities, size=rsize, split=split)
    identity, expression = encode_images(judges, images)
    if rsize != size:
        images = np.stack([cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA) for im in images])
        masks = np.stack([cv2.resize(m, (size, size), interpolation=cv2.INTER_AREA) for m in masks])
    pool = SynthPool(images, masks, ids, factors, identity, expression)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **vars(pool))
        tmp.replace(path)
    return pool


class PoolSampler:
    """Random training batches from a pool, as train_step's dict of tensors."""

    def __init__(self, pool: SynthPool, p_mean: float = 0.25, seed: int = 0) -> None:
        self.pool = pool
        self.p_mean = p_mean
        self.rng = np.random.default_rng(seed)
        self.by_id = {int(i): np.flatnonzero(pool.ids == i) for i in np.unique(pool.ids)}
        self.means = pool.identity_means()

    def identity_condition(self, index: int) -> np.ndarray:
        """Judge embedding of another image of the same identity, or the identity mean."""
        ident = int(self.pool.ids[index])
        same = self.by_id[ident]
        if self.rng.random() < self.p_mean or len(same) < 2:
            return self.means[ident]
        other = index
        while other == index:
            other = int(same[self.rng.integers(len(same))])
        return self.pool.identity[other]

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        idx = self.rng.integers(len(self.pool), size=size)
        return batch_from_pool(self.pool, idx, np.stack([self.identity_condition(int(i)) for i in idx]))


def batch_from_pool(pool: SynthPool, idx: np.ndarray, identity: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """train_step batch for pool rows idx; identity (B, D) overrides the rows' own embeddings."""
    img = torch.from_numpy(pool.images[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, S, S)
    mask = torch.from_numpy(pool.masks[idx] >= 128).float()[:, None]  # (B, 1, S, S)
    ident = pool.identity[idx] if identity is None else identity
    return {
        "image": img,
        "mask": mask,
        "identity": torch.from_numpy(np.ascontiguousarray(ident, np.float32)),
        "expression": torch.from_numpy(np.ascontiguousarray(pool.expression[idx], np.float32)),
    }
