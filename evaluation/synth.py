"""Metrics on synthetic faces, where every factor is known (sfsr/synth).

- identity accuracy: the identity judge's predicted identity id of the output equals the source's;
- expression factor error: mean absolute error between the expression judge's reading of the
  output and the reference factors (the driver's, or the target's for swapping), overall and per
  factor (EXPRESSION_FACTORS order);
- background PSNR: PSNR between output and target over the pixels outside the target's face
  mask, i.e. what a swap must leave untouched. A perfect copy has infinite PSNR; values are
  capped at PSNR_CAP_DB so means stay finite.

The judges are inputs (sfsr.synth.load_judges); features are the judges' outputs on the batch.

The judges were trained with, and are used by, the models' training losses, so they can flatter
a model. The render readers use no network (sfsr.synth.readers): the renderer draws the exact
face each pair asks for and a few wrong ones (another identity; the face left as it was; another
expression family), and an output counts as a hit when the asked-for render is the nearest
inside the face mask:
- render identity accuracy: candidates are the background face drawn with the identity face's
  id, with its own id and with others of the evaluated set (same expression, pose, background);
- render expression accuracy: candidates are the identity the output was read as, drawn with the reference
  expression (the driver's, or the word's target), with the background face's own, and with the
  apex target of each other family.
`render_plan` chooses the candidates of each pair (driver side, pure); `render_statistics` reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.stats import Bins, ScalarStats, merge_scalar, scalar_stats
from sfsr.synth.factors import EXPRESSION_FACTORS, FAMILIES

PSNR_CAP_DB = 100.0
JUDGE_CHUNK = 8  # images per judge call, whatever the batch (see features.in_fixed_chunks)
HIT_BINS = Bins(0.0, 1.0 + 1e-9, 2)
MAE_BINS = Bins(0.0, 1.0, 40)
PSNR_BINS = Bins(0.0, PSNR_CAP_DB + 1e-9, 50)


def background_psnr(output: np.ndarray, target: np.ndarray, face_mask: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 output and target, (B, H, W) face mask (nonzero = face) -> (B,) dB."""
    out, tgt = np.asarray(output, np.float64), np.asarray(target, np.float64)
    if out.shape != tgt.shape or out.ndim != 4:
        raise ValueError(f"background_psnr: output {out.shape} and target {tgt.shape} must be equal (B, H, W, 3)")
    bg = np.asarray(face_mask).reshape(out.shape[:3]) == 0  # (B, H, W)
    count = bg.sum(axis=(1, 2)) * out.shape[3]
    se = (np.square(out - tgt) * bg[..., None]).sum(axis=(1, 2, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        mse = se / count
        psnr = 10.0 * np.log10(255.0**2 / mse)
    psnr = np.where(count == 0, np.nan, psnr)  # no background at all: no score
    return np.minimum(psnr, PSNR_CAP_DB)


@dataclass(frozen=True)
class SynthStats:
    judges: str
    identity_hit: ScalarStats
    expression_mae: ScalarStats
    factor_mae: tuple[ScalarStats, ...]  # one per EXPRESSION_FACTORS entry
    background_psnr: ScalarStats


def synth_statistics(
    identity_hit: np.ndarray,
    predicted_expression: np.ndarray,
    reference_expression: np.ndarray,
    psnr: np.ndarray,
    judges: str,
) -> SynthStats:
    """Per-pair synthetic scores of a batch: identity hits (1/0, NaN = no output), the judge's
    expression reading (B, F) against the reference (B, F), background PSNRs (B,)."""
    pe = np.asarray(predicted_expression, np.float64)
    re = np.asarray(reference_expression, np.float64)
    if pe.shape != re.shape or pe.ndim != 2 or pe.shape[1] != len(EXPRESSION_FACTORS):
        raise ValueError(
            f"synth_statistics: expressions must be (B, {len(EXPRESSION_FACTORS)}), got {pe.shape} and {re.shape}"
        )
    err = np.abs(pe - re)  # (B, F)
    return SynthStats(
        judges,
        scalar_stats(identity_hit, HIT_BINS),
        scalar_stats(err.mean(axis=1), MAE_BINS),
        tuple(scalar_stats(err[:, f], MAE_BINS) for f in range(err.shape[1])),
        scalar_stats(psnr, PSNR_BINS),
    )


def judge_statistics(
    judges,
    output: np.ndarray,
    source_identity: np.ndarray,
    reference_expression: np.ndarray,  # noqa: ANN001
    target: np.ndarray,
    target_mask: np.ndarray,
    ok: np.ndarray | None = None,
    name: str = "synth-judges",
) -> SynthStats:
    """Run the judges (sfsr.synth.judges.Judges) on uint8 outputs (B, H, W, 3) and score them;
    rows where `ok` is False (no usable output) count as missing."""
    from evaluation.features import in_fixed_chunks

    ok = np.ones(len(output), bool) if ok is None else np.asarray(ok, bool)
    imgs = list(np.asarray(output))
    # fixed chunks: the judges' float32 convolutions must not see the caller's batch size
    pred = in_fixed_chunks(lambda x: judges.predict_identity_np(x)[:, None], imgs, JUDGE_CHUNK, 1)[:, 0]
    expr = in_fixed_chunks(judges.expression_np, imgs, JUDGE_CHUNK, len(EXPRESSION_FACTORS))
    hit = np.where(ok, (pred == np.asarray(source_identity)).astype(np.float64), np.nan)
    pe = np.where(ok[:, None], expr, np.nan)
    psnr = np.where(ok, background_psnr(output, target, target_mask), np.nan)
    return synth_statistics(hit, pe, reference_expression, psnr, name)


RENDER_CANDIDATES = 8  # identity candidates per pair: the asked-for id, the background's, 6 others


@dataclass(frozen=True)
class RenderStats:
    identity_hit: ScalarStats
    expression_hit: ScalarStats


def render_plan(
    index: int,
    identity_id: int,
    background: dict,
    reference: list[float],
    pool: list[int],
    family_targets: dict[str, list[float]],
) -> dict:
    """The candidates one pair is read against (see the module docstring), as plain data for the
    actors: background is the background face's synth params (anything
    sfsr.synth.factors.sample_from_params reads), reference the expression asked for, pool the synth
    identity ids of the evaluated faces (others are taken from it by the pair index)."""
    from dataclasses import asdict

    from sfsr.synth.dataset import expression_region
    from sfsr.synth.factors import sample_from_params

    bg = sample_from_params(background)
    background = {
        "identity_id": bg.identity_id,
        "expression": list(bg.expression),
        "pose": asdict(bg.pose),
        "background_seed": bg.background_seed,
    }
    ids = [int(identity_id)] + ([bg.identity_id] if bg.identity_id != identity_id else [])
    ring = sorted(set(int(p) for p in pool))
    start = index % len(ring) if ring else 0
    ids += [p for p in ring[start:] + ring[:start] if p not in ids][: RENDER_CANDIDATES - len(ids)]
    ref = np.asarray(reference, np.float32)
    exprs = [ref.tolist()]
    own = np.asarray(background["expression"], np.float32)
    if not np.allclose(own, ref, atol=1e-4):
        exprs.append(own.tolist())
    asked = FAMILIES[expression_region(ref)]
    exprs += [list(map(float, v)) for f, v in family_targets.items() if f != asked]
    return {"synth_background": background, "render_identities": ids, "render_expressions": exprs}


def render_statistics(
    output: np.ndarray, plans: list[dict], background_mask: np.ndarray, ok: np.ndarray | None = None
) -> RenderStats:
    """Read each output (B, S, S, 3) uint8 against its pair's candidates (render_plan) inside the
    background face's mask (B, S, S); rows where ok is False count as missing. Identity candidates
    keep the background's expression; expression candidates take the identity the output was read as."""
    from dataclasses import replace

    from sfsr.synth.factors import sample_from_params
    from sfsr.synth.readers import read_one

    ok = np.ones(len(output), bool) if ok is None else np.asarray(ok, bool)
    id_hit = np.full(len(output), np.nan)
    ex_hit = np.full(len(output), np.nan)
    for i, plan in enumerate(plans):
        if not ok[i]:
            continue
        base = sample_from_params(plan["synth_background"])
        region = np.asarray(background_mask[i]) > 0
        # the output outside the face is the output's own: only the face region is compared
        ids = [replace(base, identity_id=j) for j in plan["render_identities"]]
        k = read_one(output[i], ids, output[i], region)
        id_hit[i] = float(k == 0)
        # expression is read on the identity the output was read as, so a wrong identity is one miss, not two
        seen = ids[k]
        exprs = [replace(seen, expression=tuple(float(v) for v in e)) for e in plan["render_expressions"]]
        ex_hit[i] = float(read_one(output[i], exprs, output[i], region) == 0)
    return RenderStats(scalar_stats(id_hit, HIT_BINS), scalar_stats(ex_hit, HIT_BINS))


def merge_render(*parts: RenderStats) -> RenderStats:
    return RenderStats(merge_scalar(*[p.identity_hit for p in parts]), merge_scalar(*[p.expression_hit for p in parts]))


def render_score(stats: RenderStats) -> dict:
    return {
        "reader": "nearest exact render (sfsr.synth.readers, no network)",
        "identity_accuracy": stats.identity_hit.mean if stats.identity_hit.n else None,
        "expression_accuracy": stats.expression_hit.mean if stats.expression_hit.n else None,
    }


def merge_synth(*parts: SynthStats) -> SynthStats:
    names = {p.judges for p in parts}
    if len(names) != 1:
        raise ValueError(f"merge_synth: parts come from different judges {sorted(names)}")
    return SynthStats(
        parts[0].judges,
        merge_scalar(*[p.identity_hit for p in parts]),
        merge_scalar(*[p.expression_mae for p in parts]),
        tuple(merge_scalar(*[p.factor_mae[f] for p in parts]) for f in range(len(EXPRESSION_FACTORS))),
        merge_scalar(*[p.background_psnr for p in parts]),
    )


def synth_score(stats: SynthStats) -> dict:
    return {
        "judges": stats.judges,
        "identity_accuracy": stats.identity_hit.mean if stats.identity_hit.n else None,
        "expression_mae": stats.expression_mae.summary(),
        "factor_mae": {name: (s.mean if s.n else None) for name, s in zip(EXPRESSION_FACTORS, stats.factor_mae)},
        "background_psnr_db": stats.background_psnr.summary(),
    }


@dataclass(frozen=True)
class _JudgeEncoder:
    """One judge as a face-pack Encoder (sfsr.faces.base.Encoder): uint8 crops -> (B, D)."""

    name: str
    version: str
    input_size: int
    output: object  # sfsr.faces.base.OutputSpec
    fn: object

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        from evaluation.features import in_fixed_chunks

        return in_fixed_chunks(
            lambda x: np.asarray(self.fn(x), np.float32),
            list(crops),
            JUDGE_CHUNK,  # type: ignore[operator]
            self.output.dim,
        )  # type: ignore[attr-defined]


@dataclass(frozen=True)
class JudgeEncoders:
    """The judges in the shape of a FacePack's encoders, so the identity and expression metrics
    can use them as their recogniser on synthetic faces (there is no detector: no pose)."""

    identity: _JudgeEncoder
    expression: _JudgeEncoder


def judge_encoders(judges) -> JudgeEncoders:  # noqa: ANN001
    """Named as the face table and the models name them (synth-judge-identity-32px, ...), so the
    report can tell when a model was trained against the recogniser that scores it."""
    from sfsr.faces.base import OutputSpec

    size = int(judges.size)
    return JudgeEncoders(
        _JudgeEncoder(
            f"synth-judge-identity-{size}px",
            "1",
            size,
            OutputSpec(judges.cfg.embed_dim, "identity judge embedding (unit norm)"),
            judges.identity_embedding_np,
        ),
        _JudgeEncoder(
            f"synth-judge-factors-{size}px",
            "1",
            size,
            OutputSpec(len(EXPRESSION_FACTORS), "expression factors", EXPRESSION_FACTORS),
            judges.expression_np,
        ),
    )
