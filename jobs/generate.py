"""Batch generation over a request table: `ray job submit -- python -m jobs.generate --requests
T --output OUT`.

The table (Parquet file or folder, or CSV; local or s3://) has one request per row:
  id                 optional; else derived from the row's content (ids name the output files)
  identity           image URI (local path or s3://) of the person to paint: required
  background         image URI whose face is replaced (default: the identity photo itself), or
  background_prompt  text the --text-to-image folder turns into the background (without the flag
                     the row errors); with it, optionally:
    background_seed  the scene's seed (default: the row's seed)
    head_box         where the person goes: x1, y1, x2, y2 fractions of the scene, a list (JSON
                     text in CSV); default: on a face the scene shows, else a portrait placement
  expression         a word of sfsr.expressions (`sfsr expressions list`); with it, optionally:
    expression_target   prototype (default: the word's target) or exemplar (one of the word's
                        exemplar faces in the model's expression bank, the paper's retrieval)
    expression_exemplar which exemplar (0-based; default: the one the row's seed picks); or
  driver             an image URI whose face's expression is copied, or
  expression_vector  a list (JSON text in CSV) of the model's expression values;
                     none of the three: the background face keeps its own expression (a swap),
                     or, on a background made from a prompt, the person keeps their own
  seed, steps        optional integers (default seed: a hash of the id; steps: --steps)
  aligned            optional true/false: the images are aligned face crops (no detection)

Ray Data feeds the requests to an actor pool (a GPU per actor when the cluster has GPUs): each
actor builds sfsr.generate.Generator from --model and the face pack once, detects and aligns the
faces the way the Serve API does, generates, pastes the face back into the background photo,
watermarks it and writes OUT/images/<id>.png with provenance text (jobs/_generate_stages.py).
For a background_prompt row the actor makes the scene with the --text-to-image pipeline
(sfsr.scenes, loaded at its first such row) and places the person in it as the Serve API does; the
provenance names the prompt, the scene's seed and the folder.
OUT/results/ holds one row per request (id, status ok | error, output URI, the error naming what
was wrong, model and version, seed, steps, seconds), committed by id: every request ends as one
ok row or one error row, and a bad row never stops the others. A re-run skips requests already
done (ok row, same request and model, PNG present) and requests that failed before (unless
--retry-errors), so running the same table twice changes nothing (OUT/run.json, the settings and
counts of a run, is written only by a run that changed something).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from jobs import _generate_requests as rq
from jobs._generate_stages import GenerateRequests, image_uri
from jobs._quiet import quiet_ray_data
from sfsr.cli_settings import parse_settings, setting, settings_parser
from sfsr.io import storage, table
from sfsr.progress import VERBOSE_HELP, verbose_requested
from sfsr.provenance import REPO_ROOT
from sfsr.scenes import DEFAULT_GUIDANCE, DEFAULT_SIZE, DEFAULT_STEPS

DEFAULT_MODEL = "sfsr/model/pretrained/cpu-demo"
REQUEST_ROWS = pa.schema(
    [
        ("id", pa.string()),
        ("identity", pa.string()),
        ("background", pa.string()),
        ("expression", pa.string()),
        ("driver", pa.string()),
        ("expression_vector", pa.list_(pa.float64())),
        ("seed", pa.int64()),
        ("steps", pa.int64()),
        ("aligned", pa.bool_()),
        ("digest", pa.string()),
        ("background_prompt", pa.string()),
        ("background_seed", pa.int64()),
        ("head_box", pa.list_(pa.float64())),
        ("expression_target", pa.string()),
        ("expression_exemplar", pa.int64()),
    ]
)


@dataclass(frozen=True, kw_only=True)
class GenerateConfig:
    """The job's settings, each declared once: the command line is derived from these fields
    (sfsr.cli_settings) and the resolved values are saved in OUT/run.json."""

    requests: str | None = setting(
        "request table: Parquet file or folder, or .csv, local or s3://", None, required=True, unless="--smoke-test"
    )
    output: str = setting("folder or s3:// prefix for images/<id>.png, results/ and run.json", required=True)
    model: str = setting("model folder (local or s3://) for sfsr.generate.Generator", DEFAULT_MODEL)
    pack: str = setting("face pack that detects and aligns the faces in photos", "builtin")
    steps: int | None = setting("denoising steps for rows without steps (default: the model's)", None)
    text_to_image: str | None = setting(
        "Stable Diffusion folder (diffusers layout, local or s3://) that makes the backgrounds of rows "
        "with background_prompt (without it those rows error)",
        None,
    )
    scene_width: int = setting("width of backgrounds made from prompts (a multiple of 8)", DEFAULT_SIZE)
    scene_height: int = setting("height of backgrounds made from prompts (a multiple of 8)", DEFAULT_SIZE)
    scene_steps: int = setting("text-to-image denoising steps per background", DEFAULT_STEPS)
    scene_guidance: float = setting("text-to-image guidance of the prompt", DEFAULT_GUIDANCE)
    batch_size: int = setting("requests per actor call", 16)
    actors: int = setting("generator actors (0: one per GPU, or one per 2 CPUs)", 0)
    gpus_per_actor: float | None = setting("GPUs per actor (default: 1 when the cluster has GPUs, else 0)", None)
    max_output_side: int = setting("outputs with a longer side are downscaled", 2048)
    retry_errors: bool = setting("generate requests that failed in an earlier run again", False)
    verbose: bool = setting(VERBOSE_HELP, False)


def scene_settings(cfg: GenerateConfig) -> rq.SceneSettings | None:
    """How prompt rows' backgrounds are made (None without --text-to-image); raises ValueError
    naming a setting out of range. A local folder is made absolute here, at the driver: the
    actors run in another folder."""
    if not cfg.text_to_image:
        return None
    folder = cfg.text_to_image if storage.is_s3(cfg.text_to_image) else os.path.abspath(cfg.text_to_image)
    return rq.SceneSettings(folder, cfg.scene_width, cfg.scene_height, cfg.scene_steps, cfg.scene_guidance)


def model_folder(uri: str) -> str:
    """The model URI, with the repository's committed models found from any working directory."""
    if storage.is_s3(uri) or Path(uri).exists() or not (REPO_ROOT / uri).exists():
        return uri
    return str(REPO_ROOT / uri)


def read_model(uri: str) -> tuple[str, str, int, int]:
    """(name, version, expression size, default steps) of a model folder, read without torch."""
    from sfsr.io.cache import files_digest, local_folder
    from sfsr.model_card import read_card, sampling_defaults

    local = local_folder(uri)
    if not (local / "config.json").is_file():
        raise SystemExit(f"--model {uri}: no config.json there; give a model folder written by jobs.train")
    config = json.loads((local / "config.json").read_text())
    card = read_card(local)
    steps = int(sampling_defaults(card)["steps"])
    return card.get("name", local.name), "sha256:" + files_digest(local), int(config["expression_dim"]), steps


def previous_results(results_uri: str) -> dict[str, tuple[str, str]]:
    """id -> (status, request_digest) of earlier runs ({} before the first)."""
    if not table.table_files(results_uri):
        return {}
    t = table.read_table(results_uri, columns=["id", "status", "request_digest"])
    return {i: (s, d) for i, s, d in zip(*(t.column(c).to_pylist() for c in ("id", "status", "request_digest")))}


def existing_pngs(output: str) -> set[str]:
    uris = storage.list_files(storage.join(output, "images"), (".png",)) if storage.exists(output) else []
    return {u.rsplit("/", 1)[-1][: -len(".png")] for u in uris}


def _bar(done: int, total: int, width: int = 24) -> str:
    filled = round(width * done / total) if total else width
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def generate(
    cfg: GenerateConfig, model: str, todo: list[rq.Request], scenes: rq.SceneSettings | None = None
) -> list[dict]:
    """The Ray part: the requests through an actor pool; their result rows as they arrive."""
    import ray

    if not ray.is_initialized():
        ray.init()
    quiet_ray_data(verbose_requested(cfg.verbose))  # our own progress line instead of Ray Data's block dump
    cpus = int(ray.cluster_resources().get("CPU", 1))
    gpus = ray.cluster_resources().get("GPU", 0)
    gpa = cfg.gpus_per_actor if cfg.gpus_per_actor is not None else (1.0 if gpus else 0.0)
    actor_cpus = 1 if cpus < 4 else 2
    batches = math.ceil(len(todo) / cfg.batch_size)
    n = cfg.actors or (max(1, int(gpus // gpa)) if gpa else max(1, cpus // 2))
    n = max(1, min(n, batches))
    print(
        f"generate: run: {len(todo)} requests in {batches} batches on {n} actor(s) "
        f"({actor_cpus} CPU{f', {gpa} GPU' if gpa else ''} each)",
        flush=True,
    )
    rows = pa.Table.from_pylist([r.to_row() for r in todo], schema=REQUEST_ROWS)
    ds = ray.data.from_arrow([rows.slice(i, cfg.batch_size) for i in range(0, rows.num_rows, cfg.batch_size)])
    ds = ds.map_batches(
        GenerateRequests,
        fn_constructor_kwargs={
            "model": model,
            "pack": cfg.pack,
            "output": cfg.output,
            "device": "cuda" if gpa else "cpu",
            "threads": actor_cpus,
            "max_output_side": cfg.max_output_side,
            "scenes": scenes,
        },
        compute=ray.data.ActorPoolStrategy(size=n),
        num_cpus=actor_cpus,
        num_gpus=gpa,
        batch_format="pyarrow",
        batch_size=cfg.batch_size,
    )
    results: list[dict] = []
    t0 = time.monotonic()
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        results += batch.to_pylist()
        ok = sum(r["status"] == "ok" for r in results)
        print(
            f"generate: run: {_bar(len(results), len(todo))} {len(results)}/{len(todo)} requests, "
            f"{ok} ok, {len(results) - ok} error, {time.monotonic() - t0:.1f} s",
            flush=True,
        )
    return results


def run(cfg: GenerateConfig) -> dict:
    """Plan (jobs._generate_requests), generate what is left (Ray), commit the results by id."""
    t0 = time.monotonic()
    model = model_folder(cfg.model)
    name, version, expression_dim, model_steps = read_model(model)
    scenes = scene_settings(cfg)
    defaults = rq.Defaults(cfg.steps or model_steps, expression_dim, version, scenes)
    try:
        parsed = rq.parse_requests(rq.read_requests(cfg.requests), defaults)
    except rq.RequestTableError as e:
        raise SystemExit(f"--requests {e}") from None
    results_uri = storage.join(cfg.output, "results")
    pngs = existing_pngs(cfg.output)
    p = rq.plan(parsed, previous_results(results_uri), pngs, cfg.retry_errors)
    print(
        f"generate: plan: {len(parsed)} requests in {cfg.requests}: {p.done} already done, {p.failed_before} failed "
        f"before{'' if cfg.retry_errors else ' (--retry-errors to try them again)'}, {len(p.invalid)} refused, "
        f"{len(p.todo)} to generate with {name} ({version[:19]})",
        flush=True,
    )
    rows = [rq.error_row(i.id, i.reason, i.digest, i.seed, i.steps, name, version) for i in p.invalid]
    if p.todo:
        got = generate(cfg, model, p.todo, scenes)
        returned = {r["id"] for r in got}
        lost = [r for r in p.todo if r.id not in returned]  # never expected; counted, never dropped
        got += [
            rq.error_row(r.id, f"row {r.id}: no result came back from the actors; re-run the job", r.digest,
                         r.seed, r.steps, name, version)
            for r in lost
        ]  # fmt: skip
        rows += got
    if rows:
        staging = table.staging_uri(results_uri, uuid.uuid4().hex[:12])
        part = pa.Table.from_pylist(rows, schema=rq.RESULTS)
        storage.write_atomic(storage.join(staging, "results.parquet"), lambda f: pq.write_table(part, f))
        table.commit(staging, results_uri, "id", rq.RESULTS)
    for r in rows:  # an id that fails now keeps no image from an earlier, different request
        if r["status"] == "error" and r["id"] in pngs:
            storage.delete(image_uri(cfg.output, r["id"]))
    final = table.read_table(results_uri, columns=["id", "status"]) if table.table_files(results_uri) else None
    status = dict(zip(final.column("id").to_pylist(), final.column("status").to_pylist())) if final else {}
    ids = [x.id for x in parsed]
    ok = sum(status.get(i) == "ok" for i in ids)
    errors = sum(status.get(i) == "error" for i in ids)
    summary = {
        "requests": len(ids),
        "ok": ok,
        "error": errors,
        "accounted": ok + errors == len(ids),
        "generated_now": sum(r["status"] == "ok" for r in rows),
        "errors_now": sum(r["status"] == "error" for r in rows),
        "skipped_done": p.done,
        "skipped_failed_before": p.failed_before,
        "model": name,
        "model_version": version,
        "results": results_uri,
        "images": storage.join(cfg.output, "images"),
        "seconds": round(time.monotonic() - t0, 2),
    }
    print(f"generate: results: {ok} ok + {errors} error = {ok + errors} of {len(ids)} requests in {results_uri}")
    if rows:  # a run that changed nothing leaves every file as it was, run.json included
        run_json = {"config": asdict(cfg), **summary}
        storage.write_bytes(storage.join(cfg.output, "run.json"), json.dumps(run_json, indent=2).encode())
    return summary


def smoke_inputs(output: str) -> str:
    """A tiny request table over procedural aligned faces (sfsr.synth) under OUT/smoke-inputs:
    a swap, a word, a driver and one unknown word (an error row)."""
    from sfsr.io.images import encode_png
    from sfsr.synth import NEUTRAL_EXPRESSION, make_sample, render

    folder = storage.join(output, "smoke-inputs")
    faces = []
    for i in (1, 2, 3):
        uri = storage.join(folder, f"face{i}.png")
        storage.write_bytes(uri, encode_png(render(make_sample(i, NEUTRAL_EXPRESSION, background_seed=i), 256)[0]))
        faces.append(uri)
    requests = pa.table(
        {
            "id": ["swap", "word", "driver", "bad-word"],
            "identity": [faces[0], faces[1], faces[2], faces[0]],
            "background": [faces[1], None, None, None],
            "expression": [None, "joy", None, "joyfull"],
            "driver": [None, None, faces[0], None],
            "aligned": [True] * 4,
        }
    )
    uri = storage.join(folder, "requests.parquet")
    storage.write_atomic(uri, lambda f: pq.write_table(requests, f))
    return uri


def parse_args(argv: list[str] | None = None) -> tuple[GenerateConfig, bool]:
    p = settings_parser(
        GenerateConfig, __doc__, smoke_test="tiny run: 4 requests on procedural faces (1 refused), 2 steps"
    )
    cfg, a = parse_settings(GenerateConfig, p, argv)
    if cfg.batch_size < 1 or cfg.actors < 0 or (cfg.steps is not None and not 1 <= cfg.steps <= rq.MAX_STEPS):
        p.error(f"--batch-size must be >= 1, --actors >= 0 and --steps within 1..{rq.MAX_STEPS}")
    if cfg.max_output_side < 256:
        p.error(f"--max-output-side {cfg.max_output_side}: use 256 or more (the watermark needs 256 x 256)")
    try:
        scene_settings(cfg)
    except ValueError as e:
        p.error(str(e))
    if a.smoke_test:
        cfg = replace(cfg, steps=min(cfg.steps or 2, 2), batch_size=min(cfg.batch_size, 4))
    return cfg, bool(a.smoke_test)


def main(argv: list[str] | None = None) -> int:
    cfg, smoke = parse_args(argv)
    if smoke and cfg.requests is None:
        cfg = replace(cfg, requests=smoke_inputs(cfg.output))
    summary = run(cfg)  # starts Ray only when something is left to generate
    print(json.dumps(summary, indent=2))
    if not summary["accounted"]:
        print(
            f"error: {summary['requests']} requests but {summary['ok']} ok and {summary['error']} error rows; "
            f"see {summary['results']}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
