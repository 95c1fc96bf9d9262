"""The robust layer: a keyed, tiled noise pattern in luminance, found by folding and FFT correlation.

Embedding (`embed_tile`): a TILE x TILE pattern W = S R, where R is +-1 noise drawn from a key and
S is a circular Gaussian blur (SIGMA tile pixels; low-mid frequencies, so a 0.5x downscale and JPEG
keep it), is tiled over the image from its top-left corner and added to every RGB channel (so to
luminance), scaled per pixel by local texture (flat areas get STRENGTH_FLAT, busy ones up to
STRENGTH_MAX grey levels) so that it hides where the eye does not look.

Detection (`detect_tile`): luminance -> high-pass residual -> divided by its local RMS and clipped
(so edges do not dominate) -> for a candidate scale s (the image is the marked one resized by s),
every pixel of a central window is splatted to tile coordinate (y / s, x / s) mod TILE
("folding"), which sums the periods: a crop only shifts the tile cyclically, a resize only changes
s. For the folded residual F (TILE x TILE) and a = S F the statistic, for every cyclic shift k, is

    z_k = <a, roll(R, k)> / ||a||,

computed for all k at once with an FFT. Scales lie on a grid 2^(j / 140), 0.25x to 1.3x, 0.5%
apart (0.25, 0.5 and 1 exactly on it): over the WINDOW of 384 original pixels a scale half a step
off misaligns the edges by 384 / 2 * 0.25% < 0.5 px. Coarse to fine, so a detection costs tens of
milliseconds rather than 334 full correlations: every 4th scale is tried on a 192 px window, the 4
best and their neighbours (+-2 steps) are tested on the full window, and the image is called
marked when the largest of those full-window z_k reaches THRESHOLD.

The null bound. Take any image made without our key (natural or generated, edited or not, fixed
before the key is drawn). Then a depends on the image and s only, and R is i.i.d. Rademacher (the
key is hashed with SHA-256 into a PCG64 seed; we model its signs as fair coin flips). For each k,
roll(R, k) is a permutation of R, so again i.i.d. Rademacher, and Hoeffding's inequality for the
weighted sum sum_i a_i r_i gives P(z_k >= t) <= exp(-t^2 / 2) for every such image, however
textured or periodic (JPEG's 8 px blocks included); z_k has mean 0 and variance exactly 1. The
full-window tests actually run are a subset, chosen by the coarse pass, of the N_TESTS = TILE^2 *
len(SCALES) = 4096 * 334 tests on the grid, so whatever the choice a union bound (Bonferroni) over
all of them gives

    P(false positive) <= N_TESTS * exp(-THRESHOLD^2 / 2) = FP_BOUND = 1e-6,

with THRESHOLD = sqrt(2 ln(N_TESTS / FP_BOUND)) = 7.48. Measured: the largest statistic over
1,000 unmarked images was 5.74, and marked ones after a 0.5x resize, a half-area crop and JPEG q75
had a median of 11.6 (bench/results/watermark.txt). The probability is over the key: the bound
holds for images chosen without knowledge of it, not against an adversary who has the key (it is
in this source file) and crafts an image to match it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

TILE = 64  # pattern period in pixels of the delivered image
SIGMA = 1.0  # pattern blur in tile pixels: sets its frequency band
STRENGTH_FLAT = 2.0  # grey levels of pattern RMS in flat areas ...
STRENGTH_MAX = 3.5  # ... up to this in textured ones
TEXTURE_REF = 12.0  # local luminance std (grey levels) at which the strength reaches its maximum
HP_SIGMA = 1.0  # detection high-pass: residual = Y - blur(Y, HP_SIGMA)
WINDOW = 384  # detection window, in pixels of the original resolution (bounds misalignment)
STEPS_PER_OCTAVE = 140  # scale grid 2^(k / 140): 0.5% apart, and 0.25, 0.5, 1 exactly on it
SCALES = tuple(2.0 ** (k / STEPS_PER_OCTAVE) for k in range(-2 * STEPS_PER_OCTAVE, 54))  # 0.25 .. 1.30
COARSE_EVERY = 4  # the first pass tries every 4th scale (2% apart) ...
COARSE_WINDOW = 192  # ... on a smaller window, so 2% steps still align; it only picks where to look
CANDIDATES = 4  # best first-pass scales; the full-window pass tests each +- COARSE_EVERY // 2 steps
FP_BOUND = 1e-6
N_TESTS = TILE * TILE * len(SCALES)
THRESHOLD = math.sqrt(2 * math.log(N_TESTS / FP_BOUND))
MIN_SIDE = 48  # smaller received images are reported as not checked


@dataclass(frozen=True)
class TileResult:
    """What `detect_tile` found: the best statistic, and where."""

    statistic: float  # max z over shifts and scales
    scale: float  # the scale it was found at (received size / marked size)
    shift: tuple[int, int]  # the cyclic shift (dy, dx) in tile pixels
    checked: bool = True


@lru_cache(maxsize=8)
def _key_noise(key: bytes) -> np.ndarray:
    """(TILE, TILE) float64 +-1 noise drawn from the key."""
    seed = int.from_bytes(hashlib.sha256(b"sfsr-tile-v1" + key).digest()[:16], "big")
    return np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(TILE, TILE))


@lru_cache(maxsize=1)
def _blur_transfer() -> np.ndarray:
    """(TILE, TILE) real transfer function of the circular Gaussian blur S (symmetric)."""
    f = np.fft.fftfreq(TILE)
    g = np.exp(-2 * (math.pi * SIGMA) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    return g


@lru_cache(maxsize=8)
def pattern(key: bytes) -> np.ndarray:
    """(TILE, TILE) float32 pattern W = S R, scaled to unit RMS."""
    w = np.fft.ifft2(np.fft.fft2(_key_noise(key)) * _blur_transfer()).real
    return (w / w.std()).astype(np.float32)


def embed_tile(rgb: np.ndarray, key: bytes) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the same with the tiled pattern added (uint8)."""
    h, w = rgb.shape[:2]
    y = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    mean = cv2.GaussianBlur(y, (0, 0), 2.0)
    std = np.sqrt(np.maximum(cv2.GaussianBlur(y * y, (0, 0), 2.0) - mean * mean, 0.0))
    strength = STRENGTH_FLAT + (STRENGTH_MAX - STRENGTH_FLAT) * np.minimum(std / TEXTURE_REF, 1.0)
    tiled = np.tile(pattern(key), (h // TILE + 1, w // TILE + 1))[:h, :w]
    delta = strength * tiled  # (H, W)
    out = rgb.astype(np.float32) + delta[:, :, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _splat(n: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear-interpolation splat of n pixels of an image resized by `scale` onto tile positions:
    (lower index, upper index, lower weight, upper weight), each (n,). Centred, so misalignment
    from a slightly wrong scale grows both ways from the middle."""
    t = (np.arange(n) - (n - 1) / 2) / scale
    lo = np.floor(t)
    frac = (t - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    return lo % TILE, (lo + 1) % TILE, 1 - frac, frac


def fold(x: np.ndarray, scale: float) -> np.ndarray:
    """(h, w) float32 -> (TILE, TILE) float64: every pixel added at its tile position (y, x) / scale
    mod TILE. np.bincount rather than a matrix product: single-threaded, so it does not fight other
    processes for cores the way a multi-threaded BLAS does on a busy machine."""
    h, w = x.shape
    c0, c1, cw0, cw1 = _splat(w, scale)
    rows = (np.arange(h) * TILE)[:, None]
    y = np.bincount((rows + c0).ravel(), (x * cw0).ravel(), h * TILE)
    y += np.bincount((rows + c1).ravel(), (x * cw1).ravel(), h * TILE)
    y = y.reshape(h, TILE)  # columns folded
    r0, r1, rw0, rw1 = _splat(h, scale)
    cols = np.arange(TILE)[None, :]
    f = np.bincount((r0[:, None] * TILE + cols).ravel(), (y * rw0[:, None]).ravel(), TILE * TILE)
    f += np.bincount((r1[:, None] * TILE + cols).ravel(), (y * rw1[:, None]).ravel(), TILE * TILE)
    return f.reshape(TILE, TILE)


def z_map(residual: np.ndarray, key: bytes, scale: float, window: int = WINDOW) -> np.ndarray:
    """(H, W) float32 residual (`residual`) -> (TILE, TILE) z statistics, one per cyclic shift, for
    an image resized by `scale` since marking, from its central `window` x `window` original pixels.
    Each is about N(0, 1)-sized on unmarked images: for a key drawn independently of the image it
    has mean 0, variance exactly 1, and a tail below exp(-t^2 / 2) (Hoeffding; module docstring)."""
    h, w = residual.shape
    win = max(int(window * scale), TILE)
    hh, ww = min(h, win), min(w, win)
    y0, x0 = (h - hh) // 2, (w - ww) // 2
    folded = fold(residual[y0 : y0 + hh, x0 : x0 + ww], scale)  # (TILE, TILE) F
    a_hat = np.fft.fft2(folded) * _blur_transfer()  # a = S F, in the Fourier domain
    norm = math.sqrt(float((np.abs(a_hat) ** 2).sum()) / (TILE * TILE))  # Parseval: ||a||
    if norm == 0.0:  # a flat image: nothing to correlate
        return np.zeros((TILE, TILE))
    return np.fft.ifft2(a_hat * np.conj(np.fft.fft2(_key_noise(key)))).real / norm  # <a, roll(R, k)> / ||a||


def residual(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (h, w) float32 locally normalised high-pass luminance residual, clipped
    to +-3 (so edges do not dominate), of the central part that any scale's window can use."""
    h, w = rgb.shape[:2]
    side = int(WINDOW * SCALES[-1]) + 8
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    y = cv2.cvtColor(np.ascontiguousarray(rgb[y0 : y0 + side, x0 : x0 + side]), cv2.COLOR_RGB2GRAY)
    y = y.astype(np.float32)
    r = y - cv2.GaussianBlur(y, (0, 0), HP_SIGMA)
    rms = np.sqrt(cv2.GaussianBlur(r * r, (0, 0), 4.0)) + 1.0
    return np.clip(r / rms, -3.0, 3.0)


def detect_tile(rgb: np.ndarray, key: bytes) -> TileResult:
    """(H, W, 3) uint8 RGB -> the best z statistic over shifts and SCALES (see the module docstring).

    Coarse to fine: every scale is first tried on a small central window (COARSE_WINDOW), which
    only chooses where to look; the CANDIDATES best scales and their grid neighbours are then
    tested on the full WINDOW, and only those tests decide. They are a subset of the N_TESTS in
    the bound, so the bound holds however they were chosen."""
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        return TileResult(0.0, 1.0, (0, 0), checked=False)
    res = residual(rgb)
    first = range(0, len(SCALES), COARSE_EVERY)
    coarse = np.array([z_map(res, key, SCALES[i], COARSE_WINDOW).max() for i in first])
    top = [first[int(j)] for j in np.argsort(coarse)[-CANDIDATES:]]
    half = COARSE_EVERY // 2
    picks = sorted({j for i in top for j in range(i - half, i + half + 1) if 0 <= j < len(SCALES)})
    best = TileResult(-math.inf, 1.0, (0, 0))
    for i in picks:
        z = z_map(res, key, SCALES[i])
        k = int(np.argmax(z))
        if z.flat[k] > best.statistic:
            best = TileResult(float(z.flat[k]), SCALES[i], divmod(k, TILE))
    return best
