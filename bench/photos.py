"""Does the paper's model learn on photos? photo64 trained on a few offline photos, swaps measured.

    python bench/photos.py [--minutes 20 | --steps N] [--eval-every 250] [--out bench/results]
    python bench/photos.py --smoke --out /tmp/photos   # tiny settings, well under a minute

Data: the offline test photos (tests/fixtures/photos.py: obama.jpg, obama2.jpg, obama3.jpg,
biden.jpg, skimage's astronaut.png; three people) analysed with the builtin face pack at 64 px
(the one framing of sfsr.faces.analyze), one face per photo. Each person gets --faces-per-person
faces: the originals plus augmentations re-warped from the source photo through the face's align
matrix (small shift, scale, rotation), half of them mirrored, all colour-jittered. Crops are
encoded with the builtin pack; the identity condition is the person's mean identity vector (as
jobs.train does with identity_label_means), the expression condition the face's own vector.

Training: a plain loop calling sfsr.model.training.train_step (a benchmark, not a shipped
trainer: jobs.train is that) on preset photo64, batch 16, denoising loss plus the paper's
expression loss through the builtin FER reader. There is NO identity loss: on photos it reads
faces with ArcFace, whose weights are not available offline.

Evaluation, with the EMA model every --eval-every steps and at the end (Generator.from_vectors,
since the conditions are the person means training used):
- face PSNR: training faces resampled with their own conditions and background, PSNR inside
  the face mask against the true crop (MSE pooled over faces, peak-to-peak 255);
- swap-to-source: for every ordered pair of different people, the source person's mean identity
  onto each original face of the target person (its expression, background and mask; --swap-seeds
  samples each); the fraction of outputs whose builtin (dlib) identity embedding is closer
  (cosine) to the source person's mean than to the target person's. The baseline, copy_target (output = the target
  crop, what a model that ignores the identity condition would give), is measured in the same
  run on the same pairs.
The verdict against issue 13's aim (swap-to-source >= 0.8 on trained people) is printed last.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfsr.faces.align import transform_points  # noqa: E402
from sfsr.faces.analyze import FaceRecord, analyze_image, downscale_face, encode_crops, face_mask  # noqa: E402
from sfsr.faces.pack import FacePack, open_pack  # noqa: E402
from sfsr.generate import Generator, encoders_for  # noqa: E402
from sfsr.io.images import decode_image  # noqa: E402
from sfsr.model.recognisers import photo_recognisers  # noqa: E402
from sfsr.model.training import (  # noqa: E402
    EMA,
    TrainConfig,
    identity_label_means,
    make_model,
    make_optimizer,
    train_step,
)
from tests.fixtures.photos import DEFAULT_DEST, PEOPLE, fetch_photos  # noqa: E402

PRESET = "photo64"
SIZE = 64
AIM = 0.8  # issue 13: swap-to-source fraction on trained people
COLUMNS = ("step", "minutes", "samples/s", "loss", "face_PSNR", "swap_to_source", "copy_target", "swaps")
SMOKE = dict(
    faces_per_person=4, swap_seeds=1, steps=10, eval_every=5, sample_steps=2, psnr_faces=6, threads=1, total_steps=10
)


@dataclass(frozen=True)
class FaceSet:
    """Aligned 64 px faces with their conditions; the originals (one per photo) come first."""

    crops: np.ndarray  # (N, S, S, 3) uint8
    masks: np.ndarray  # (N, S, S) bool
    person: list[str]  # (N,)
    original: np.ndarray  # (N,) bool: the un-augmented face of a photo
    identity: np.ndarray  # (N, 128) the person's mean builtin identity vector
    expression: np.ndarray  # (N, 13) the face's own builtin expression vector
    means: dict[str, np.ndarray]  # person -> (128,) unit mean identity


def jittered(face: FaceRecord, image: np.ndarray, rng: np.random.Generator, align: int) -> FaceRecord:
    """The face re-warped from its source photo with a small random similarity (scale 0.93-1.07,
    rotation +-5 degrees, shift +-3% of the crop) composed after its align matrix, framed like
    analyze_image: warped and masked at `align` px, then area-reduced to the face's size."""
    s = face.crop.shape[0]
    up = np.array([[align / s, 0, 0.5 * align / s - 0.5], [0, align / s, 0.5 * align / s - 0.5], [0, 0, 1]])
    base = up @ np.vstack([face.align_matrix.astype(np.float64), [0, 0, 1]])  # source -> align px
    c = align / 2
    jit = cv2.getRotationMatrix2D((c, c), rng.uniform(-5, 5), rng.uniform(0.93, 1.07))
    jit[:, 2] += rng.uniform(-0.03, 0.03, 2) * align
    matrix = (np.vstack([jit, [0, 0, 1]]) @ base)[:2].astype(np.float32)
    crop = cv2.warpAffine(image, matrix, (align, align), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    dense = transform_points(face.landmarks, matrix) if face.landmarks is not None else None
    big = FaceRecord(
        face.face_index, face.bbox, face.score, face.landmarks5, face.landmarks, matrix, crop,
        face_mask(dense, align), face.pose,
    )  # fmt: skip
    return downscale_face(big, s)


def colour_jitter(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast and saturation each scaled by 0.9-1.1: (S, S, 3) uint8 -> same."""
    x = crop.astype(np.float32)
    grey = x.mean(axis=2, keepdims=True)
    x = grey + (x - grey) * rng.uniform(0.9, 1.1)  # saturation
    x = x.mean() + (x - x.mean()) * rng.uniform(0.9, 1.1)  # contrast
    return np.clip(x * rng.uniform(0.9, 1.1), 0, 255).round().astype(np.uint8)


def build_faces(pack: FacePack, folder: Path, per_person: int, seed: int) -> FaceSet:
    """Analyse each photo of PEOPLE, keep its most confident face, augment to `per_person` faces
    per person (round-robin over that person's photos), encode them all with the builtin pack."""
    rng = np.random.default_rng(seed)
    photos: dict[str, list[tuple[np.ndarray, FaceRecord]]] = {}
    for name, who in PEOPLE.items():
        image = decode_image((folder / name).read_bytes(), source=str(folder / name))
        faces = analyze_image(pack, image, SIZE)
        if not faces:
            raise ValueError(f"{folder / name}: the builtin pack finds no face; re-fetch the test photos")
        photos.setdefault(who, []).append((image, faces[0]))
    if per_person < max(len(v) for v in photos.values()):
        raise ValueError(
            f"--faces-per-person {per_person}: needs at least one face per photo (obama has 3 photos); use 3 or more"
        )
    rows: list[tuple[np.ndarray, np.ndarray, str, bool]] = []  # (crop, mask, person, original)
    for who, items in photos.items():  # the originals first: evaluation targets and the first PSNR faces
        rows += [(face.crop, face.mask, who, True) for _, face in items]
    for who, items in photos.items():
        for k in range(per_person - len(items)):
            image, face = items[k % len(items)]
            aug = jittered(face, image, rng, 2 * SIZE)
            crop, mask = colour_jitter(aug.crop, rng), aug.mask
            if k % 2:  # mirrored: the aligned template is left-right symmetric to 0.1 px
                crop, mask = crop[:, ::-1], mask[:, ::-1]
            rows.append((np.ascontiguousarray(crop), np.ascontiguousarray(mask), who, False))
    crops_a = np.stack([r[0] for r in rows])
    person = [r[2] for r in rows]
    own_identity, expression = encode_crops(pack, crops_a)  # (N, 128), (N, 13)
    means = identity_label_means({"labels": [{"identity_label": p} for p in person], "identity": list(own_identity)})
    masks, original = np.stack([r[1] for r in rows]), np.array([r[3] for r in rows])
    return FaceSet(crops_a, masks, person, original, np.stack([means[p] for p in person]), expression, means)


def batch_of(faces: FaceSet, idx: np.ndarray) -> dict[str, torch.Tensor]:
    """The train_step batch of faces[idx]: image (B, 3, S, S) in [-1, 1], mask (B, 1, S, S)."""
    return {
        "image": torch.from_numpy(faces.crops[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1.0,
        "mask": torch.from_numpy(faces.masks[idx]).float()[:, None],
        "identity": torch.from_numpy(faces.identity[idx]),
        "expression": torch.from_numpy(faces.expression[idx]),
    }


def swap_pairs(faces: FaceSet, repeats: int = 1) -> list[tuple[str, int]]:
    """(source person, target face index) for every ordered pair of different people, over the
    target person's original faces, each `repeats` times (sampled with different seeds)."""
    people = list(faces.means)
    once = [(src, int(i)) for src in people for i in np.flatnonzero(faces.original) if faces.person[i] != src]
    return once * repeats


def closer_to_source(gen: Generator, faces: FaceSet, pairs: list[tuple[str, int]], outputs: np.ndarray) -> int:
    """How many outputs' builtin identity embedding is closer (cosine) to the source person's mean
    than to the target person's."""
    emb = gen.identity_vectors(outputs)  # (P, 128)
    emb = emb / np.linalg.norm(emb, axis=1, keepdims=True).clip(1e-12)
    src = np.stack([faces.means[s] for s, _ in pairs])  # (P, 128), unit
    tgt = np.stack([faces.means[faces.person[i]] for _, i in pairs])
    return int(((emb * src).sum(1) > (emb * tgt).sum(1)).sum())


def evaluate(
    gen: Generator, faces: FaceSet, psnr_idx: np.ndarray, pairs: list[tuple[str, int]], steps: int, seed: int
) -> dict[str, float]:
    """Face PSNR of reconstructions and the swap-to-source count of the current (EMA) model."""
    rec = gen.from_vectors(
        faces.identity[psnr_idx], faces.expression[psnr_idx], faces.crops[psnr_idx],
        masks=faces.masks[psnr_idx], seeds=[seed * 100_003 + int(i) for i in psnr_idx], steps=steps,
    )  # fmt: skip
    err = (rec.astype(np.float64) - faces.crops[psnr_idx]) ** 2  # (K, S, S, 3)
    m = faces.masks[psnr_idx][..., None]  # (K, S, S, 1)
    mse = float((err * m).sum() / (m.sum() * 3))
    tgt = np.array([i for _, i in pairs])
    out = gen.from_vectors(
        np.stack([faces.means[s] for s, _ in pairs]), faces.expression[tgt], faces.crops[tgt],
        masks=faces.masks[tgt], seeds=[seed * 100_003 + 50_000 + k for k in range(len(pairs))], steps=steps,
    )  # fmt: skip
    return {
        "face_psnr": 10 * math.log10(255.0**2 / mse) if mse > 0 else float("inf"),
        "swaps": len(pairs),
        "swap_to_source_count": closer_to_source(gen, faces, pairs, out),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="training time, evaluation excluded (%(default)s)")
    p.add_argument("--steps", type=int, default=0, help="train this many steps instead of --minutes (%(default)s)")
    p.add_argument("--total-steps", type=int, default=0, help="cosine LR decay length; 0: --steps, or 4000 (0)")
    p.add_argument("--eval-every", type=int, default=250, help="evaluate the EMA model every N steps (%(default)s)")
    p.add_argument("--batch", type=int, default=16, help="faces per train step (%(default)s)")
    p.add_argument("--faces-per-person", type=int, default=48, help="originals + augmentations (%(default)s)")
    p.add_argument("--expression-loss-weight", type=float, default=0.1, help="builtin FER loss (%(default)s)")
    p.add_argument("--aux-start-step", type=int, default=0, help="first step with the expression loss (%(default)s)")
    p.add_argument("--sample-steps", type=int, default=20, help="DDIM steps when evaluating (%(default)s)")
    p.add_argument("--swap-seeds", type=int, default=3, help="samples per swap pair and target face (%(default)s)")
    p.add_argument("--psnr-faces", type=int, default=32, help="training faces resampled for PSNR (%(default)s)")
    p.add_argument("--photos", default=str(DEFAULT_DEST), help="test photo folder, fetched if missing (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="model, data, batch and sampling seed (%(default)s)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (%(default)s)")
    p.add_argument("--out", default="bench/results", help="folder for photos[-smoke].txt/.json (%(default)s)")
    p.add_argument("--smoke", action="store_true", help=f"tiny settings for a test: {SMOKE}")
    a = p.parse_args(argv)
    if a.smoke:
        vars(a).update(SMOKE)
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    torch.set_num_threads(a.threads)
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    t0 = time.perf_counter()
    pack = open_pack("builtin")
    faces = build_faces(pack, fetch_photos(a.photos), a.faces_per_person, a.seed)
    counts = {p: faces.person.count(p) for p in faces.means}
    say(
        f"{len(counts)} people, {int(faces.original.sum())} photos, {len(faces.person)} training faces at {SIZE} px "
        f"({', '.join(f'{p} {n}' for p, n in counts.items())}); prepared in {time.perf_counter() - t0:.1f} s"
    )
    cfg = TrainConfig(
        batch_size=a.batch,
        total_steps=a.total_steps or a.steps or 4000,
        expression_loss_weight=a.expression_loss_weight,
        aux_start_step=a.aux_start_step,
        seed=a.seed,
    )
    model = make_model(PRESET, seed=a.seed)
    ema = EMA(model, cfg.ema_decay)
    opt, sched = make_optimizer(model, cfg)
    judges = photo_recognisers(None, expression=a.expression_loss_weight > 0) if a.expression_loss_weight > 0 else None
    gen = Generator(ema.model, encoders_for(model))  # the EMA weights move under it as training goes
    psnr_idx = np.arange(min(a.psnr_faces, len(faces.person)))
    pairs = swap_pairs(faces, a.swap_seeds)
    copy = closer_to_source(gen, faces, pairs, faces.crops[[i for _, i in pairs]])  # baseline: output = target
    say(
        f"{PRESET}, batch {a.batch}, torch threads {torch.get_num_threads()}, seed {a.seed}; losses: denoising + "
        f"expression (builtin FER, weight {a.expression_loss_weight} from step {a.aux_start_step}); no identity loss "
        "(ArcFace weights are not available offline)"
    )
    say(
        f"evaluation: EMA model, {a.sample_steps} sampling steps; PSNR on {len(psnr_idx)} training faces; "
        f"{len(pairs)} swaps (every ordered pair of people, onto each original face of the target person, "
        f"{a.swap_seeds} seed(s) each)"
    )
    say("  ".join(f"{c:>14}" for c in COLUMNS))
    rng = np.random.default_rng(a.seed + 1)
    rows: list[dict] = []
    step, train_s, mark_s, mark_step, losses = 0, 0.0, 0.0, 0, []
    while True:
        done = step >= a.steps if a.steps else train_s >= 60 * a.minutes
        if step and (done or step % a.eval_every == 0):
            ev = evaluate(gen, faces, psnr_idx, pairs, a.sample_steps, a.seed)
            row = {
                "step": step,
                "minutes": train_s / 60,
                "samples_per_s": a.batch * (step - mark_step) / max(train_s - mark_s, 1e-9),
                "loss": float(np.mean(losses)),
                **ev,
                "swap_to_source": ev["swap_to_source_count"] / ev["swaps"],
                "copy_target_count": copy,
                "copy_target": copy / len(pairs),
            }
            rows.append(row)
            say(
                f"{step:>14}  {row['minutes']:>14.2f}  {row['samples_per_s']:>14.1f}  {row['loss']:>14.4f}  "
                f"{row['face_psnr']:>14.2f}  {row['swap_to_source']:>14.3f}  {row['copy_target']:>14.3f}  "
                f"{row['swaps']:>14}"
            )
            mark_s, mark_step, losses = train_s, step, []
        if done:
            break
        idx = rng.integers(0, len(faces.person), a.batch)
        t = time.perf_counter()
        losses.append(train_step(model, ema, batch_of(faces, idx), cfg, step, opt, sched, judges)["loss"])
        train_s += time.perf_counter() - t
        step += 1

    hit = next((r for r in rows if r["swap_to_source"] >= AIM), None)
    best = max(rows, key=lambda r: r["swap_to_source"])
    if hit:
        verdict = (
            f"verdict: aim reached: swap_to_source {hit['swap_to_source']:.3f} >= {AIM} at step {hit['step']} "
            f"({hit['minutes']:.1f} min of training); copy_target baseline {copy / len(pairs):.3f}"
        )
    else:
        verdict = (
            f"verdict: aim NOT reached (swap_to_source >= {AIM}) in {step} steps ({train_s / 60:.1f} min): best "
            f"{best['swap_to_source']:.3f} at step {best['step']}; copy_target baseline {copy / len(pairs):.3f}"
        )
    say(f"total wall time {time.perf_counter() - t0:.1f} s")
    say(verdict)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "photos-smoke" if a.smoke else "photos"
    (out / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    settings = dict(vars(a))
    (out / f"{stem}.json").write_text(
        json.dumps({"settings": settings, "people": counts, "rows": rows, "verdict": verdict}, indent=1)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
