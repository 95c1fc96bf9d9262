"""The output watermark against what sharing does to an image: detection rate of 100 marked
outputs after each transform, false positives among 1,000 unmarked images, PSNR, embed/detect time
and the C2PA signing cost per image.

    PYTHONPATH=. .venv/bin/python bench/watermark.py [--marked 100] [--unmarked 1000]

Marked outputs, built the way the ingress builds them (>= 256 px; smaller ones are upscaled by
watermark.embed, as the ingress does):
- demo outputs: a 32 px sfsr.synth face upscaled and pasted into a photo (the cpu-demo serves
  32 px crops pasted into photos);
- the 32 px crops alone, upscaled to 256 px (aligned-crop requests);
- photos (.cache/photos, real faces; skimage.data) cropped and rescaled to 256-800 px.
Transforms: PNG as delivered; JPEG q75; a 0.5x resize (area); a crop to half the area (centre or a
corner, alternating); all three (resize, then crop, then JPEG q75).
Unmarked images (never marked, never committed): sfsr.synth renders at several sizes, photo crops,
rescales and JPEG copies (quality 40-95) of the same photos, and the unmarked originals of the
marked set after the same transforms.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sfsr import watermark as wm  # noqa: E402
from sfsr.synth import sample_dataset  # noqa: E402

SKIMAGE = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "retina", "cat")


def photos() -> list[np.ndarray]:
    """Real photos: .cache/photos (faces; fetched by `make photos`) and scikit-image's."""
    import skimage.data as data

    out = []
    for path in sorted((ROOT / ".cache" / "photos").glob("*")):
        out.append(np.asarray(Image.open(path).convert("RGB")))
    for name in SKIMAGE:
        img = getattr(data, name)()
        out.append(np.ascontiguousarray(np.dstack([img] * 3) if img.ndim == 2 else img[:, :, :3]))
    return out


def jpeg(image: np.ndarray, quality: int = 75) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def resize(image: np.ndarray, s: float) -> np.ndarray:
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    return cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=interp)


def crop_half(image: np.ndarray, corner: bool) -> np.ndarray:
    """Half the area (each side / sqrt 2): the centre, or the bottom-right corner."""
    h, w = image.shape[:2]
    ch, cw = round(h / 2**0.5), round(w / 2**0.5)
    y, x = (h - ch, w - cw) if corner else ((h - ch) // 2, (w - cw) // 2)
    return image[y : y + ch, x : x + cw]


def _photo_crop(p: np.ndarray, rng: np.random.Generator, lo: int, hi: int) -> np.ndarray:
    """A random crop of photo p rescaled so its long side lies in [lo, hi]."""
    h, w = p.shape[:2]
    ch = int(rng.integers(min(h, 96), min(h, 2 * w) + 1))
    cw_max = min(w, 2 * ch)  # aspect within 1:2 .. 2:1
    cw = int(rng.integers(min(cw_max, max(96, ch // 2)), cw_max + 1))
    y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = p[y : y + ch, x : x + cw]
    return resize(crop, float(rng.integers(lo, hi + 1)) / max(ch, cw))


def _face(k: int, seed: int, size: int = 32) -> np.ndarray:
    return next(iter(sample_dataset(1, seed=seed * 100_003 + k, size=size, split="all")))[1]


def demo_output(p: np.ndarray, face32: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A photo (256-640 px) with a 32 px face upscaled into it, as the cpu-demo's paste-back does."""
    base = _photo_crop(p, rng, 256, 640).copy()
    h, w = base.shape[:2]
    side = int(min(h, w) * rng.uniform(0.3, 0.6))
    face = cv2.resize(face32, (side, side), interpolation=cv2.INTER_CUBIC)
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    base[y : y + side, x : x + side] = face
    return base


def marked_sources(n: int, seed: int = 0) -> list[np.ndarray]:
    """n outputs before marking: 35% demo outputs, 30% upscaled 32 px crops, 35% photo crops."""
    rng, ph = np.random.default_rng(seed), photos()
    out = []
    for k in range(n):
        kind = k % 20
        p = ph[int(rng.integers(len(ph)))]
        if kind < 7:
            out.append(demo_output(p, _face(k, seed), rng))
        elif kind < 13:
            out.append(wm.upscale_for_watermark(_face(k, seed)))
        else:
            out.append(_photo_crop(p, rng, 256, 800))
    return out


def unmarked(n: int, seed: int = 1) -> list[np.ndarray]:
    """n unmarked images: synthetic renders and photo crops, rescales and JPEG copies."""
    rng, ph = np.random.default_rng(seed), photos()
    out = []
    for k in range(n):
        kind = k % 4
        if kind == 0:  # a synthetic render, at its size or upscaled like an output
            size = int(rng.choice([64, 128, 256]))
            img = _face(k, seed + 7, size)
            out.append(img if rng.random() < 0.5 else resize(img, float(rng.uniform(1.0, 4.0))))
        elif kind == 1:  # an upscaled 32 px face pasted into a photo, never marked
            out.append(demo_output(ph[int(rng.integers(len(ph)))], _face(k, seed + 7), rng))
        else:  # photo crops and rescales, half of them as JPEG
            img = _photo_crop(ph[int(rng.integers(len(ph)))], rng, 64, 800)
            out.append(jpeg(img, int(rng.integers(40, 96))) if kind == 3 else img)
    return out


TRANSFORMS = {
    "png (as delivered)": lambda im, k: im,
    "jpeg q75": lambda im, k: jpeg(im, 75),
    "resize 0.5x": lambda im, k: resize(im, 0.5),
    "crop half area": lambda im, k: crop_half(im, corner=k % 2 == 1),
    "resize+crop+jpeg": lambda im, k: jpeg(crop_half(resize(im, 0.5), corner=k % 2 == 1), 75),
}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / mse)


def old_dwtdctsvd() -> tuple | None:
    """The layer this replaced (invisible-watermark dwtDctSvd, 48 bits, U scale 50, >= 41 bits
    agree), as (embed, detect), when invisible-watermark==0.2.0 is installed; else None."""
    try:
        from imwatermark import WatermarkDecoder, WatermarkEncoder
    except ImportError:
        return None
    payload, scales = b"sfsr\x00\x01", [0, 50, 0]
    bits = np.unpackbits(np.frombuffer(payload, np.uint8))

    def embed(rgb: np.ndarray) -> np.ndarray:
        enc = WatermarkEncoder()
        enc.set_watermark("bytes", payload)
        bgr = enc.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDctSvd", scales=scales)
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def detect(rgb: np.ndarray) -> bool:
        if rgb.shape[0] * rgb.shape[1] < 256 * 256:
            return False
        got = WatermarkDecoder("bits", 48).decode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDctSvd", scales=scales)
        return int((np.asarray(got, np.uint8) == bits).sum()) >= 41

    return embed, detect


def _detected(image: np.ndarray) -> tuple[bool, float]:
    try:
        d = wm.detect(image)
    except ValueError:  # too small to decide: counts as not detected
        return False, float("nan")
    return d.marked, d.statistic


def c2pa_cost(pngs: list[bytes]) -> tuple[float, float, bool]:
    """(ms to sign, ms to read and verify, all trusted) per PNG, with a chain made in a temp dir."""
    import tempfile

    from sfsr import c2pa_sign

    with tempfile.TemporaryDirectory() as tmp:
        creds = c2pa_sign.create_chain(Path(tmp) / "c2pa")
        claim = c2pa_sign.Claim("bench", "0", "req")
        t0 = time.perf_counter()
        signed = [c2pa_sign.sign_png(p, claim, creds) for p in pngs]
        t1 = time.perf_counter()
        reports = [c2pa_sign.read_c2pa(s, creds.anchors_pem) for s in signed]
        t2 = time.perf_counter()
    n = len(pngs)
    return 1000 * (t1 - t0) / n, 1000 * (t2 - t1) / n, all(r.trusted for r in reports)


def main() -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=fmt)
    ap.add_argument("--marked", type=int, default=100, help="marked outputs")
    ap.add_argument("--unmarked", type=int, default=1000, help="unmarked images for the false-positive count")
    ap.add_argument("--no-baseline", action="store_true", help="skip the old dwtDctSvd layer")
    args = ap.parse_args()

    sources = [wm.upscale_for_watermark(s) for s in marked_sources(args.marked)]
    t0 = time.perf_counter()
    marked = [wm.embed(s) for s in sources]
    embed_ms = 1000 * (time.perf_counter() - t0) / len(sources)
    at512 = cv2.resize(sources[0], (512, 512), interpolation=cv2.INTER_CUBIC)
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        wm.embed(at512)
        times.append(time.perf_counter() - t0)
    embed_512_ms = 1000 * float(np.median(times))
    psnrs = np.array([psnr(m, s) for m, s in zip(marked, sources)])
    old = None if args.no_baseline else old_dwtdctsvd()
    old_marked = [old[0](s) for s in sources] if old else []

    rows, detect_s, n_detect = [], 0.0, 0
    for name, f in TRANSFORMS.items():
        t0 = time.perf_counter()
        hits = [_detected(f(m, k)) for k, m in enumerate(marked)]
        detect_s, n_detect = detect_s + time.perf_counter() - t0, n_detect + len(marked)
        clean = [_detected(f(s, k))[0] for k, s in enumerate(sources)]
        z = np.array([h[1] for h in hits])
        old_rate = np.mean([old[1](f(m, k)) for k, m in enumerate(old_marked)]) if old else float("nan")
        rows.append((name, np.mean([h[0] for h in hits]), np.nanmin(z), np.nanmedian(z), sum(clean), old_rate))

    null = unmarked(args.unmarked)
    t0 = time.perf_counter()
    null_hits = [_detected(u) for u in null]
    detect_s, n_detect = detect_s + time.perf_counter() - t0, n_detect + len(null)
    null_z = np.array([h[1] for h in null_hits])
    fp = sum(h[0] for h in null_hits)
    sign_ms, verify_ms, trusted = c2pa_cost([wm.encode_png(m, {}) for m in marked[:50]])

    n = len(marked)
    print(
        f"watermark {wm.METHOD}: {n} marked outputs ({min(s.shape[0] for s in sources)}-"
        f"{max(max(s.shape[:2]) for s in sources)} px), {len(null)} unmarked images"
    )
    print(f"threshold z >= {wm.THRESHOLD:.3f}: {tile_tests()} tests, bound {wm.FP_BOUND:g} per image\n")
    print(f"{'transform':<22}{'detected':>10}{'min z':>8}{'median z':>10}{'unmarked flagged':>18}{'old dwtDctSvd':>15}")
    for name, rate, zmin, zmed, clean, old_rate in rows:
        print(f"{name:<22}{rate:>10.2f}{zmin:>8.1f}{zmed:>10.1f}{f'{clean}/{n}':>18}{old_rate:>15.2f}")
    valid = null_z[~np.isnan(null_z)]
    print(
        f"\nfalse positives among {len(null)} unmarked images: {fp} "
        f"(statistic max {valid.max():.2f}, 99th percentile {np.percentile(valid, 99):.2f}, "
        f"{len(null) - len(valid)} too small to decide)"
    )
    print(f"PSNR of the mark: mean {psnrs.mean():.1f} dB, min {psnrs.min():.1f} dB")
    print(
        f"embed {embed_ms:.1f} ms/image (mean over the outputs), {embed_512_ms:.1f} ms at 512 x 512 (median "
        f"of 20); detect {1000 * detect_s / n_detect:.1f} ms/image (mean over {n_detect})"
    )
    print(
        f"C2PA (ES256, no thumbnail, no timestamp): sign {sign_ms:.1f} ms/image, read+verify "
        f"{verify_ms:.1f} ms/image, all trusted: {trusted}"
    )
    comb = rows[-1]
    print(f"\nall three edits: detected {comb[1]:.2f} (new) vs {comb[5]:.2f} (old dwtDctSvd)")


def tile_tests() -> int:
    from sfsr.watermark import tile

    return tile.N_TESTS


if __name__ == "__main__":
    main()
