"""The 135 words on a synthetic-face model: retrieval and granularity (issue 14, item 1).

    python -m sfsr.release.evaluate_words MODEL_DIR --repeats 2 --json words.jsonl --card

Every word of the vocabulary is asked `repeats` times, each time of a different held-out face
(split "test" of sfsr.synth) whose own expression lies in another family's region, so each
request is a real change. Word reenactments are then read two ways:

- retrieval, with no network (sfsr.synth.readers): the output is read as the nearest of the
  face's exact renders with the requested word's target, with each other family's own word
  (anger, fear, ...) and with its own expression. `retrieval_rate` is the fraction read as the
  requested word; `retrieval_kept_rate` read as unchanged. The same read of the exact renders
  themselves is 1.0 by construction, so it is not reported. "Requested" is always the word's
  prototype target, whichever target the model was given (below). It is also given per family
  and per band of word intensity (low < 0.4 <= mid < 0.7 <= high).
- progress, with the synth judge: how far the reenactment moved from the face's own expression
  toward the word's prototype target (evaluate_synth.progress; 1 = all the way), its mean and the
  fraction that moved at least halfway.
- granularity, with the synth expression judge (the expression reader the model is conditioned
  through): a reenactment's family intensity is the judge's reading projected on its family's
  neutral -> apex direction (sfsr.synth.words.family_intensity). Per family, `intensity_rank_
  correlation` is Spearman's rho between the words' intensities and their reenactments' mean
  read intensity (aim >= 0.8). `subcluster_accuracy` is how often the reading is nearest the
  asked word's subcluster target at the word's intensity among all the family's subclusters,
  against chance 1 / (subclusters); surprise has one subcluster and is left out. Both are also
  given for the exact renders (the `_exact` keys): what the judge itself can tell apart.

`--targets exemplar` gives the model one of the word's exemplar faces' encodings (the one each
request's seed picks) instead of the prototype: the paper's retrieval of an expression image for
a word (sfsr.expressions.bank). Every figure is still measured against the word's prototype.

`--init inversion` starts each reenactment from the face's own DDIM inversion instead of noise
(sfsr.diffusion.sampling.invert). A row measured with another start than the card's own default
is recorded as `words_<targets>_<init>` (evaluate_synth.card_key).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace

import numpy as np
import torch
from scipy.stats import spearmanr

from sfsr.expressions.vocabulary import FAMILIES, WORDS, ExpressionWord, lookup
from sfsr.generate import INITS, Generator
from sfsr.model.training import face_region
from sfsr.release.evaluate_synth import card_key, held_out_set, progress, record_in_card
from sfsr.synth import readers as R
from sfsr.synth.dataset import expression_region
from sfsr.synth.judges import load_judges
from sfsr.synth.render import render
from sfsr.synth.words import family_intensity, word_target

AIM_RETRIEVAL = 0.8
AIM_RANK_CORRELATION = 0.8
# word intensity bands of retrieval_rate_by_intensity: a faint word's render differs from the
# other candidates in fewer pixels than a strong one's
INTENSITY_BANDS = (("low", 0.0, 0.4), ("mid", 0.4, 0.7), ("high", 0.7, 1.01))


def plan(data: dict, repeats: int) -> tuple[np.ndarray, list[ExpressionWord]]:
    """(face index per request, word per request): every word `repeats` times, each on a face
    whose expression region is another family, faces used in turn so each is asked about equally."""
    regions = np.array([expression_region(f) for f in data["factors"]])
    n = len(regions)
    faces, words = [], []
    cursor = 0
    for _ in range(repeats):
        for w in WORDS:
            for k in range(n):
                i = (cursor + k) % n
                if FAMILIES[regions[i]] != w.family:
                    break
            else:  # pragma: no cover - a test set with every face in one region
                raise ValueError(f"no held-out face outside family {w.family!r}; use more faces")
            faces.append(i)
            words.append(w)
            cursor = i + 1
    return np.array(faces), words


def subcluster_targets(word: ExpressionWord) -> tuple[list[str], np.ndarray]:
    """The family's subclusters and their targets at the word's intensity, nuance 0: (names, (S, F))."""
    names = sorted({w.subcluster for w in WORDS if w.family == word.family})
    vecs = [word_target(ExpressionWord(word.word, word.family, s, word.intensity)) for s in names]
    return names, np.stack(vecs)


def granularity(readings: np.ndarray, words: list[ExpressionWord]) -> dict:
    """Per-family rank correlation of word intensity with read intensity, and subcluster accuracy."""
    out: dict = {"intensity_rank_correlation": {}, "subcluster_accuracy": {}, "subcluster_chance": {}}
    for fam in FAMILIES:
        idx = [i for i, w in enumerate(words) if w.family == fam]
        by_word: dict[str, list[float]] = {}
        for i in idx:
            by_word.setdefault(words[i].word, []).append(float(family_intensity(fam, readings[i])))
        asked = [lookup(w).intensity for w in by_word]
        read = [float(np.mean(v)) for v in by_word.values()]
        rho = spearmanr(asked, read).statistic if len(set(asked)) > 1 else float("nan")
        out["intensity_rank_correlation"][fam] = round(float(rho), 4)
        names, _ = subcluster_targets(words[idx[0]])
        if len(names) < 2:
            continue
        hits = []
        for i in idx:
            names, vecs = subcluster_targets(words[i])
            nearest = names[int(np.argmin(np.linalg.norm(vecs - readings[i], axis=1)))]
            hits.append(nearest == words[i].subcluster)
        out["subcluster_accuracy"][fam] = round(float(np.mean(hits)), 4)
        out["subcluster_chance"][fam] = round(1.0 / len(names), 4)
    return out


def evaluate(gen: Generator, data: dict, repeats: int, targets: str = "prototype", **sampling) -> dict:
    """All figures for one generator (module docstring)."""
    faces, words = plan(data, repeats)
    img = data["images"][faces]
    masks = data["masks"][faces]
    samples = [data["samples"][i] for i in faces]
    seeds = list(range(5000, 5000 + len(faces)))
    asked = np.stack([gen.encoders.targets.target(w.word) for w in words])  # the words' prototype targets
    if targets == "exemplar":
        vectors = np.stack([gen.exemplar_target(w.word, seed=s)[0] for w, s in zip(words, seeds)])
    else:
        vectors = asked
    t0 = time.time()
    out = gen.generate(img, expression=list(vectors), background_images=img, masks=masks, seeds=seeds, **sampling)
    seconds = time.time() - t0

    region = face_region(torch.from_numpy(masks[:, None]).float(), gen.model.config.mask_dilate)[:, 0].numpy() > 0
    fam_vecs = {f: word_target(f) for f in FAMILIES}
    cands = np.stack(
        [
            np.stack([asked[k]] + [fam_vecs[f] for f in FAMILIES if f != w.family] + [samples[k].expression_array])
            for k, w in enumerate(words)
        ]
    )  # (B, 7, F): asked, the 5 other families, own
    read = R.nearest(out, R.expression_candidates(samples, cands, img, region), region)

    judges = load_judges(32)
    exact = np.stack(
        [
            np.where(region[k][..., None], render(replace(s, expression=tuple(map(float, asked[k]))), 32)[0], img[k])
            for k, s in enumerate(samples)
        ]
    )
    e_out = judges.expression_np(out)
    p = progress(e_out, judges.expression_np(img), asked)
    model_read = granularity(e_out, words)
    exact_read = granularity(judges.expression_np(exact), words)
    per_family = {
        f: round(float(np.mean([read[k] == 0 for k, w in enumerate(words) if w.family == f])), 4) for f in FAMILIES
    }
    bands = {name: (lo, hi) for name, lo, hi in INTENSITY_BANDS}
    per_band = {
        name: round(float(np.mean([read[k] == 0 for k, w in enumerate(words) if lo <= w.intensity < hi])), 4)
        for name, (lo, hi) in bands.items()
        if any(lo <= w.intensity < hi for w in words)
    }
    return {
        "requests": len(words),
        "faces": int(len(np.unique(faces))),
        "targets": targets,
        "retrieval_rate": round(float(np.mean(read == 0)), 4),
        "retrieval_kept_rate": round(float(np.mean(read == cands.shape[1] - 1)), 4),
        "retrieval_rate_per_family": per_family,
        "retrieval_rate_by_intensity": per_band,
        "progress_mean": round(float(np.mean(p)), 4),
        "halfway_rate": round(float(np.mean(p >= 0.5)), 4),
        **model_read,
        **{f"{k}_exact": v for k, v in exact_read.items() if k != "subcluster_chance"},
        "generate_seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("models", nargs="+", help="model folders (save_pretrained) to evaluate")
    p.add_argument("--repeats", type=int, default=2, help="how many times each of the 135 words is asked")
    p.add_argument("--n", type=int, default=90, help="held-out faces the requests are spread over")
    p.add_argument("--seed", type=int, default=1, help="seed of the held-out test set")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--guidance-identity", type=float, default=None, help="identity guidance (default: model card)")
    p.add_argument("--guidance-expression", type=float, default=None, help="expression guidance (default: model card)")
    p.add_argument(
        "--targets", choices=["prototype", "exemplar"], default="prototype", help="where word targets come from"
    )
    p.add_argument(
        "--init",
        choices=list(INITS),
        default=None,
        help="what sampling starts from: fresh noise, or each face's own DDIM inversion (default: model card)",
    )
    p.add_argument("--json", default="", help="append one JSON line per model here")
    p.add_argument(
        "--card", action="store_true", help="record the row in each model's sfsr_card.json (metrics.words_<targets>)"
    )
    a = p.parse_args(argv)
    data = held_out_set(a.n, a.seed)
    sampling: dict = {"steps": a.steps}
    for key in ("guidance_identity", "guidance_expression", "init"):
        if getattr(a, key) is not None:
            sampling[key] = getattr(a, key)
    measured_with = shlex.join(
        ["python", "-m", "sfsr.release.evaluate_words", *(sys.argv[1:] if argv is None else argv)]
    )
    for path in a.models:
        gen = Generator.from_pretrained(path)
        row = {"model": path, "measured_with": measured_with, **{**gen.sampling, **sampling}}
        row.update(evaluate(gen, data, a.repeats, a.targets, **sampling))
        print(json.dumps(row))
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        if a.card:
            record_in_card(path, card_key(f"words_{a.targets}", row, gen.sampling), row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
