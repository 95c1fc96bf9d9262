"""Seeded procedural backgrounds for synthetic faces.

A background is a pure function of (seed, canvas size): every pattern is defined in
normalised [0, 1] coordinates, so the same seed gives the same picture at every size.
Kinds: linear gradient, radial gradient, stripes, checkerboard, blobs, smooth noise.
"""

from __future__ import annotations

import cv2
import numpy as np

BACKGROUND_KINDS: tuple[str, ...] = ("gradient", "radial", "stripes", "checker", "blobs", "noise")


def _colour(rng: np.random.Generator) -> np.ndarray:
    # Uniform RGB with a floor/ceiling so patterns are never pure black or white noise.
    return rng.uniform(15.0, 240.0, size=3).astype(np.float32)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size  # pixel centres in [0, 1]
    return np.meshgrid(c, c)  # xx, yy: (S, S) each


def background_kind(seed: int) -> str:
    """Which pattern a seed draws (cheap: only the first draw of the seed's generator)."""
    rng = np.random.default_rng(np.random.SeedSequence([0xB6, int(seed) & 0xFFFFFFFF]))
    return BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]


def render_background(seed: int, size: int) -> np.ndarray:
    """RGB float32 (size, size, 3) in [0, 255] for background `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence([0xB6, int(seed) & 0xFFFFFFFF]))
    kind = BACKGROUND_KINDS[int(rng.integers(len(BACKGROUND_KINDS)))]
    a, b = _colour(rng), _colour(rng)
    xx, yy = _grid(size)
    if kind == "gradient":
        ang = rng.uniform(0.0, 2.0 * np.pi)
        t = (xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang) + 0.5  # (S, S)
        t = np.clip(t, 0.0, 1.0)[..., None]
        return a * (1.0 - t) + b * t
    if kind == "radial":
        cx, cy = rng.uniform(0.0, 1.0, size=2)
        t = np.clip(np.hypot(xx - cx, yy - cy) / rng.uniform(0.5, 1.2), 0.0, 1.0)[..., None]
        return a * (1.0 - t) + b * t
    if kind == "stripes":
        ang = rng.uniform(0.0, np.pi)
        period = rng.uniform(0.08, 0.3)
        t = (xx * np.cos(ang) + yy * np.sin(ang)) / period
        # Smoothed square wave: hard enough to read as stripes, soft enough not to alias.
        s = np.clip(np.sin(2.0 * np.pi * t) * 3.0, -1.0, 1.0)[..., None] * 0.5 + 0.5
        return a * s + b * (1.0 - s)
    if kind == "checker":
        cell = rng.uniform(0.1, 0.25)
        ang = rng.uniform(0.0, np.pi / 2)
        u = (xx * np.cos(ang) + yy * np.sin(ang)) / cell
        v = (-xx * np.sin(ang) + yy * np.cos(ang)) / cell
        s = np.clip(np.sin(np.pi * u) * np.sin(np.pi * v) * 6.0, -1.0, 1.0)[..., None] * 0.5 + 0.5
        return a * s + b * (1.0 - s)
    if kind == "blobs":
        img = np.empty((size, size, 3), np.uint8)
        img[:] = a.astype(np.uint8)
        k = 1 << 4  # cv2 fixed-point: 4 fractional bits
        for _ in range(int(rng.integers(5, 12))):
            cx, cy = rng.uniform(0.0, 1.0, size=2)
            r = rng.uniform(0.05, 0.25)
            centre = (int(cx * size * k), int(cy * size * k))
            colour = tuple(int(v) for v in _colour(rng))
            cv2.circle(img, centre, int(r * size * k), colour, -1, cv2.LINE_AA, 4)
        return img.astype(np.float32)
    # "noise": smooth value noise from a coarse grid, upsampled (size independent).
    coarse = rng.uniform(0.0, 1.0, size=(6, 6, 1)).astype(np.float32)
    t = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    t = np.clip(t, 0.0, 1.0).reshape(size, size, 1)
    return a * (1.0 - t) + b * t
