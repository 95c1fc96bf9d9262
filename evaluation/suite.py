"""All metrics of one evaluation over batches of pairs: batch -> statistics, merge, scores.

This is what a Ray actor calls on each batch (jobs/evaluate.py) and what tests call directly.
A `PairBatch` holds the aligned crops of each pair's roles (identity, background, driver; see
evaluation/protocol.py) and the outputs of every method being scored ("model" and whatever else);
the task's trivial baselines are added here, so every number has its floor next to it.

`batch_statistics` returns an `EvalStats` of mergeable parts only (moments, bottom-k KID
samples, per-pair score statistics), so `merge_eval_stats` over any split of the pairs gives the
same scores. The real set for FD/KID is the background face of each pair (the target of a swap):
the distribution the outputs should match.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evaluation import expression as ex
from evaluation import identity as ident
from evaluation import pose as po
from evaluation import synth as sy
from evaluation.features import FeatureExtractor, in_fixed_chunks
from evaluation.fid import FeatureMoments, empty_moments, feature_moments, frechet_distance, merge_moments
from evaluation.kid import DEFAULT_CAPACITY, KIDSample, kernel_inception_distance, kid_sample, merge_samples
from evaluation.protocol import baseline_outputs
from evaluation.stats import Bins

ENCODE_CHUNK = 8  # crops per face-encoder call, whatever the batch size


@dataclass(frozen=True)
class EvalModels:
    """The networks an evaluation uses; any of them may be None to skip its metrics."""

    extractor: FeatureExtractor | None = None  # FD/FID + KID features
    pack: object | None = None  # sfsr.faces.FacePack: identity + expression (+ pose) on crops
    judges: object | None = None  # sfsr.synth.judges.Judges, for synthetic data
    gallery: ident.Gallery | None = None  # identity vectors of all sources, for retrieval
    pose: bool = True  # pose needs a detector pass per crop (slow with the builtin HOG)
    kid_capacity: int = DEFAULT_CAPACITY
    expression_bins: Bins = Bins(0.0, 2.0, 40)


@dataclass
class PairBatch:
    task: str
    pair_ids: list[str]
    identity_labels: list[str]  # the person of each identity face (gallery label)
    identity: np.ndarray  # (B, S, S, 3) uint8
    identity_mask: np.ndarray  # (B, S, S), nonzero on the face
    background: np.ndarray  # (B, S, S, 3) uint8
    background_mask: np.ndarray  # (B, S, S)
    driver: np.ndarray | None = None  # (B, S, S, 3) uint8; None when every pair uses a word
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (B, S, S, 3) uint8
    output_ok: dict[str, np.ndarray] = field(default_factory=dict)  # method -> (B,) bool, default all
    expression_reference: np.ndarray | None = None  # (B, De) pack-space targets for word pairs
    synth_identity: np.ndarray | None = None  # (B,) int identity ids of the identity faces
    synth_expression: np.ndarray | None = None  # (B, F) reference expression factors
    render_plans: list[dict] | None = None  # per pair, evaluation.synth.render_plan (synthetic faces)


@dataclass(frozen=True)
class MethodStats:
    n: int  # pairs
    failed: int  # pairs without a usable output (counted, excluded from FD/KID, NaN elsewhere)
    fd: FeatureMoments | None = None
    kid: KIDSample | None = None
    identity: ident.IdentityStats | None = None
    expression: ex.ExpressionStats | None = None
    pose: po.PoseStats | None = None
    synth: sy.SynthStats | None = None
    render: sy.RenderStats | None = None


@dataclass(frozen=True)
class EvalStats:
    task: str
    real_fd: FeatureMoments | None
    real_kid: KIDSample | None
    methods: dict[str, MethodStats]


def _nan_rows(values: np.ndarray, ok: np.ndarray) -> np.ndarray:
    out = np.asarray(values, np.float64).copy()
    out[~ok] = np.nan
    return out


def _encode(pack, images: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: ANN001
    from sfsr.faces.analyze import encode_crops

    di, de = pack.identity.output.dim, pack.expression.output.dim
    idv, exv = np.full((len(images), di), np.nan), np.full((len(images), de), np.nan)
    if ok.any():

        def both(x: np.ndarray) -> np.ndarray:
            a, b = encode_crops(pack, x)
            return np.concatenate([a, b], axis=1)  # (chunk, di + de)

        # fixed chunks: an encoder's result must not depend on how pairs were batched
        res = in_fixed_chunks(both, list(images[ok]), ENCODE_CHUNK, di + de)
        idv[ok], exv[ok] = res[:, :di], res[:, di:]
    return idv, exv


def batch_statistics(batch: PairBatch, models: EvalModels) -> EvalStats:
    """Every metric's statistics for one batch of pairs, for the outputs and the baselines."""
    b = len(batch.pair_ids)
    keys = np.asarray(batch.pair_ids)
    methods = dict(batch.outputs)
    methods.update(baseline_outputs(batch.task, batch.identity, batch.identity_mask, batch.background, batch.driver))
    all_ok = np.ones(b, bool)

    real_fd = real_kid = None
    ex_model = models.extractor
    if ex_model is not None:
        feats = ex_model(batch.background)
        real_fd = feature_moments(feats, ex_model.info.name)
        real_kid = kid_sample(feats, keys, models.kid_capacity, ex_model.info.name)

    pack = models.pack
    src_id = ref_expr = ref_pose = None
    if pack is not None:
        src_id, _ = _encode(pack, batch.identity, all_ok)
        if batch.expression_reference is not None:
            ref_expr = np.asarray(batch.expression_reference, np.float64)
        elif batch.driver is not None:
            _, ref_expr = _encode(pack, batch.driver, all_ok)
        if models.pose:
            ref_pose = po.crop_poses(pack, batch.background)

    out: dict[str, MethodStats] = {}
    for name, images in methods.items():
        ok = np.asarray(batch.output_ok.get(name, all_ok), bool)
        st: dict = {}
        if ex_model is not None:
            dim = ex_model.info.dim
            feats = ex_model(images[ok]) if ok.any() else np.zeros((0, dim), np.float32)
            st["fd"] = (
                feature_moments(feats, ex_model.info.name) if ok.any() else empty_moments(dim, ex_model.info.name)
            )
            st["kid"] = kid_sample(feats, keys[ok], models.kid_capacity, ex_model.info.name)
        if pack is not None:
            out_id, out_expr = _encode(pack, images, ok)
            st["identity"] = ident.identity_statistics(
                out_id, src_id, batch.identity_labels, models.gallery, pack.identity.name
            )
            if ref_expr is not None:
                st["expression"] = ex.expression_statistics(
                    out_expr, ref_expr, pack.expression.name, models.expression_bins
                )
            if ref_pose is not None:
                out_pose = po.crop_poses(pack, images)
                st["pose"] = po.pose_statistics(_nan_rows(out_pose, ok), ref_pose, pack.pose.name)
        if models.judges is not None and batch.synth_identity is not None and batch.synth_expression is not None:
            st["synth"] = sy.judge_statistics(
                models.judges,
                images,
                batch.synth_identity,
                batch.synth_expression,
                batch.background,
                batch.background_mask,
                ok,
            )
        if batch.render_plans is not None:
            st["render"] = sy.render_statistics(images, batch.render_plans, batch.background_mask, ok)
        out[name] = MethodStats(n=b, failed=int((~ok).sum()), **st)
    return EvalStats(batch.task, real_fd, real_kid, out)


def _merge_optional(fn, values: list):  # noqa: ANN001, ANN202
    present = [v for v in values if v is not None]
    if not present:
        return None
    if len(present) != len(values):
        raise ValueError(
            "merge_eval_stats: a metric is present in some parts and missing in others; "
            "compute every shard with the same EvalModels"
        )
    return fn(*present)


def merge_eval_stats(*parts: EvalStats) -> EvalStats:
    if not parts:
        raise ValueError("merge_eval_stats: nothing to merge")
    tasks = {p.task for p in parts}
    if len(tasks) != 1:
        raise ValueError(f"merge_eval_stats: parts of different tasks {sorted(tasks)}")
    names = sorted({m for p in parts for m in p.methods})
    methods = {}
    for name in names:
        ms = [p.methods[name] for p in parts if name in p.methods]
        methods[name] = MethodStats(
            n=sum(m.n for m in ms),
            failed=sum(m.failed for m in ms),
            fd=_merge_optional(merge_moments, [m.fd for m in ms]),
            kid=_merge_optional(merge_samples, [m.kid for m in ms]),
            identity=_merge_optional(ident.merge_identity, [m.identity for m in ms]),
            expression=_merge_optional(ex.merge_expression, [m.expression for m in ms]),
            pose=_merge_optional(po.merge_pose, [m.pose for m in ms]),
            synth=_merge_optional(sy.merge_synth, [m.synth for m in ms]),
            render=_merge_optional(sy.merge_render, [m.render for m in ms]),
        )
    return EvalStats(
        parts[0].task,
        _merge_optional(merge_moments, [p.real_fd for p in parts]),
        _merge_optional(merge_samples, [p.real_kid for p in parts]),
        methods,
    )


@dataclass(frozen=True)
class KIDConfig:
    subsets: int = 100
    subset_size: int = 1000  # clamped to the smallest sample, and the value used is reported
    seed: int = 0


def eval_scores(stats: EvalStats, feature_label: str = "", kid: KIDConfig = KIDConfig()) -> dict:
    """JSON-ready scores of every method (model outputs and baselines)."""
    out = {}
    for name, m in stats.methods.items():
        s: dict = {"pairs": m.n, "failed": m.failed}
        if m.fd is not None and stats.real_fd is not None:
            s["fd"] = {
                "name": feature_label,
                "value": frechet_distance(stats.real_fd, m.fd) if m.fd.n >= 2 else None,
                "n_real": stats.real_fd.n,
                "n_fake": m.fd.n,
            }
        if m.kid is not None and stats.real_kid is not None:
            size = min(kid.subset_size, m.kid.size, stats.real_kid.size)
            if size >= 2:
                k = kernel_inception_distance(stats.real_kid, m.kid, kid.subsets, size, seed=kid.seed)
                s["kid"] = {
                    "mean": k.mean,
                    "std": k.std,
                    "subsets": k.subsets,
                    "subset_size": k.subset_size,
                    "sample_real": k.n_real,
                    "sample_fake": k.n_fake,
                }
        if m.identity is not None:
            s["identity"] = ident.identity_score(m.identity)
        if m.expression is not None:
            s["expression"] = ex.expression_score(m.expression)
        if m.pose is not None:
            s["pose"] = po.pose_score(m.pose)
        if m.synth is not None:
            s["synth"] = sy.synth_score(m.synth)
        if m.render is not None:
            s["render"] = sy.render_score(m.render)
        out[name] = s
    return out
