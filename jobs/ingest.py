"""Ingest faces into a face table: `ray job submit -- python -m jobs.ingest --input X --output Y`.

Input: a folder or s3:// prefix of images, a Parquet table (columns source_uri or uri, optionally
image bytes, identity_label, expression_label), or `--synthetic N` procedural faces. Output, local
or s3://:
  Y/faces/            the face table (one row per face; sfsr.io.schema)
  Y/errors/           one row per input that gave no face, with the stage and reason
  Y/expression_bank.parquet   per labelled word: mean expression vector and --exemplars typical faces
  Y/run.json          the resolved configuration and the accounting of this run

Ray Data end to end, streaming: read + validate in CPU tasks, detect + align in an actor pool,
encode in an actor pool (a GPU per actor when the cluster has GPUs), shards staged and then
committed by key, so re-running on the same inputs neither duplicates nor loses rows. Inputs
already in the face or error table are skipped (use --retry-errors to try failed ones again).
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import asdict, dataclass, replace

import numpy as np
import pyarrow as pa
import ray

from jobs import _ingest_stages as st
from jobs._quiet import quiet_ray_data
from sfsr.cli_settings import parse_settings, setting, settings_parser
from sfsr.conditions import SYNTH_EXPRESSION_ENCODER, SYNTH_IDENTITY_ENCODER, encoder_ref
from sfsr.expressions.bank import BANK_FILE
from sfsr.io import storage, table
from sfsr.io.schema import ERROR_SCHEMA, face_table_schema
from sfsr.progress import VERBOSE_HELP, Counter, verbose_requested

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True, kw_only=True)
class IngestConfig:
    """The job's settings, each declared once: the command line is derived from these fields
    (sfsr.cli_settings) and the resolved values are saved in Y/run.json."""

    input: str | None = setting(
        "folder, s3:// prefix, or Parquet table of images", None, one_of="source", required=True
    )
    synthetic: int = setting("ingest N procedural faces instead", 0, one_of="source", required=True)
    output: str = setting("output folder or s3:// prefix (faces/, errors/, run.json)", required=True)
    synthetic_split: str = setting("split of the synthetic faces", "train", choices=["train", "test", "all"])
    seed: int = setting("seed of the synthetic dataset", 0)
    identities: int = setting("number of synthetic identities", 200)
    synthetic_expression: str = setting(
        "expression vector of synthetic faces: 'factors', the renderer's exact values, or 'judge', "
        "the 32 px judge's reading of the crop (what a driver face gets)",
        "factors",
        choices=["factors", "judge"],
    )
    pack: str = setting("face pack: builtin, a folder or an s3:// prefix", "builtin")
    crop_size: int = setting("side of the aligned crops stored in the table", 256)
    min_face: int = setting("smallest face (box side, source pixels) to keep", 32)
    batch_size: int = setting("images per batch in the detect stage", 8)
    detect_actors: int = setting("detect/align actors (0: one per CPU, or per CPU left over by the GPU encoders)", 0)
    encode_actors: int = setting("encoder actors (0: a quarter of the CPUs, or one per GPU)", 0)
    test_fraction: float = setting("fraction of identities (or files) in the test split", 0.1)
    identity_from_folder: bool = setting("label identities by their parent folder's name", False)
    exemplars: int = setting("exemplar faces kept per labelled word in the expression bank", 4)
    retry_errors: bool = setting("process inputs that failed in an earlier run again", False)
    verbose: bool = setting(VERBOSE_HELP, False)


def list_inputs(cfg: IngestConfig) -> tuple[list[dict], int]:
    """Rows {source_uri, identity_label, expression_label[, image]} and the count of skipped files."""
    src = cfg.input
    if src.endswith(".parquet") or (
        storage.exists(src) and not storage.list_files(src, IMAGE_SUFFIXES) and storage.list_files(src, (".parquet",))
    ):
        t = table.read_table(src)
        uri_col = "source_uri" if "source_uri" in t.column_names else "uri"
        if uri_col not in t.column_names:
            raise SystemExit(f"{src}: an input table needs a source_uri (or uri) column; it has {t.column_names}")
        rows = []
        for r in t.to_pylist():
            rows.append(
                {
                    "source_uri": r[uri_col],
                    "image": r.get("image"),
                    "identity_label": r.get("identity_label"),
                    "expression_label": r.get("expression_label"),
                }
            )
        return rows, 0
    every = storage.list_files(src)
    images = [u for u in every if u.lower().endswith(IMAGE_SUFFIXES) and not u.rsplit("/", 1)[-1].startswith(".")]
    rows = []
    for u in images:
        label = u.rsplit("/", 2)[-2] if cfg.identity_from_folder else None
        rows.append({"source_uri": u, "identity_label": label, "expression_label": None})
    return rows, len(every) - len(images)


def build_schema(cfg: IngestConfig) -> pa.Schema:
    if cfg.synthetic:
        from sfsr.synth.judges import load_judges

        j = load_judges()
        blank = np.zeros((1, j.size, j.size, 3), np.uint8)
        dims = j.identity_embedding_np(blank).shape[1], j.expression_np(blank).shape[1]
        return face_table_schema(
            *dims,
            crop_size=cfg.crop_size,
            identity_model=SYNTH_IDENTITY_ENCODER,
            expression_model=SYNTH_EXPRESSION_ENCODER,
            framing="synth-render",
        )
    from sfsr.faces.analyze import framing_name
    from sfsr.faces.pack import open_pack

    p = open_pack(cfg.pack, crop_size=cfg.crop_size)
    return face_table_schema(
        p.identity.output.dim,
        p.expression.output.dim,
        crop_size=cfg.crop_size,
        identity_model=encoder_ref(p.name, p.identity),  # PACK/ENCODER@VERSION: what loads it again
        expression_model=encoder_ref(p.name, p.expression),
        framing=framing_name(p),
    )


def write_expression_bank(faces_uri: str, out_uri: str, exemplars: int) -> int:
    """Mean expression vector and the `exemplars` most typical faces per labelled word
    (sfsr.expressions.bank.build_bank: one part file at a time, bounded memory)."""
    import pyarrow.parquet as pq

    from sfsr.expressions.bank import build_bank

    parts = storage.list_files(faces_uri, (".parquet",))
    readers = [lambda columns, part=part: table.read_table(part, columns=columns) for part in parts]
    bank = build_bank(readers, exemplars=exemplars)
    if not bank.means:
        return 0
    if bank.skipped:
        print(f"ingest: expression labels outside the vocabulary, not in the bank: {sorted(set(bank.skipped))[:10]}")
    storage.write_atomic(out_uri, lambda f: pq.write_table(bank.to_table(), f))
    return len(bank.means)


def actor_plan(cpus: int, gpus: float, detect: int = 0, encode: int = 0) -> dict[str, float]:
    """Actor pool sizes and CPUs per actor. On CPUs, detection (HOG over the whole photo, one
    thread per actor) is most of the work: one detect actor per CPU at 0.75 CPU each, and the
    encoders (batched, cheap per face) share the remaining quarter, so every core is busy. With
    GPUs the encoders take one GPU each and a CPU, and detection gets the other CPUs."""
    if gpus:
        n_enc = encode or max(1, int(gpus))
        n_det = detect or max(1, cpus - n_enc)
        return {"detect": n_det, "detect_cpus": 1.0, "encode": n_enc, "encode_cpus": 1.0}
    n_det = detect or max(1, cpus)
    n_enc = encode or max(1, cpus // 4)
    return {
        "detect": n_det,
        "detect_cpus": round(0.75 * cpus / n_det, 3),
        "encode": n_enc,
        "encode_cpus": round(0.25 * cpus / n_enc, 3),
    }


def run(cfg: IngestConfig) -> dict:
    t0 = time.monotonic()
    faces_uri, errors_uri = storage.join(cfg.output, "faces"), storage.join(cfg.output, "errors")
    schema = build_schema(cfg)
    run_id = uuid.uuid4().hex[:12]
    faces_stage, errors_stage = table.staging_uri(faces_uri, run_id), table.staging_uri(errors_uri, run_id)

    if cfg.synthetic:
        rows = [{"index": i, "split": cfg.synthetic_split} for i in range(cfg.synthetic)]
        uri_of = lambda r: f"synthetic://seed{cfg.seed}/{r['split']}/{r['index']}"  # noqa: E731
        skipped_files = 0
    else:
        rows, skipped_files = list_inputs(cfg)
        uri_of = lambda r: r["source_uri"]  # noqa: E731
    done = table.read_keys(faces_uri, "source_uri")
    if not cfg.retry_errors:
        done |= table.read_keys(errors_uri, "source_uri")
    todo = [r for r in rows if uri_of(r) not in done]
    print(
        f"ingest: {len(rows)} inputs ({skipped_files} other files ignored), "
        f"{len(rows) - len(todo)} already in {cfg.output}, {len(todo)} to do",
        flush=True,
    )

    counts = {"face_rows": 0, "error_rows": 0, "face_inputs": 0}
    if todo:  # a re-run with nothing left to do plans from the tables alone and never starts Ray
        if not ray.is_initialized():
            ray.init()
        cpus = int(ray.cluster_resources().get("CPU", 1))
        gpus = ray.cluster_resources().get("GPU", 0)
        plan = actor_plan(cpus, gpus, cfg.detect_actors, cfg.encode_actors)
        blocks = max(1, min(len(todo), 4 * cpus, len(todo) // cfg.batch_size + 1))
        ds = ray.data.from_items(todo, override_num_blocks=blocks)
        if cfg.synthetic:
            ds = ds.map_batches(
                st.render_synthetic,
                batch_format="pyarrow",
                batch_size=cfg.batch_size,
                fn_kwargs={"seed": cfg.seed, "n_identities": cfg.identities, "crop_size": cfg.crop_size},
            )
            pack_spec = "synthetic"
        else:
            # same CPUs as the detect actors, so Ray Data fuses decoding into them (a separate
            # task pool would find every CPU held by the actor pools and never run)
            ds = ds.map_batches(
                st.read_and_decode, batch_format="pyarrow", batch_size=cfg.batch_size, num_cpus=plan["detect_cpus"]
            )
            ds = ds.map_batches(
                st.DetectAlign,
                fn_constructor_kwargs={"pack_spec": cfg.pack, "crop_size": cfg.crop_size, "min_face": cfg.min_face},
                compute=ray.data.ActorPoolStrategy(size=plan["detect"]),
                num_cpus=plan["detect_cpus"],
                batch_format="pyarrow",
                batch_size=cfg.batch_size,
            )
            pack_spec = cfg.pack
        ds = ds.map_batches(
            st.Encode,
            fn_constructor_kwargs={
                "pack_spec": pack_spec,
                "face_schema": schema,
                "splits": {"test": cfg.test_fraction},
                "synthetic_expression": cfg.synthetic_expression,
            },
            compute=ray.data.ActorPoolStrategy(size=plan["encode"]),
            batch_format="pyarrow",
            batch_size=4 * cfg.batch_size,
            num_gpus=1 if gpus else 0,
            num_cpus=plan["encode_cpus"],
        )
        ds = ds.map_batches(
            st.write_shard,
            batch_format="pyarrow",
            batch_size=None,
            fn_kwargs={"faces_staging": faces_stage, "errors_staging": errors_stage, "face_schema": schema},
        )
        with Counter("ingest", "inputs", len(todo)) as counter:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                for k in counts:
                    counts[k] += sum(batch.column(k).to_pylist())
                counter.update(sum(batch.column("face_inputs").to_pylist() + batch.column("error_rows").to_pylist()))

    print(f"ingest: committing {counts['face_rows']} faces, {counts['error_rows']} errors to {cfg.output}", flush=True)
    faces_commit = table.commit(faces_stage, faces_uri, "face_id", schema)
    errors_commit = table.commit(errors_stage, errors_uri, "input_id", ERROR_SCHEMA)
    # an input that failed before and has faces now (--retry-errors) leaves the error table
    recovered = table.read_keys(faces_uri, "source_uri") & table.read_keys(errors_uri, "source_uri")
    table.delete_rows(errors_uri, "source_uri", recovered)
    bank_words = write_expression_bank(faces_uri, storage.join(cfg.output, BANK_FILE), cfg.exemplars)
    accounted = counts["face_inputs"] + counts["error_rows"]
    summary = {
        "config": asdict(cfg),
        "run_id": run_id,
        "inputs": len(rows),
        "skipped_already_done": len(rows) - len(todo),
        "processed": len(todo),
        "inputs_with_faces": counts["face_inputs"],
        "face_rows": counts["face_rows"],
        "error_rows": counts["error_rows"],
        "accounted": accounted == len(todo),
        "face_table_rows": faces_commit.table_rows,
        "error_table_rows": errors_commit.table_rows - len(recovered),
        "recovered_errors": len(recovered),
        "expression_bank_words": bank_words,
        "seconds": round(time.monotonic() - t0, 2),
    }
    storage.write_bytes(storage.join(cfg.output, "run.json"), json.dumps(summary, indent=2).encode())
    return summary


def parse_args(argv: list[str] | None = None) -> IngestConfig:
    p = settings_parser(IngestConfig, __doc__, smoke_test="tiny run: at most 16 synthetic faces at 64 px")
    cfg, a = parse_settings(IngestConfig, p, argv)
    if a.smoke_test and cfg.synthetic:
        cfg = replace(cfg, synthetic=min(cfg.synthetic, 16), crop_size=64)
    if cfg.crop_size < 32:
        p.error(f"--crop-size {cfg.crop_size} is too small; use 32 or more")
    return cfg


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    quiet_ray_data(verbose_requested(cfg.verbose))
    summary = run(cfg)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=2))
    if not summary["accounted"]:
        print(
            f"error: {summary['processed']} inputs processed but {summary['inputs_with_faces']} gave faces and "
            f"{summary['error_rows']} gave errors; some inputs are unaccounted for",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
