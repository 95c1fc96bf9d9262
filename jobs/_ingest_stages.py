"""The stages of the ingest pipeline, as callables Ray Data maps over pyarrow batches.

Each stage takes and returns a pyarrow Table with an explicit schema, so batches that happen to
hold only errors (all-null face columns) still concatenate with the rest. An input that fails
becomes an error row at the stage where it failed and travels on untouched, so every input
reaches the writer as face rows or one error row.

Nothing here imports Ray: jobs/ingest.py wires these into a Dataset (and the tests call them
directly).
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pyarrow as pa

from sfsr.io import storage
from sfsr.io.images import ImageError, decode_image, encode_png
from sfsr.io.schema import ERROR_SCHEMA, face_row, input_id

# decoded source images: raw RGB bytes + shape, or an error
DECODED = pa.schema(
    [
        ("source_uri", pa.string()),
        ("identity_label", pa.string()),
        ("expression_label", pa.string()),
        ("pixels", pa.binary()),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
    ]
)

# one row per detected face (crop and mask as raw bytes), or one error row per failed input
FACES = pa.schema(
    [
        ("source_uri", pa.string()),
        ("identity_label", pa.string()),
        ("expression_label", pa.string()),
        ("face_index", pa.int32()),
        ("crop", pa.binary()),
        ("mask", pa.binary()),
        ("crop_size", pa.int32()),
        ("bbox", pa.list_(pa.float32(), 4)),
        ("landmarks", pa.list_(pa.float32(), 10)),
        ("align_matrix", pa.list_(pa.float32(), 6)),
        ("yaw", pa.float32()),
        ("pitch", pa.float32()),
        ("roll", pa.float32()),
        ("synth_params", pa.string()),
        ("stage", pa.string()),
        ("reason", pa.string()),
        ("message", pa.string()),
    ]
)


def _empty_row(schema: pa.Schema) -> dict:
    return {name: None for name in schema.names}


def _error(row: dict, schema: pa.Schema, stage: str, reason: str, message: str) -> dict:
    out = _empty_row(schema)
    for k in ("source_uri", "identity_label", "expression_label"):
        out[k] = row.get(k)
    out.update(stage=stage, reason=reason, message=message)
    return out


def read_and_decode(batch: pa.Table) -> pa.Table:
    """Stage 1 (CPU tasks): read each input's bytes and validate/decode them to RGB.

    Input columns: source_uri, and optionally `image` (bytes already in a table), identity_label,
    expression_label."""
    rows = []
    have_bytes = "image" in batch.column_names
    for row in batch.to_pylist():
        uri = row["source_uri"]
        try:
            data = row["image"] if have_bytes and row.get("image") is not None else storage.read_bytes(uri)
            image = decode_image(data, source=uri)
        except ImageError as e:
            rows.append(_error(row, DECODED, "decode", e.reason, str(e)))
            continue
        except storage.StorageError as e:
            rows.append(_error(row, DECODED, "read", "unreadable", str(e)))
            continue
        out = _empty_row(DECODED)
        out.update(
            source_uri=uri,
            identity_label=row.get("identity_label"),
            expression_label=row.get("expression_label"),
            pixels=image.tobytes(),
            height=image.shape[0],
            width=image.shape[1],
        )
        rows.append(out)
    return pa.Table.from_pylist(rows, schema=DECODED)


class DetectAlign:
    """Stage 2 (actor pool): detect, five points, pose, align, mask; one row per face."""

    def __init__(self, pack_spec: str, crop_size: int, min_face: int) -> None:
        from sfsr.faces.pack import open_pack  # built in the actor, never shipped in

        self.pack = open_pack(pack_spec, crop_size=crop_size)
        self.crop_size = crop_size
        self.min_face = min_face

    def __call__(self, batch: pa.Table) -> pa.Table:
        from sfsr.faces.analyze import analyze_image

        rows = []
        for row in batch.to_pylist():
            if row["stage"] is not None:
                rows.append(_error(row, FACES, row["stage"], row["reason"], row["message"]))
                continue
            image = np.frombuffer(row["pixels"], np.uint8).reshape(row["height"], row["width"], 3)
            try:
                faces = analyze_image(self.pack, image, self.crop_size)
            except Exception as e:  # noqa: BLE001 - a model failure on one input is that input's error row
                rows.append(
                    _error(row, FACES, "detect", "detector_failed", f"{row['source_uri']}: {type(e).__name__}: {e}")
                )
                continue
            big = [f for f in faces if min(f.bbox[2] - f.bbox[0], f.bbox[3] - f.bbox[1]) >= self.min_face]
            if not big:
                why = f"{len(faces)} face(s) smaller than --min-face {self.min_face} px" if faces else "no face found"
                reason = "face_too_small" if faces else "no_face"
                rows.append(_error(row, FACES, "detect", reason, f"{row['source_uri']}: {why}"))
                continue
            for i, f in enumerate(big):
                out = _empty_row(FACES)
                out.update(
                    source_uri=row["source_uri"],
                    identity_label=row["identity_label"],
                    expression_label=row["expression_label"],
                    face_index=i,
                    crop=f.crop.tobytes(),
                    mask=(f.mask.astype(np.uint8) * 255).tobytes(),
                    crop_size=self.crop_size,
                    bbox=f.bbox.tolist(),
                    landmarks=f.landmarks5.reshape(-1).tolist(),
                    align_matrix=f.align_matrix.reshape(-1).tolist(),
                    yaw=f.pose.yaw,
                    pitch=f.pose.pitch,
                    roll=f.pose.roll,
                )
                rows.append(out)
        return pa.Table.from_pylist(rows, schema=FACES)


def render_synthetic(batch: pa.Table, *, seed: int, n_identities: int, crop_size: int) -> pa.Table:
    """Stage 1+2 for --synthetic (CPU tasks): render procedural faces from their index.

    The renderer draws faces already aligned to the table's frame, so there is nothing to detect:
    landmarks are the template's, the matrix is the identity, pose and labels are ground truth."""
    from sfsr.faces.align import template
    from sfsr.synth.dataset import draw_labelled
    from sfsr.synth.factors import synth_params_json
    from sfsr.synth.render import render

    rows = []
    for row in batch.to_pylist():
        sample, word = draw_labelled(int(row["index"]), seed, n_identities, row["split"])
        image, mask = render(sample, crop_size)
        out = _empty_row(FACES)
        out.update(
            source_uri=f"synthetic://seed{seed}/{row['split']}/{int(row['index'])}",
            identity_label=f"synth-{sample.identity_id:05d}",
            # the word the expression was drawn from (None for faces drawn off the words), so the
            # expression bank gets a row per word (sfsr.synth.dataset)
            expression_label=word,
            face_index=0,
            crop=image.tobytes(),
            mask=mask.tobytes(),
            crop_size=crop_size,
            bbox=[0.0, 0.0, float(crop_size), float(crop_size)],
            landmarks=template(crop_size).reshape(-1).tolist(),
            align_matrix=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            yaw=sample.pose.yaw,
            pitch=sample.pose.pitch,
            roll=sample.pose.roll,
            synth_params=synth_params_json(sample),
        )
        rows.append(out)
    return pa.Table.from_pylist(rows, schema=FACES)


class Encode:
    """Stage 3 (actor pool, GPU when there is one): identity and expression of aligned crops."""

    def __init__(
        self, pack_spec: str, face_schema: pa.Schema, splits: dict[str, float], synthetic_expression: str = "factors"
    ) -> None:
        from sfsr.faces.pack import open_pack

        # synthetic faces: "factors" stores the renderer's exact expression (the judge reads it
        # back with some error, and a model conditioned on the readings learns that blur),
        # "judge" the judge's reading; the two live in the same 7-factor space
        self.exact_expression = pack_spec == "synthetic" and synthetic_expression == "factors"

        self.pack = open_pack(pack_spec) if pack_spec != "synthetic" else None
        if self.pack is None:
            from sfsr.synth.judges import load_judges

            self.judges = load_judges()
        self.schema = face_schema
        self.test_fraction = splits.get("test", 0.0)

    def _encode(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.pack is not None:
            from sfsr.faces.analyze import encode_crops

            return encode_crops(self.pack, crops)
        return self.judges.identity_embedding_np(crops), self.judges.expression_np(crops)

    def _split(self, row: dict) -> str:
        if row["source_uri"].startswith("synthetic://"):
            return row["source_uri"].split("/")[3]
        # identity-disjoint when identities are known, so test faces are of unseen people
        key = row["identity_label"] or row["source_uri"]
        h = int(input_id(key)[:8], 16) % 10_000
        return "test" if h < self.test_fraction * 10_000 else "train"

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        ok = [r for r in rows if r["stage"] is None]
        errors = [r for r in rows if r["stage"] is not None]
        out = []
        if ok:
            size = ok[0]["crop_size"]
            crops = np.stack([np.frombuffer(r["crop"], np.uint8).reshape(size, size, 3) for r in ok])
            identity, expression = self._encode(crops)
            if self.exact_expression:
                expression = np.stack([_synth_factors(r["synth_params"]) for r in ok])
            finite = np.isfinite(identity).all(1) & np.isfinite(expression).all(1)
            for r, good in zip(ok, finite):
                if not good:  # never let a NaN vector into the table (validate_table refuses it)
                    errors.append(
                        _error(
                            r,
                            FACES,
                            "encode",
                            "non_finite",
                            f"{r['source_uri']} face {r['face_index']}: the encoders returned NaN or inf for this crop",
                        )
                    )
            for r, crop, ident, expr, good in zip(ok, crops, identity, expression, finite):
                if not good:
                    continue
                mask = np.frombuffer(r["mask"], np.uint8).reshape(size, size)
                row = face_row(
                    self.schema,
                    source_uri=r["source_uri"],
                    face_index=r["face_index"],
                    split=self._split(r),
                    image_png=encode_png(crop),
                    face_mask_png=encode_png(mask),
                    bbox=r["bbox"],
                    landmarks=r["landmarks"],
                    align_matrix=r["align_matrix"],
                    identity=ident,
                    expression=expr,
                    yaw=r["yaw"],
                    pitch=r["pitch"],
                    roll=r["roll"],
                    expression_label=r["expression_label"],
                    identity_label=r["identity_label"],
                    synth_params=r["synth_params"],
                )
                out.append({**row, "error": None})
        for r in errors:
            out.append({"source_uri": r["source_uri"], "error": {k: r[k] for k in ("stage", "reason", "message")}})
        return pa.Table.from_pylist(out, schema=encoded_schema(self.schema))


def _synth_factors(params_json: str) -> np.ndarray:
    from sfsr.synth.factors import sample_from_params

    return sample_from_params(json.loads(params_json)).expression_array


def encoded_schema(face_schema: pa.Schema) -> pa.Schema:
    """Stage 3's output: the face table's columns (nullable here) plus an error struct."""
    fields = [pa.field(f.name, f.type, nullable=True) for f in face_schema]
    err = pa.struct([("stage", pa.string()), ("reason", pa.string()), ("message", pa.string())])
    return pa.schema(fields + [pa.field("error", err)], metadata=face_schema.metadata)


def write_shard(batch: pa.Table, *, faces_staging: str, errors_staging: str, face_schema: pa.Schema) -> pa.Table:
    """Stage 4 (CPU tasks): split a batch into face rows and error rows and stage each as one
    Parquet shard; return the counts, which the driver sums for the accounting."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    is_err = pc.is_valid(batch.column("error"))
    faces = batch.filter(pc.invert(is_err)).drop_columns(["error"]).cast(face_schema)
    errs = batch.filter(is_err)
    shard = uuid.uuid4().hex
    if faces.num_rows:
        storage.write_atomic(storage.join(faces_staging, f"{shard}.parquet"), lambda f: pq.write_table(faces, f))
    if errs.num_rows:
        e = errs.column("error").combine_chunks()
        uris = errs.column("source_uri").to_pylist()
        table = pa.table(
            {
                "input_id": [input_id(u) for u in uris],
                "source_uri": uris,
                "stage": e.field("stage"),
                "reason": e.field("reason"),
                "message": e.field("message"),
            },
            schema=ERROR_SCHEMA,
        )
        storage.write_atomic(storage.join(errors_staging, f"{shard}.parquet"), lambda f: pq.write_table(table, f))
    return pa.table(
        {
            "face_rows": [faces.num_rows],
            "error_rows": [errs.num_rows],
            "face_inputs": [len(set(faces.column("source_uri").to_pylist()))],
        }
    )
