"""Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with a cubic polynomial
kernel, averaged over random subsets, as torchmetrics' KernelInceptionDistance computes it.

features -> statistics -> score:

    s = kid_sample(feats, keys, capacity)   # a bounded uniform sample of the features
    s = merge_samples(s_shard1, s_shard2)   # exact: the same sample for any split
    mean, std = kernel_inception_distance(s_real, s_fake, subsets=100, subset_size=1000)

Unlike FID, KID needs the features themselves, not moments. To keep memory flat in the number
of images, each side keeps a *bottom-k sample*: every image gets a pseudo-random priority from a
hash of its key (its pair id or file name), and the sample is the `capacity` images with the
smallest priorities. That is a uniform sample without replacement, and since an image's priority
does not depend on which shard saw it, merging the samples of any split keeps exactly the same
images - so KID does not depend on batch size or sharding. With N <= capacity the sample is all
the images and KID is exactly the torchmetrics value (same subsets given the same seed: subsets
are drawn with torch.randperm from a generator seeded with `seed`, in torchmetrics' order, over
the sample sorted by key). Keys must be unique per side.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_CAPACITY = 10_000  # images kept per side: 10k x 2048 float32 = 80 MB


@dataclass(frozen=True)
class KIDSample:
    keys: np.ndarray  # (K,) int64 or str, sorted ascending
    priorities: np.ndarray  # (K,) uint64
    features: np.ndarray  # (K, D) float32
    capacity: int
    n_seen: int  # images offered to the sample, over all merged parts
    feature: str = ""  # name of the feature network
    salt: int = 0  # hash salt: the same salt must be used on every shard

    @property
    def size(self) -> int:
        return int(self.keys.shape[0])


def priorities(keys: np.ndarray, salt: int = 0) -> np.ndarray:
    """Uniform 64-bit priorities from the keys (same in every process, unlike hash())."""
    s = str(int(salt)).encode()
    return np.array(
        [int.from_bytes(hashlib.blake2b(str(k).encode(), digest_size=8, key=s).digest(), "little") for k in keys],
        dtype=np.uint64,
    )


def _keep(keys: np.ndarray, prio: np.ndarray, feats: np.ndarray, capacity: int) -> tuple[np.ndarray, ...]:
    order = np.lexsort((keys, prio))[:capacity]  # smallest priority first, key breaks ties
    keys, prio, feats = keys[order], prio[order], feats[order]
    by_key = np.argsort(keys, kind="stable")
    return keys[by_key], prio[by_key], feats[by_key]


def kid_sample(
    features: np.ndarray, keys: np.ndarray | list, capacity: int = DEFAULT_CAPACITY, feature: str = "", salt: int = 0
) -> KIDSample:
    """Bottom-`capacity` sample of (B, D) features with unique keys (int or str)."""
    feats = np.asarray(features, dtype=np.float32)
    k = np.asarray(keys)
    if feats.ndim != 2 or k.shape != (feats.shape[0],):
        raise ValueError(f"kid_sample: need (B, D) features and B keys, got {feats.shape} and {k.shape}")
    if k.dtype.kind not in "iuU":
        raise ValueError(f"kid_sample: keys must be integers or strings, got dtype {k.dtype}")
    if len(np.unique(k)) != len(k):
        raise ValueError("kid_sample: keys repeat within the batch; give each image a unique key (its pair id)")
    if not np.isfinite(feats).all():
        raise ValueError("kid_sample: features contain NaN/inf; leave failed images out and count them")
    if k.dtype.kind == "u":
        k = k.astype(np.int64)
    keys_kept, prio, kept = _keep(k, priorities(k, salt), feats, capacity)
    return KIDSample(keys_kept, prio, kept, int(capacity), int(feats.shape[0]), feature, int(salt))


def merge_samples(*parts: KIDSample) -> KIDSample:
    if not parts:
        raise ValueError("merge_samples: nothing to merge; pass at least one KIDSample")
    first = parts[0]
    for p in parts[1:]:
        if (
            (p.capacity, p.feature, p.salt) != (first.capacity, first.feature, first.salt)
            or p.features.shape[1] != first.features.shape[1]
            or p.keys.dtype.kind != first.keys.dtype.kind
        ):
            raise ValueError(
                "merge_samples: parts differ in capacity, feature network, salt, feature size or key type "
                f"({p.capacity}, {p.feature!r}, {p.salt}, {p.features.shape[1]}, {p.keys.dtype} vs "
                f"{first.capacity}, {first.feature!r}, {first.salt}, {first.features.shape[1]}, {first.keys.dtype})"
            )
    keys = np.concatenate([p.keys for p in parts])
    if len(np.unique(keys)) != len(keys):
        raise ValueError("merge_samples: the same key appears in two parts; each image must be counted once")
    prio = np.concatenate([p.priorities for p in parts])
    feats = np.concatenate([p.features for p in parts])
    k, pr, f = _keep(keys, prio, feats, first.capacity)
    return KIDSample(k, pr, f, first.capacity, sum(p.n_seen for p in parts), first.feature, first.salt)


def _poly(a: torch.Tensor, b: torch.Tensor, degree: int, gamma: float, coef: float) -> torch.Tensor:
    return (a @ b.T * gamma + coef) ** degree  # (m, m)


def unbiased_mmd2(
    x: torch.Tensor, y: torch.Tensor, degree: int = 3, gamma: float | None = None, coef: float = 1.0
) -> float:
    """Unbiased MMD^2 between (m, D) samples x and y with k(a, b) = (gamma a.b + coef)^degree."""
    m = x.shape[0]
    g = 1.0 / x.shape[1] if gamma is None else gamma
    kxx, kyy, kxy = _poly(x, x, degree, g, coef), _poly(y, y, degree, g, coef), _poly(x, y, degree, g, coef)
    sxx = kxx.sum() - kxx.diagonal().sum()  # off-diagonal sums: the unbiased estimator
    syy = kyy.sum() - kyy.diagonal().sum()
    return float((sxx + syy) / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


@dataclass(frozen=True)
class KIDScore:
    mean: float
    std: float  # population std over subsets, as torchmetrics
    subsets: int
    subset_size: int
    n_real: int  # sample sizes the subsets were drawn from
    n_fake: int


def kernel_inception_distance(
    real: KIDSample,
    fake: KIDSample,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    seed: int = 0,
) -> KIDScore:
    """KID mean and std over `subsets` random subsets of `subset_size` images per side (float64)."""
    if real.feature != fake.feature or real.features.shape[1] != fake.features.shape[1]:
        raise ValueError(
            f"KID: real features from {real.feature or '?'}, fake from {fake.feature or '?'}; "
            "compute both with the same network"
        )
    if subset_size > min(real.size, fake.size) or subset_size < 2:
        raise ValueError(
            f"KID: subset_size={subset_size} but the samples hold {real.size} real and {fake.size} fake "
            f"images; use a subset_size between 2 and {min(real.size, fake.size)}"
        )
    xr = torch.from_numpy(real.features).double()
    xf = torch.from_numpy(fake.features).double()
    gen = torch.Generator().manual_seed(int(seed))
    scores = []
    for _ in range(subsets):  # torchmetrics' draw order: a real permutation, then a fake one
        pr = torch.randperm(real.size, generator=gen)[:subset_size]
        pf = torch.randperm(fake.size, generator=gen)[:subset_size]
        scores.append(unbiased_mmd2(xr[pr], xf[pf], degree, gamma, coef))
    s = np.asarray(scores)
    return KIDScore(float(s.mean()), float(s.std()), subsets, subset_size, real.size, fake.size)
