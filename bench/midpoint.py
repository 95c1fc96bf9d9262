"""x0 recovery error against ground truth over training: one-step vs midpoint vs improved.

    python bench/midpoint.py RUN_DIR [--n 48] [--png midpoint.png]

RUN_DIR is a jobs/train.py run folder (the layout of sfsr.model.checkpoint). For every checkpoint,
held-out synthetic faces (split "test") are noised to x_t at a grid of timesteps with fixed noise,
x0 is recovered with each method (sfsr.diffusion.recovery) under the faces' own judge-encoded
conditions, and the error against the true x0 is measured in the face region and
over the whole image (MSE in [-1, 1] units; PSNR with peak-to-peak 2). The paper's comparison
(Liu et al. 2024, fig. on midpoint recovery) is this one: reconstruction error over training.
Baselines (one_step, midpoint) and candidates run on the same inputs in the same process; two
ablations show where the improvement comes from. The ratio improved / midpoint is printed last.
The plot is drawn with PIL (matplotlib is not a dependency).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfsr.diffusion.recovery import IMPROVED, MIDPOINT, ONE_STEP, Recovery, recover_x0  # noqa: E402
from sfsr.diffusion.schedule import add_noise, alphas_cumprod, gather  # noqa: E402
from sfsr.model import DiffSFSR  # noqa: E402
from sfsr.model.checkpoint import model_checkpoints  # noqa: E402
from sfsr.model.training import face_region  # noqa: E402
from sfsr.synth.dataset import render_batch  # noqa: E402
from sfsr.synth.judges import load_judges  # noqa: E402

METHODS: dict[str, Recovery] = {
    "one_step": ONE_STEP,
    "midpoint": MIDPOINT,
    "midpoint+paste": Recovery(steps=2, paste_background=True),
    "midpoint+mean": Recovery(steps=2, combine="mean"),
    "midpoint+logsnr": Recovery(steps=2, spacing="logsnr"),
    "improved": IMPROVED,
}


def psnr(mse: float) -> float:
    return 10 * math.log10(4.0 / mse) if mse > 0 else float("inf")  # peak-to-peak 2 in [-1, 1]


@torch.no_grad()
def measure(model: DiffSFSR, data: dict, t_grid: list[int], seed: int) -> dict[str, dict[int, tuple[float, float]]]:
    """method -> t -> (face MSE, whole MSE), averaged over the faces."""
    model.eval()
    table = alphas_cumprod(model.schedule)  # (T,)
    x0 = data["x0"]
    face = data["mask"]  # (B, 1, S, S) true face mask
    region = face_region(face, model.config.mask_dilate)
    bg, mreg = model.prepare_background(x0, region)
    b = x0.shape[0]

    def denoise(x, t):
        return model(x, t, bg, mreg, data["identity"], data["expression"])

    out: dict[str, dict[int, tuple[float, float]]] = {m: {} for m in METHODS}
    for t_val in t_grid:
        g = torch.Generator().manual_seed(seed * 10_007 + t_val)  # same noise for every method and checkpoint
        eps = torch.randn(x0.shape, generator=g)
        t = torch.full((b,), t_val, dtype=torch.long)
        x_t = add_noise(x0, eps, gather(table, t))
        first = denoise(x_t, t)  # shared first evaluation, as in training
        for name, rec in METHODS.items():
            est = recover_x0(
                denoise, x_t, t, table, model.schedule.prediction_type, rec, background=bg, mask=mreg, first=first
            ).clamp(-1, 1)
            err = (est - x0) ** 2  # (B, 3, S, S)
            face_mse = float((err * face).sum() / (face.sum() * 3))
            out[name][t_val] = (face_mse, float(err.mean()))
    return out


def load_data(n: int, seed: int) -> dict[str, torch.Tensor]:
    images, masks, _, _ = render_batch(n, seed=seed, n_identities=200, size=32, split="test")
    judges = load_judges(32)
    return {
        "x0": torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0,
        "mask": torch.from_numpy(masks >= 128).float()[:, None],
        "identity": torch.from_numpy(judges.identity_embedding_np(images)),
        "expression": torch.from_numpy(judges.expression_np(images)),
    }


def draw_plot(rows: list[dict], path: str) -> None:
    """Face-region PSNR (mean over t) against training step, one line per method (PIL)."""
    from PIL import Image, ImageDraw

    w, h, pad = 760, 440, 60
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    steps = sorted({r["step"] for r in rows})
    vals = [r["face_psnr"] for r in rows]
    lo, hi = math.floor(min(vals)) - 0.5, math.ceil(max(vals)) + 0.5
    sx = lambda s: pad + (w - 2 * pad - 120) * (steps.index(s) / max(1, len(steps) - 1))  # noqa: E731
    sy = lambda v: h - pad - (h - 2 * pad) * (v - lo) / (hi - lo)  # noqa: E731
    d.line([(pad, pad), (pad, h - pad), (w - pad - 120, h - pad)], fill="black")
    for k in range(int(lo), int(hi) + 1):
        d.text((10, sy(k) - 6), f"{k} dB", fill="black")
        d.line([(pad - 4, sy(k)), (pad, sy(k))], fill="black")
    for s in steps:
        d.text((sx(s) - 12, h - pad + 8), str(s), fill="black")
    d.text((w // 2 - 120, h - 25), "training step (checkpoint)", fill="black")
    d.text((pad, 15), "x0 recovery: face-region PSNR vs ground truth (mean over t), higher is better", fill="black")
    colours = {
        "one_step": (120, 120, 120),
        "midpoint": (30, 100, 220),
        "midpoint+paste": (150, 190, 240),
        "midpoint+mean": (120, 200, 120),
        "midpoint+logsnr": (240, 170, 80),
        "improved": (220, 40, 40),
    }
    for i, (name, col) in enumerate(colours.items()):
        pts = [
            (sx(r["step"]), sy(r["face_psnr"])) for r in sorted(rows, key=lambda r: r["step"]) if r["method"] == name
        ]
        if len(pts) > 1:
            d.line(pts, fill=col, width=3 if name in ("improved", "midpoint", "one_step") else 1)
        for x, y in pts:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=col)
        d.line([(w - pad - 105, pad + 20 * i + 6), (w - pad - 85, pad + 20 * i + 6)], fill=col, width=3)
        d.text((w - pad - 80, pad + 20 * i), name, fill="black")
    img.save(path)


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("run", help="a jobs/train.py run folder (RUN/checkpoint_*/model)")
    p.add_argument("--n", type=int, default=48, help="held-out faces")
    p.add_argument("--seed", type=int, default=2, help="seed of the faces and noise")
    p.add_argument("--t", default="100,300,500,700,900", help="timesteps to noise to")
    p.add_argument("--png", default="midpoint.png", help="plot output")
    p.add_argument("--json", default="", help="also write all rows here")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    try:
        ckpts = model_checkpoints(a.run)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    t_grid = [int(v) for v in a.t.split(",")]
    data = load_data(a.n, a.seed)
    rows, per_t = [], {}
    t0 = time.time()
    for step, ck in ckpts:
        res = measure(DiffSFSR.from_pretrained(str(ck)).float(), data, t_grid, a.seed)
        for name, by_t in res.items():
            face = float(np.mean([v[0] for v in by_t.values()]))
            whole = float(np.mean([v[1] for v in by_t.values()]))
            rows.append(
                {
                    "step": step,
                    "method": name,
                    "face_mse": face,
                    "whole_mse": whole,
                    "face_psnr": psnr(face),
                    "whole_psnr": psnr(whole),
                }
            )
        per_t = res
        print(f"checkpoint step {step} measured ({time.time() - t0:.0f} s)", flush=True)
    print(f"\n{a.n} held-out faces, t in {t_grid}, errors averaged over t (MSE in [-1, 1] units)")
    print(f"{'step':>7} {'method':<16} {'face MSE':>9} {'face PSNR':>10} {'whole MSE':>10} {'whole PSNR':>11}")
    for r in rows:
        print(
            f"{r['step']:>7} {r['method']:<16} {r['face_mse']:>9.4f} {r['face_psnr']:>10.2f} "
            f"{r['whole_mse']:>10.4f} {r['whole_psnr']:>11.2f}"
        )
    print(f"\nlast checkpoint, face MSE per t:\n{'method':<16}" + "".join(f"{'t=' + str(t):>9}" for t in t_grid))
    for name, by_t in per_t.items():
        print(f"{name:<16}" + "".join(f"{by_t[t][0]:>9.4f}" for t in t_grid))
    draw_plot(rows, a.png)
    if a.json:
        Path(a.json).write_text(
            json.dumps(
                {"rows": rows, "per_t_last": {k: {str(t): v for t, v in d.items()} for k, d in per_t.items()}}, indent=1
            )
        )
    last = max(r["step"] for r in rows)
    get = {r["method"]: r for r in rows if r["step"] == last}
    by = {(r["step"], r["method"]): r["face_mse"] for r in rows}
    steps = sorted({r["step"] for r in rows})
    wins = sum(1 for s in steps if by[s, "improved"] < min(by[s, "midpoint"], by[s, "one_step"]))
    print(
        f"\nplot: {a.png}; improved beats both one_step and midpoint (face MSE) at {wins} of {len(steps)} checkpoints"
    )
    print(
        f"ratio (step {last}, face MSE): "
        f"improved / midpoint = {get['improved']['face_mse'] / get['midpoint']['face_mse']:.3f}, "
        f"improved / one_step = {get['improved']['face_mse'] / get['one_step']['face_mse']:.3f}, "
        f"midpoint / one_step = {get['midpoint']['face_mse'] / get['one_step']['face_mse']:.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
