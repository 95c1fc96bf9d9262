"""Train DiffSFSR on a face table: `ray job submit -- python -m jobs.train --table T --preset P`.

Ray Train (V2) TorchTrainer over the face table through Ray Data: each worker reads its shard
with get_dataset_shard, DDP over gloo on CPUs (NCCL on GPUs, mixed precision there), and every
--checkpoint-every steps rank 0 writes a checkpoint (model, EMA, optimiser, LR schedule, step and
data position) that Ray Train persists to --storage (a local folder or s3://). A lost worker
restarts the group from the last checkpoint (FailureConfig); submitting again with the same
--name resumes the step count. Loss, samples/s and sample grids are reported as it goes.

The training maths is sfsr.model.training (plain PyTorch); this file is only the Ray glue.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import ray
import ray.train
import ray.train.torch
import torch

from jobs._quiet import quiet_ray_data
from sfsr.cli_settings import parse_settings, setting, settings_parser
from sfsr.io import storage
from sfsr.model import checkpoint
from sfsr.model.presets import SYNTH_IDENTITY_ENCODER, check_vae
from sfsr.model.training import TrainConfig
from sfsr.progress import VERBOSE_HELP, Counter, verbose_requested
from sfsr.provenance import git_commit


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """The job's settings, each declared once: the command line is derived from these fields
    (sfsr.cli_settings) and the resolved values go into the exported model's run card."""

    table: str = setting(
        "face table (folder or s3:// prefix); --smoke-test makes one", required=True, unless="--smoke-test"
    )
    storage: str = setting("where runs and checkpoints go (local or s3://)", "runs", env="SFSR_STORAGE")
    name: str | None = setting("run name; submitting the same name again resumes it (default: preset name)", None)
    preset: str = setting("model size preset: tiny, cpu-demo, photo64, base, latent256, sd-init", "cpu-demo")
    init_from: str | None = setting("start from this model folder (e.g. the committed cpu-demo model)", None)
    vae: str | None = setting(
        "pretrained AutoencoderKL of a latent preset (latent256 needs one, base's is random without): a diffusers "
        "AutoencoderKL folder or a Stable Diffusion folder with vae/, local or s3://",
        None,
    )
    steps: int = setting("total optimiser steps (counting resumed ones)", 2000)
    batch_size: int = setting("per-worker batch size", 32)
    lr: float | None = setting("learning rate (default: the preset's)", None)
    warmup_steps: int | None = setting("learning-rate warm-up steps (default: TrainConfig's)", None)
    ema_decay: float | None = setting(
        "EMA decay of the exported weights (default: TrainConfig's); lower it for short fine-tunes", None
    )
    identity_loss_weight: float = setting(
        "identity loss on the recovered x0, read by the synth judges on synthetic tables and by ArcFace "
        "(--identity-recogniser) on photos",
        0.0,
    )
    identity_recogniser: str | None = setting(
        "ArcFace weights that read recovered photos for the identity loss: a torch IResNet state dict "
        "(.safetensors, or .pt/.pth read weights-only; `sfsr packs arcface` converts insightface's ONNX), local or s3://",
        None,
    )
    expression_loss_weight: float = setting(
        "expression loss on the recovered x0, read by the synth judges on synthetic tables and by the builtin "
        "pack's FER2013 network on photos",
        0.0,
    )
    aux_start_step: int = setting(
        "first step of the identity / expression losses (the recovered faces are noise before the model learns)", 0
    )
    aux_swap: float = setting(
        "fraction of the recovery-loss samples trained as swaps (another sample's identity; "
        "needs --identity-loss-weight)",
        0.0,
    )
    num_workers: int = setting("Ray Train workers (DDP ranks)", 1)
    use_gpu: bool = setting("one GPU per worker, NCCL, bf16 autocast", False)
    checkpoint_every: int = setting("steps between checkpoints", 200)
    sample_every: int = setting("steps between sample grids (saved in the checkpoint)", 500)
    keep_checkpoints: int = setting("checkpoints kept", 3)
    max_failures: int = setting("worker failures to recover from", 3)
    seed: int = setting("seed for shuffling and initialisation", 0)
    split: str = setting("table split to train on (train, test, all)", "train")
    verbose: bool = setting(VERBOSE_HELP, False)


def _build(job: JobConfig, train: dict, model_args: dict):
    """Model, EMA, optimiser, schedule and judges, freshly initialised (rank-identical)."""
    from sfsr.model import training as T
    from sfsr.model.diffsfsr import DiffSFSR

    tcfg = T.TrainConfig(**train)
    if job.init_from:
        from sfsr.io.cache import local_folder

        model = DiffSFSR.from_pretrained(str(local_folder(job.init_from)))  # a folder or s3:// prefix
    else:
        model = T.make_model(job.preset, seed=job.seed, vae_path=job.vae, **model_args)
    ema = T.EMA(model, tcfg.ema_decay)
    opt, sched = T.make_optimizer(model, tcfg)
    return tcfg, model, ema, opt, sched, loss_recognisers(job, tcfg, model_args["identity_encoder"])


def loss_recognisers(job: JobConfig, tcfg: TrainConfig, identity_encoder: str):
    """What reads recovered faces for the identity / expression losses (None without them): the
    synth judges on a synthetic table, else ArcFace (--identity-recogniser) and the builtin FER
    network (sfsr.model.recognisers)."""
    if tcfg.identity_loss_weight <= 0 and tcfg.expression_loss_weight <= 0:
        return None
    if identity_encoder == SYNTH_IDENTITY_ENCODER:
        from sfsr.synth.judges import load_judges

        return load_judges(32)
    from sfsr.model.recognisers import photo_recognisers

    weights = None
    if tcfg.identity_loss_weight > 0:
        weights = job.identity_recogniser
        if storage.is_s3(weights):  # a local copy, named like the original (the suffix picks the reader)
            local = Path(tempfile.mkdtemp(prefix="sfsr-arcface-")) / weights.rsplit("/", 1)[-1]
            local.write_bytes(storage.read_bytes(weights))
            weights = str(local)
    return photo_recognisers(weights, expression=tcfg.expression_loss_weight > 0)


def train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    from sfsr.model import training as T

    job = JobConfig(**config["job"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    tcfg, model, ema, opt, sched, judges = _build(job, config["train"], config["model_args"])
    means = {k: np.asarray(v, np.float32) for k, v in config["identity_means"].items()}

    step, epoch, batch_in_epoch, seconds_before = 0, 0, 0, 0.0
    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state, pos = checkpoint.read(d)
            step = T.load_training_state(state, model, ema, opt, sched)
            epoch, batch_in_epoch = pos["epoch"], pos["batch_in_epoch"]
            seconds_before = float(pos.get("train_seconds", 0.0))  # training time of earlier attempts
        print(
            f"[rank {rank}] resumed from a checkpoint at step {step} (epoch {epoch}, batch {batch_in_epoch}, "
            f"{seconds_before:.1f} s of training so far)",
            flush=True,
        )
    model.to(device)
    ema.model.to(device)
    if judges is not None:
        judges.to(device)
    ddp = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else None

    shard = ray.train.get_dataset_shard("train")
    t_last, n_last = time.monotonic(), 0
    t_start = t_last
    # rank 0 counts the steps (a line every 15 s in the job's log); the others stay quiet
    counter = Counter("train", "step", job.steps, start=step) if rank == 0 else None
    while step < job.steps:
        for i, rows in enumerate(shard.iter_batches(batch_size=job.batch_size, batch_format="pyarrow", drop_last=True)):
            if i < batch_in_epoch:  # the data position of a resumed run: skip what it trained on
                continue
            batch = T.batch_from_table_rows(rows, model.config.image_size, identity_means=means, device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                metrics = T.train_step(model, ema, batch, tcfg, step, opt, sched, judges, ddp_model=ddp)
            step, batch_in_epoch = step + 1, i + 1
            n_last += rows.num_rows * world
            if counter is not None:
                counter.update()
            done = step >= job.steps
            if step % job.checkpoint_every == 0 or done:
                now = time.monotonic()
                train_seconds = round(seconds_before + now - t_start, 1)  # up to this checkpoint, over resumes
                metrics |= {
                    "step": step,
                    "epoch": epoch,
                    "samples_per_s": n_last / max(now - t_last, 1e-9),
                    "train_seconds": train_seconds,
                }
                t_last, n_last = now, 0
                state = T.training_state(model, ema, opt, sched, step)
                position = {"epoch": epoch, "batch_in_epoch": batch_in_epoch, "train_seconds": train_seconds}
                _report(
                    state,
                    position,
                    metrics,
                    rank,
                    ema.model,
                    config["preview"],
                    sample=step % job.sample_every == 0 or done,
                )
            if done:
                if counter is not None:
                    counter.close()
                return
        epoch, batch_in_epoch = epoch + 1, 0


def _report(state: dict, position: dict, metrics: dict, rank: int, ema_model, preview: dict, *, sample: bool) -> None:
    if rank != 0:  # every worker reports; only rank 0 carries the checkpoint
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory(prefix="sfsr-ckpt-") as d:
        checkpoint.write(d, state, position, metrics, ema_model)
        if sample:
            from jobs._train_samples import save_sample_grid

            save_sample_grid(ema_model, preview, Path(d) / checkpoint.sample_grid_name(metrics["step"]))
        print(
            f"step {metrics['step']:>6}  "
            + "  ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float)),
            flush=True,
        )
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def make_dataset(job: JobConfig) -> ray.data.Dataset:
    fs, path = storage.arrow_filesystem(job.table)
    from ray.data.expressions import col

    ds = ray.data.read_parquet(path, filesystem=fs).select_columns(
        ["image", "face_mask", "identity", "expression", "labels", "split"]
    )
    if job.split != "all":
        ds = ds.filter(expr=col("split") == job.split)
    return ds.random_shuffle(seed=job.seed)


def table_conditioning(job: JobConfig):
    """The table's metadata (vector sizes, encoder names), and the per-identity mean
    identity vectors (the identity condition: who the person is, not this photo).

    The means come from the rows of the training split (--split) only: a mean over the whole
    table would carry the held-out faces' vectors into the training conditions."""
    import pyarrow.compute as pc

    from sfsr.io.schema import read_table_info
    from sfsr.io.table import read_table
    from sfsr.model.training import identity_label_means

    info = read_table_info(job.table)
    rows = read_table(job.table, columns=["labels", "identity", "split"])
    if job.split != "all":
        rows = rows.filter(pc.equal(rows.column("split"), job.split))
    if rows.num_rows == 0:
        raise ValueError(f"{job.table}: no faces in split {job.split!r}; train on another --split")
    means = identity_label_means(rows)
    return info, {k: v.tolist() for k, v in means.items()}


def export_model(checkpoint_dir: Path, dest: str, card: dict) -> None:
    """Copy the checkpoint's EMA model folder to `dest` (local or s3://) with a run card."""
    src = checkpoint_dir / checkpoint.MODEL
    for f in sorted(src.rglob("*")):
        if f.is_file():
            storage.write_bytes(storage.join(dest, str(f.relative_to(src))), f.read_bytes())
    storage.write_bytes(storage.join(dest, checkpoint.RUN_CARD), json.dumps(card, indent=2, default=str).encode())


def train_config(job: JobConfig, identity_model: str | None) -> TrainConfig:
    """The TrainConfig of a job on a table whose identity vectors come from `identity_model`.
    The recovery losses read synthetic faces with the synth judges, photos with ArcFace (named by
    --identity-recogniser) and the builtin FER network; a setting that cannot work is refused now,
    before any worker starts."""
    synthetic = identity_model == SYNTH_IDENTITY_ENCODER
    if synthetic and job.identity_recogniser:
        raise ValueError(
            f"--identity-recogniser {job.identity_recogniser}: the table {job.table} holds synthetic faces, which "
            "the synth judges read for the identity loss; leave the flag out"
        )
    if not synthetic and job.identity_loss_weight > 0 and not job.identity_recogniser:
        raise ValueError(
            f"--identity-loss-weight {job.identity_loss_weight} on the photo table {job.table} (encoded by "
            f"{identity_model!r}) needs ArcFace weights to read the recovered faces: give --identity-recogniser "
            "FILE (a torch IResNet state dict; `sfsr packs arcface` converts insightface's w600k_r50.onnx)"
        )
    if job.identity_recogniser and not storage.exists(job.identity_recogniser):
        raise ValueError(f"--identity-recogniser {job.identity_recogniser}: no such file")
    if job.aux_swap > 0 and job.identity_loss_weight <= 0:
        raise ValueError(
            f"--aux-swap {job.aux_swap} trains swaps through the identity loss; give --identity-loss-weight > 0 too"
        )
    optional = {"lr": job.lr, "warmup_steps": job.warmup_steps, "ema_decay": job.ema_decay}
    return TrainConfig(
        batch_size=job.batch_size,
        total_steps=job.steps,
        seed=job.seed,
        identity_loss_weight=job.identity_loss_weight,
        expression_loss_weight=job.expression_loss_weight,
        aux_start_step=job.aux_start_step,
        aux_swap=job.aux_swap,
        **{k: v for k, v in optional.items() if v is not None},
    )


def run(job: JobConfig, provenance: dict | None = None) -> dict:
    """Train; export the final EMA model with a card (job, train config, final metrics and
    `provenance`: the command and commit that started the run, see main())."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if job.init_from and job.vae:  # refused now, not in every worker
        raise ValueError(f"--vae {job.vae}: the --init-from model {job.init_from} holds its own VAE; leave --vae out")
    if not job.init_from:
        check_vae(job.preset, job.vae)
    info, means = table_conditioning(job)
    if job.init_from:  # a fine-tune continues on the conditions and framing its model learned
        from sfsr.conditions import table_mismatch
        from sfsr.io.cache import local_folder

        config = json.loads((local_folder(job.init_from) / "config.json").read_text())
        why = table_mismatch(config, info)
        if why:
            raise ValueError(
                f"--table {job.table} does not fit the --init-from model {job.init_from}: {why}; ingest the photos "
                "again with the model's face pack and crop size, or train a new model on this table"
            )
    tcfg = train_config(job, info.identity_model)
    from jobs._train_samples import preview_rows
    from sfsr.io.table import read_table

    head = read_table(job.table, columns=["image", "face_mask", "identity", "expression"]).slice(0, 4).to_pylist()
    model_args = {
        "identity_dim": info.identity_dim,
        "expression_dim": info.expression_dim,
        "identity_encoder": info.identity_model,
        "expression_encoder": info.expression_model,
        "framing": info.framing or "",  # the table's crops and masks, recorded for whoever serves the model
    }
    storage_path = job.storage if storage.is_s3(job.storage) else str(Path(job.storage).resolve())
    warning = crowded_warning(ray.cluster_resources().get("CPU", 0.0), job.num_workers, other_training_runs())
    if warning:
        print(warning, file=sys.stderr, flush=True)
    # Ray Train routes a worker's print through its logger and, because Ray has already wrapped the
    # worker's stdout, also prints it: every line would reach the job's log twice. Ray passes this
    # setting on to the workers; a user who wants Train's structured print logs can set it to 1.
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={
            "job": asdict(job),
            "train": asdict(tcfg),
            "model_args": model_args,
            "identity_means": means,
            "preview": preview_rows(head),
        },
        scaling_config=ScalingConfig(num_workers=job.num_workers, use_gpu=job.use_gpu),
        run_config=RunConfig(
            name=job.name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=job.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=job.keep_checkpoints),
        ),
        datasets={"train": make_dataset(job)},
    )
    t0 = time.monotonic()
    result = trainer.fit()
    final = {"checkpoint": result.checkpoint.path if result.checkpoint else None, "metrics": result.metrics}
    if result.checkpoint is not None:
        dest = storage.join(job.storage, job.name, checkpoint.MODEL)
        with result.checkpoint.as_directory() as d:
            export_model(
                Path(d),
                dest,
                {
                    "job": asdict(job),
                    "train": asdict(tcfg),
                    "metrics": result.metrics,
                    "provenance": provenance or {},
                    "seconds_this_submission": round(time.monotonic() - t0, 1),
                },
            )
        final["model"] = dest
    return final


def crowded_warning(cluster_cpus: float, need_cpus: float, others: dict[str, float]) -> str | None:
    """A warning when training runs already on the cluster (job id -> CPUs their workers hold)
    leave too few CPUs for this run's workers plus one for its Ray Data reads, else None.

    Ray Train holds its workers' CPUs for the whole run and each epoch's reads need CPUs beside
    them, so on a cluster that cannot grow two runs can each hold the CPU the other's reads wait
    for, and neither moves (seen on the 2-CPU laptop platform)."""
    held = sum(others.values())
    if not others or cluster_cpus - held >= need_cpus + 1:
        return None
    return (
        f"WARNING: the training run(s) of job {', '.join(sorted(others))} hold {held:g} of this cluster's "
        f"{cluster_cpus:g} CPUs; this run needs {need_cpus:g} for its workers and 1 for its data reads. "
        "Unless the cluster can add a node, the runs may wait on each other for ever: let the other run "
        "finish first, or stop it (ray job stop ID)."
    )


def other_training_runs() -> dict[str, float]:
    """Job (submission id) -> CPUs held by the live Ray Train workers of other jobs on this cluster
    ({} when the state API cannot say: the warning is advice, never a reason to fail the run)."""
    from ray.util.state import list_actors, list_jobs

    mine = ray.get_runtime_context().get_job_id()
    try:
        workers = list_actors(
            filters=[("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")],
            detail=True,
            raise_on_missing_output=False,
        )
    except Exception as e:  # any state-API failure costs only the warning
        print(f"could not list the cluster's training runs ({type(e).__name__}: {e}); going on", flush=True)
        return {}
    try:  # name each run as `ray job stop` knows it: its submission id
        named = {j.job_id: j.submission_id for j in list_jobs(raise_on_missing_output=False) if j.submission_id}
    except Exception:  # the core job id is still a name the dashboard shows
        named = {}
    held: dict[str, float] = {}
    for w in workers:
        if w.job_id != mine:
            name = named.get(w.job_id, w.job_id)
            held[name] = held.get(name, 0.0) + actor_cpus(w.required_resources or {})
    return held


def actor_cpus(resources: dict[str, float]) -> float:
    """CPUs an actor holds, from its required resources: plain ("CPU") or, for an actor placed in
    a placement group as Ray Train's workers are, the group's "CPU_group_<id>" (its per-bundle
    twin "CPU_group_<i>_<id>" names the same CPUs again, so it is not counted)."""
    if "CPU" in resources:
        return float(resources["CPU"])
    return float(sum(v for k, v in resources.items() if re.fullmatch(r"CPU_group_[0-9a-f]+", k)))


def init_digest(init_from: str | None) -> str | None:
    """sha256 of the weights and config a fine-tune starts from (sfsr.io.cache.files_digest), so
    whoever reuses its model can tell whether it was made from the model they would start from."""
    if not init_from:
        return None
    from sfsr.io.cache import files_digest, local_folder

    return files_digest(local_folder(init_from))


def parse_args(argv: list[str] | None = None) -> tuple[JobConfig, bool]:
    """(the resolved settings, whether --smoke-test was given)."""
    p = settings_parser(
        JobConfig, __doc__, smoke_test="tiny synthetic table, few steps: checks the whole path in about a minute"
    )
    job, a = parse_settings(JobConfig, p, argv)
    if a.smoke_test:
        job = replace(job, steps=min(job.steps, 6), checkpoint_every=3, sample_every=6, batch_size=8)
    return replace(
        job, table=job.table or "", name=job.name or f"{job.preset}{'-smoke' if a.smoke_test else ''}"
    ), a.smoke_test


def with_absolute_paths(job: JobConfig) -> JobConfig:
    """`job` with its local --table/--storage/--init-from made absolute: the train workers run in
    another folder, so a relative path must be resolved here, at the driver."""

    def absolute(path: str | None) -> str | None:
        return path if not path or "://" in path else os.path.abspath(path)

    return replace(job, **{k: absolute(getattr(job, k)) for k in ("table", "storage", "init_from")})


def main(argv: list[str] | None = None) -> int:
    job, smoke = parse_args(argv)
    job = with_absolute_paths(job)
    argv = sys.argv[1:] if argv is None else argv
    # taken now, not at export: the checkout may move on during a two-hour run
    provenance = {
        "command": shlex.join(["python", "-m", "jobs.train", *argv]),
        "git_commit": git_commit(),
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "init_from_sha256": init_digest(job.init_from),
    }
    ray.init()
    quiet_ray_data(verbose_requested(job.verbose))
    if smoke and not job.table:
        from jobs.ingest import IngestConfig
        from jobs.ingest import run as ingest

        table_root = storage.join(job.storage, job.name, "smoke-table")
        ingest(IngestConfig(output=table_root, synthetic=32, crop_size=32, identities=8))
        job = replace(job, table=storage.join(table_root, "faces"))
    final = run(job, provenance)
    print(json.dumps(final, indent=2, default=str))
    return 0 if final.get("model") else 1


if __name__ == "__main__":
    sys.exit(main())
