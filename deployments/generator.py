"""The generator deployment: the DiffSFSR model (sfsr.generate.Generator) behind @serve.batch.

Requests arrive one aligned crop at a time as `GenJob`s; a continuous batcher
(deployments/batcher.py) hands the model everything that queued while it was busy, up to
max_batch_size (a request that finds the model idle starts at once, or after
batch_wait_timeout_s when that is set), and this deployment runs each group of compatible jobs
(same operation, steps, guidance scales, expression kind) as one batched model call, with one
seed per job so a job's result does not depend on what it was batched with. Both batch settings
come from user_config and change without a restart (`reconfigure`). Each result says how long
its job queued, how long its model call took and how many jobs shared it (`GenResult`).

The model call runs in a worker thread: the replica's event loop stays free for Serve's queue
length probes and health checks, which otherwise time out on a 2-core machine under load.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from ray import serve
from ray.serve.metrics import Counter, Histogram

from deployments import expressions
from deployments.batcher import ContinuousBatcher
from deployments.settings import GeneratorSettings, from_dict, torch_device

logger = logging.getLogger("ray.serve")
OPS = ("swap", "reenact", "generate")


@dataclass(frozen=True)
class GenJob:
    """One generation on aligned crops (S, S, 3) uint8, S = the model's resolution.

    swap:      primary = identity crop, target = target crop.
    reenact:   primary = source crop; one of driver (driver crop), word or vector (a word's
               exemplar target, deployments/expressions.py).
    generate:  primary = identity crop, target = background crop; one of driver (expression
               image crop), word or vector.
    mask: the face region of the crop that is regenerated (target, source or background).
    """

    op: str
    primary: np.ndarray = field(repr=False)
    steps: int
    guidance_identity: float
    guidance_expression: float
    seed: int
    init: str = "noise"  # what sampling starts from (sfsr.model_card.INITS)
    target: np.ndarray | None = field(default=None, repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)  # (S, S) bool face region of the image regenerated
    driver: np.ndarray | None = field(default=None, repr=False)
    word: str | None = None
    vector: tuple[float, ...] | None = None
    submitted: float = 0.0  # time.time() when the ingress sent it (the queue wait is measured from it)

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"GenJob.op {self.op!r} is not one of {OPS}")

    @property
    def expression_kind(self) -> str:
        return (
            "image"
            if self.driver is not None
            else "word"
            if self.word is not None
            else "vector"
            if self.vector is not None
            else "none"
        )

    @property
    def group_key(self) -> tuple:
        """Jobs with equal keys run in one model call."""
        return (self.op, self.steps, self.guidance_identity, self.guidance_expression, self.init, self.expression_kind)


@dataclass(frozen=True)
class GenResult:
    """One job's output and where its time went (the ingress reports them as Server-Timing)."""

    image: np.ndarray = field(repr=False)  # (S, S, 3) uint8
    queue_s: float  # from GenJob.submitted until its batch started
    model_s: float  # the batched model call that produced it
    batch_size: int  # jobs in that model call
    replica: str  # which generator replica ran it
    model_version: str = ""  # the version of the weights that made it (model_summary's "version")


def group_jobs(jobs: list[GenJob]) -> list[list[int]]:
    """Indices of `jobs` grouped by group_key, in first-seen order."""
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        groups.setdefault(job.group_key, []).append(i)
    return list(groups.values())


def run_group(model: Any, jobs: list[GenJob]) -> np.ndarray:
    """One batched call of the model for jobs sharing a group_key -> (B, S, S, 3) uint8."""
    first = jobs[0]
    common: dict[str, Any] = dict(
        steps=first.steps,
        guidance_identity=first.guidance_identity,
        guidance_expression=first.guidance_expression,
        init=first.init,
        seeds=[j.seed for j in jobs],
    )
    if all(j.mask is not None for j in jobs):
        common["masks"] = np.stack([j.mask for j in jobs])  # (B, S, S) bool
    primary = np.stack([j.primary for j in jobs])  # (B, S, S, 3)
    if first.op == "swap":
        return model.swap(primary, np.stack([j.target for j in jobs]), **common)
    if first.op == "reenact":
        if first.expression_kind == "image":
            return model.reenact(primary, driver_images=np.stack([j.driver for j in jobs]), **common)
        if first.expression_kind == "vector":  # reenact is generate with the source as identity and background
            vectors = [np.asarray(j.vector, np.float32) for j in jobs]
            return model.generate(primary, expression=vectors, background_images=primary, **common)
        return model.reenact(primary, words=[j.word for j in jobs], **common)
    # Generator.generate takes one item per sample in a list: a word, an (S, S, 3) face or a (D,) vector
    if first.expression_kind == "image":
        expression: list[Any] = [j.driver for j in jobs]
    elif first.expression_kind == "vector":
        expression = [np.asarray(j.vector, np.float32) for j in jobs]
    else:
        expression = [j.word for j in jobs]
    return model.generate(
        primary, expression=expression, background_images=np.stack([j.target for j in jobs]), **common
    )


def model_summary(info: dict[str, Any], version: str) -> dict[str, Any]:
    """What the ingress and the page need from Generator.info, plus the weights' version."""
    resolution = info.get("resolution")
    if not resolution:
        raise ValueError(f"Generator.info has no resolution (keys: {sorted(info)}); the ingress needs the crop size")
    conditioning = info.get("conditioning") or {}
    return {
        "name": str(info.get("model") or "unknown"),
        "version": version,
        "preset": info.get("preset"),
        "resolution": int(resolution),
        "parameters": info.get("parameters"),
        "expression_dim": conditioning.get("expression_dim"),
        "conditioning": conditioning,
        "sampling_defaults": info.get("sampling_defaults") or {},
        "trained_on": info.get("trained_on") or "not recorded in the model folder",
        "licence": info.get("licence") or "not recorded in the model folder",
        "warning": info.get("warning"),  # set for models trained on synthetic faces (Generator.info)
    }


def weights_version(digest: str) -> str:
    """The loaded weights' version as shown by /v1/info: a prefix of their sha256
    (Generator.weights_digest, from the files loaded, local or fetched from s3://)."""
    return "sha256:" + digest[:12] if digest else "unknown"


def needs_reload(old: GeneratorSettings, new: GeneratorSettings) -> bool:
    """Whether a user_config change must load the model again (batch settings change in place)."""
    keys = ("model", "model_revision", "device", "torch_threads")
    return any(getattr(old, k) != getattr(new, k) for k in keys)


@serve.deployment(name="Generator")
class GeneratorDeployment:
    """Loads the model named in user_config and serves batched generations."""

    def __init__(self) -> None:
        self.settings: GeneratorSettings | None = None
        self.model: Any = None
        self.summary: dict[str, Any] = {}
        self._lock = threading.Lock()  # one model call at a time per replica (threads share torch)
        self.batcher: ContinuousBatcher[GenJob, GenResult] = ContinuousBatcher(self._run_batch)
        self.batch_sizes = Histogram(
            "sfsr_generator_batch_size",
            "requests per batched model call",
            boundaries=[1, 2, 3, 4, 6, 8, 12, 16, 32],
            tag_keys=("op",),
        )
        self.batch_latency = Histogram(
            "sfsr_generator_batch_seconds",
            "seconds per batched model call",
            boundaries=[0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32],
            tag_keys=("op",),
        )
        self.jobs = Counter("sfsr_generator_jobs", "generations run, by operation", tag_keys=("op",))
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a Serve replica (unit tests construct the class's logic directly)
            self.replica = "local"

    def reconfigure(self, config: dict[str, Any]) -> None:
        settings = from_dict(GeneratorSettings, config, "Generator user_config")
        if self.settings is None or needs_reload(self.settings, settings):
            self._load(settings)
        self.batcher.configure(settings.max_batch_size, settings.batch_wait_timeout_s)
        self.settings = settings
        logger.info(
            "Generator: model %s, batches of up to %d (wait %.3f s)",
            settings.model_path,
            settings.max_batch_size,
            settings.batch_wait_timeout_s,
        )

    def _load(self, settings: GeneratorSettings) -> None:
        import torch

        from sfsr.generate import Generator

        torch.set_num_threads(settings.torch_threads)
        device = torch_device(settings.device)
        t0 = time.perf_counter()
        try:
            model = Generator.from_pretrained(settings.model_path, device=device)
        except FileNotFoundError as e:
            raise RuntimeError(
                f"Generator user_config.model={settings.model!r}: {e}. Point it at a model folder "
                "(train one with jobs/train.py) in deployments/serve_config.yaml"
            ) from None
        summary = model_summary(dict(model.info), weights_version(model.weights_digest))  # fails early if info lacks it
        # One tiny generation loads the encoders and warms torch up, so the first request
        # does not pay for it and a model that cannot generate fails here, at deploy time.
        size = summary["resolution"]
        model.reenact(np.zeros((1, size, size, 3), np.uint8), words=["joy"], steps=1, seeds=[0])
        self.model, self.summary = model, summary
        logger.info(
            "Generator: loaded %s (%s) on %s in %.1f s",
            settings.model_path,
            summary["version"],
            device,
            time.perf_counter() - t0,
        )

    def info(self) -> dict[str, Any]:
        return {**_jsonable(self.summary), "max_batch_size": self.settings.max_batch_size if self.settings else None}

    async def travel_vectors(self, start: Any, end: Any, frames: int) -> list[tuple[float, ...]]:
        """Expression travel's vectors (Generator.travel_vectors): the ingress sends one generate
        job per frame, which the batcher runs together."""
        vectors = await asyncio.to_thread(self.model.travel_vectors, start, end, frames)
        return [tuple(float(x) for x in v) for v in vectors]

    # A word's targets (deployments/expressions.py): reads of the bank, no model call, no batching.

    def expression_entry(self, word: str) -> dict[str, Any]:
        return expressions.entry(self.model, word)

    def exemplar_png(self, word: str, index: int) -> bytes | expressions.Refused:
        return expressions.exemplar_png(self.model, word, index)

    def exemplar_vector(
        self, word: str, index: int | None, seed: int
    ) -> expressions.ExemplarChoice | expressions.Refused:
        return expressions.exemplar_choice(self.model, word, index, seed)

    def check_health(self) -> None:
        if self.model is None:
            raise RuntimeError("Generator: no model loaded")

    def _run_sync(self, jobs: list[GenJob]) -> list[GenResult]:
        out: list[GenResult | None] = [None] * len(jobs)
        with self._lock:
            for idx in group_jobs(jobs):
                group = [jobs[i] for i in idx]
                started, t0 = time.time(), time.perf_counter()
                images = np.asarray(run_group(self.model, group))  # (B, S, S, 3) uint8
                if images.shape[0] != len(group) or images.dtype != np.uint8:
                    raise RuntimeError(
                        f"Generator.{group[0].op} returned {images.shape} {images.dtype} for "
                        f"{len(group)} inputs; expected (B, S, S, 3) uint8"
                    )
                model_s = time.perf_counter() - t0
                tags = {"op": group[0].op}
                self.batch_sizes.observe(len(group), tags=tags)
                self.batch_latency.observe(model_s, tags=tags)
                self.jobs.inc(len(group), tags=tags)
                for i, image in zip(idx, images):
                    queue_s = max(0.0, started - jobs[i].submitted) if jobs[i].submitted else 0.0
                    out[i] = GenResult(image, queue_s, model_s, len(group), self.replica, self.summary["version"])
        return out  # type: ignore[return-value]

    async def _run_batch(self, jobs: list[GenJob]) -> list[GenResult]:
        return await asyncio.to_thread(self._run_sync, jobs)

    async def run(self, job: GenJob) -> GenResult:
        """One job, run in the next batch the model takes (deployments/batcher.py)."""
        return await self.batcher.submit(job)

    async def run_many(self, jobs: list[GenJob]) -> list[GenResult]:
        """Several jobs of one request (a travel's frames) in one call: one queue slot of this
        deployment, and the batcher runs them together."""
        return list(await asyncio.gather(*(self.batcher.submit(j) for j in jobs)))


def _jsonable(value: Any) -> Any:
    """Generator.info with anything JSON cannot hold turned into strings."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
