"""The face table and its error table: one pyarrow schema each, defined here and nowhere else.

DESIGN.md, "The face table": one row per detected face. The schema carries its own description in
its metadata (schema version, crop size, encoder names and dimensions), so a reader can check a
table against the model it is about to use before reading a single row (`read_table_info`).

Rows can be built with `pa.Table.from_pylist(rows, schema=schema)`; numpy float32 arrays are
accepted for the fixed-size list columns. Required columns are declared non-nullable; note that
pyarrow does not enforce that when building a table, so writers call `validate_table`
(table.commit does).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from sfsr.io import storage

SCHEMA_VERSION = 1

# Metadata keys (bytes, as pyarrow stores them).
META_VERSION = b"sfsr_schema_version"
META_KIND = b"sfsr_table"  # "faces" or "errors"
_INT_META = ("crop_size", "identity_dim", "expression_dim")
_STR_META = ("identity_model", "expression_model")


class TableSchemaError(ValueError):
    """A table does not have the schema, version or dimensions the reader needs."""


T = TypeVar("T")


def read_parquet(uri: str, read: Callable[[str, pafs.FileSystem], T], remedy: str) -> T:
    """`read(path, filesystem)` on the Parquet file `uri` (pq.read_table, read_metadata, ...),
    with its errors named: bytes that are not (complete) Parquet -> TableSchemaError ending in
    `remedy`; I/O (missing file, unreachable endpoint, refused credentials) -> StorageError."""
    fs, path = storage.arrow_filesystem(uri)
    try:
        return read(path, fs)
    except pa.ArrowInvalid as e:
        raise TableSchemaError(f"{uri}: not a readable Parquet file ({e}); {remedy}") from e
    except OSError as e:
        raise storage.arrow_error(uri, "read", e) from e


def face_id(source_uri: str, face_index: int) -> str:
    """Stable id of face `face_index` in `source_uri`: 32 hex chars of sha256 (same in every process)."""
    return hashlib.sha256(f"{source_uri}\x00{int(face_index)}".encode()).hexdigest()[:32]


def input_id(source_uri: str) -> str:
    """Stable id of one input file (the error table's key)."""
    return hashlib.sha256(source_uri.encode()).hexdigest()[:32]


def _vec(n: int) -> pa.DataType:
    return pa.list_(pa.float32(), n)


def face_table_schema(
    identity_dim: int,
    expression_dim: int,
    *,
    crop_size: int,
    identity_model: str,
    expression_model: str,
    framing: str = "",
) -> pa.Schema:
    """The face table's schema for one encoder pair, crop size and framing (all in the metadata).
    framing: how crops and masks were made (sfsr.faces.analyze.framing_name for photos,
    "synth-render" for procedural faces); models trained on the table record it."""
    for name, value in (("identity_dim", identity_dim), ("expression_dim", expression_dim), ("crop_size", crop_size)):
        if int(value) <= 0:
            raise ValueError(f"face_table_schema: {name} must be positive, got {value}")
    labels = pa.struct(
        [
            pa.field("identity_label", pa.string()),
            pa.field("expression_word", pa.string()),
            pa.field("synth_params", pa.string()),  # JSON text: synthetic generator factors
        ]
    )
    fields = [
        pa.field("face_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("face_index", pa.int32(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),  # PNG, RGB, crop_size x crop_size
        pa.field("bbox", _vec(4), nullable=False),  # x1, y1, x2, y2 in source pixels
        pa.field("landmarks", _vec(10), nullable=False),  # 5 x (x, y) in source pixels
        pa.field("align_matrix", _vec(6), nullable=False),  # 2x3 affine, source -> crop, row-major
        pa.field("identity", _vec(identity_dim), nullable=False),
        pa.field("identity_model", pa.string(), nullable=False),
        pa.field("expression", _vec(expression_dim), nullable=False),
        pa.field("expression_model", pa.string(), nullable=False),
        pa.field("expression_label", pa.string(), nullable=True),
        pa.field("yaw", pa.float32(), nullable=False),  # degrees
        pa.field("pitch", pa.float32(), nullable=False),
        pa.field("roll", pa.float32(), nullable=False),
        pa.field("face_mask", pa.binary(), nullable=False),  # PNG, 8-bit grey, crop_size x crop_size
        pa.field("labels", labels, nullable=True),
    ]
    meta = {
        META_VERSION: str(SCHEMA_VERSION).encode(),
        META_KIND: b"faces",
        b"crop_size": str(int(crop_size)).encode(),
        b"identity_model": identity_model.encode(),
        b"expression_model": expression_model.encode(),
        b"identity_dim": str(int(identity_dim)).encode(),
        b"expression_dim": str(int(expression_dim)).encode(),
        b"framing": framing.encode(),
    }
    return pa.schema(fields, metadata=meta)


_PNG = b"\x89PNG\r\n\x1a\n"
SPLITS = ("train", "test")
_VECTOR_FIX = {  # what to do when an encoder vector does not fit the table
    "identity": "encode with the table's identity model, or ingest into a new table",
    "expression": "encode with the table's expression model, or ingest into a new table",
}


def face_row(
    schema: pa.Schema,
    *,
    source_uri: str,
    face_index: int,
    split: str,
    image_png: bytes,
    face_mask_png: bytes,
    bbox: Any,
    landmarks: Any,
    align_matrix: Any,
    identity: Any,
    expression: Any,
    yaw: float,
    pitch: float,
    roll: float,
    expression_label: str | None = None,
    identity_label: str | None = None,
    synth_params: str | None = None,
) -> dict[str, Any]:
    """One face-table row (a dict in `schema`'s column order) from its parts, checked against
    `schema` (from face_table_schema): face_id derived from (source_uri, face_index), the encoder
    names from the schema's metadata, vectors (array-likes) flattened to float32 lists of the
    schema's lengths; identity and expression must be finite (validate_table refuses NaN there);
    labels.expression_word is the expression label.
    A wrong part raises ValueError naming the field and what it should be."""
    if (schema.metadata or {}).get(META_KIND) != b"faces":
        raise ValueError("face_row: `schema` is not a face-table schema; build it with face_table_schema")
    where = f"face row {source_uri!r} face {face_index}"

    def vector(field: str, value: Any) -> list[float]:
        want = schema.field(field).type.list_size
        a = np.asarray(value, np.float32).reshape(-1)
        if a.size != want:
            raise ValueError(
                f"{where}: {field} has {a.size} values, the face table expects {want}; "
                f"{_VECTOR_FIX.get(field, 'give it in the layout of face_table_schema')}"
            )
        if field in _VECTOR_FIX and not np.isfinite(a).all():
            raise ValueError(f"{where}: {field} holds NaN or infinite values; the encoder failed on this crop, drop it")
        return a.tolist()

    def text(field: str, value: Any) -> str | None:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}: {field} must be a string or None, got {type(value).__name__} {value!r}")
        return value

    def png(field: str, value: Any) -> bytes:
        if not isinstance(value, (bytes, bytearray)):
            raise ValueError(
                f"{where}: {field} must be PNG bytes, got {type(value).__name__}; "
                "encode it with sfsr.io.images.encode_png"
            )
        if not value.startswith(_PNG):
            raise ValueError(
                f"{where}: {field} is not PNG data (starts {bytes(value[:8])!r}); "
                "encode it with sfsr.io.images.encode_png"
            )
        return bytes(value)

    def angle(field: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise ValueError(f"{where}: {field} must be a number of degrees, got {type(value).__name__} {value!r}")
        return float(value)

    if not isinstance(source_uri, str) or not source_uri:
        raise ValueError(f"{where}: source_uri must be a non-empty string, got {source_uri!r}")
    if isinstance(face_index, bool) or not isinstance(face_index, (int, np.integer)) or not 0 <= face_index < 2**31:
        raise ValueError(f"{where}: face_index must be a non-negative int, got {face_index!r}")
    if split not in SPLITS:
        raise ValueError(f"{where}: split is {split!r}; use one of {SPLITS}")
    row = {
        "face_id": face_id(source_uri, int(face_index)),
        "source_uri": source_uri,
        "face_index": int(face_index),
        "split": split,
        "image": png("image_png", image_png),
        "bbox": vector("bbox", bbox),
        "landmarks": vector("landmarks", landmarks),
        "align_matrix": vector("align_matrix", align_matrix),
        "identity": vector("identity", identity),
        "identity_model": schema.metadata[b"identity_model"].decode(),
        "expression": vector("expression", expression),
        "expression_model": schema.metadata[b"expression_model"].decode(),
        "expression_label": text("expression_label", expression_label),
        "yaw": angle("yaw", yaw),
        "pitch": angle("pitch", pitch),
        "roll": angle("roll", roll),
        "face_mask": png("face_mask_png", face_mask_png),
        "labels": {
            "identity_label": text("identity_label", identity_label),
            "expression_word": expression_label,
            "synth_params": text("synth_params", synth_params),
        },
    }
    assert list(row) == schema.names, "face_row and face_table_schema list different columns"
    return row


ERROR_SCHEMA = pa.schema(
    [
        pa.field("input_id", pa.string(), nullable=False),  # input_id(source_uri)
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),  # e.g. "decode", "detect", "encode"
        pa.field("reason", pa.string(), nullable=False),  # stable code, e.g. ImageError.reason
        pa.field("message", pa.string(), nullable=False),  # what was wrong and what to do
    ],
    metadata={META_VERSION: str(SCHEMA_VERSION).encode(), META_KIND: b"errors"},
)


@dataclass(frozen=True)
class TableInfo:
    """What a reader needs to know about a table, from its Parquet footers alone."""

    uri: str
    kind: str  # "faces" or "errors"
    schema_version: int
    num_rows: int
    files: tuple[str, ...]
    schema: pa.Schema
    crop_size: int | None = None
    identity_model: str | None = None
    expression_model: str | None = None
    identity_dim: int | None = None
    expression_dim: int | None = None
    framing: str | None = None  # how crops and masks were made; None for tables written before it was recorded


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1] or uri


def table_files(uri: str) -> list[str]:
    """The Parquet files of a table folder, or [uri] for a single Parquet file."""
    # Skip names starting with "." or "_" (temp files, markers), as pyarrow and Ray Data do.
    files = [f for f in storage.list_files(uri, (".parquet",)) if not _name(f).startswith((".", "_"))]
    if not files and uri.endswith(".parquet") and storage.exists(uri):
        return [uri]
    return files


def info_from_schema(uri: str, schema: pa.Schema, num_rows: int = 0, files: tuple[str, ...] = ()) -> TableInfo:
    """TableInfo from a schema's metadata; TableSchemaError if it is not an sfsr table."""
    meta = schema.metadata or {}
    if META_VERSION not in meta:
        raise TableSchemaError(
            f"{_name(uri)}: no {META_VERSION.decode()} in the Parquet metadata, so it was not written by "
            "sfsr (or was rewritten by a tool that dropped the metadata); re-run ingest to rebuild it"
        )
    version = int(meta[META_VERSION])
    if version != SCHEMA_VERSION:
        raise TableSchemaError(
            f"{_name(uri)}: schema version {version}, this code reads version {SCHEMA_VERSION}; "
            "re-run ingest with this version of sfsr to rebuild the table"
        )
    kind = meta.get(META_KIND, b"faces").decode()
    extra: dict = {}
    if kind == "faces":
        try:
            extra = {k: int(meta[k.encode()]) for k in _INT_META}
            extra.update({k: meta[k.encode()].decode() for k in _STR_META})
            extra["framing"] = meta.get(b"framing", b"").decode() or None  # tables before it: unknown
        except (KeyError, ValueError) as e:
            raise TableSchemaError(
                f"{_name(uri)}: face-table metadata is missing or malformed ({e}); re-run ingest"
            ) from None
        for column, key in (("identity", "identity_dim"), ("expression", "expression_dim")):
            idx = schema.get_field_index(column)
            size = getattr(schema.field(idx).type, "list_size", None) if idx >= 0 else None
            if size != extra[key]:
                raise TableSchemaError(
                    f"{_name(uri)}: column {column} has {size} values per row but the metadata says "
                    f"{key}={extra[key]}; the table is inconsistent, re-run ingest"
                )
    return TableInfo(uri=uri, kind=kind, schema_version=version, num_rows=num_rows, files=files, schema=schema, **extra)


def check_table_info(
    info: TableInfo,
    *,
    identity_dim: int | None = None,
    expression_dim: int | None = None,
    identity_model: str | None = None,
    expression_model: str | None = None,
    crop_size: int | None = None,
) -> None:
    """Raise TableSchemaError when the table does not match what the caller's models expect."""
    name = _name(info.uri)
    fix = "re-run ingest with the same face pack"
    for column, have, want in (
        ("identity", info.identity_dim, identity_dim),
        ("expression", info.expression_dim, expression_dim),
    ):
        if want is not None and have != want:
            raise TableSchemaError(
                f"{name}: column {column} has {have} values per row, this model expects {want}; {fix}"
            )
    for column, have, want in (
        ("identity_model", info.identity_model, identity_model),
        ("expression_model", info.expression_model, expression_model),
    ):
        if want is not None and have != want:
            raise TableSchemaError(f"{name}: {column} is {have!r}, this model expects {want!r}; {fix}")
    if crop_size is not None and info.crop_size != crop_size:
        raise TableSchemaError(
            f"{name}: crops are {info.crop_size} px, this model expects {crop_size} px; "
            f"re-run ingest with --crop-size {crop_size}"
        )


def read_table_info(uri: str, **expected: int | str | None) -> TableInfo:
    """Read a table's (folder of Parquet files, or one file) description from its footers.

    Keyword arguments (identity_dim, expression_dim, identity_model, expression_model, crop_size)
    are checked with check_table_info.
    """
    files = table_files(uri)
    if not files:
        raise storage.StorageNotFoundError(f"{uri}: no Parquet files there; check the path or run ingest first")
    infos = []
    for f in files:
        md = read_parquet(f, lambda path, fs: pq.read_metadata(path, filesystem=fs), "delete it or re-run the job")
        infos.append((f, md.schema.to_arrow_schema(), md.num_rows))
    first_file, schema, _ = infos[0]
    for f, other, _ in infos[1:]:
        if not other.equals(schema, check_metadata=False) or (other.metadata or {}).get(META_VERSION) != (
            schema.metadata or {}
        ).get(META_VERSION):
            raise TableSchemaError(
                f"{uri}: {_name(f)} and {_name(first_file)} have different schemas; "
                "the table mixes runs of different versions, re-run ingest into a new table"
            )
    info = info_from_schema(uri, schema, sum(n for _, _, n in infos), tuple(files))
    check_table_info(info, **expected)
    return info


def validate_table(table: pa.Table, schema: pa.Schema, *, name: str = "table") -> None:
    """Raise TableSchemaError unless `table` has `schema`'s columns and types, no nulls in
    non-nullable columns, and finite values in the identity and expression vectors."""
    have, want = set(table.column_names), set(schema.names)
    if have != want:
        raise TableSchemaError(
            f"{name}: columns differ from the schema: missing {sorted(want - have)}, unexpected "
            f"{sorted(have - want)}; build rows with the schema from sfsr.io.schema"
        )
    for f in schema:
        col = table.column(f.name)
        if not col.type.equals(f.type):
            raise TableSchemaError(f"{name}: column {f.name} is {col.type}, the schema says {f.type}")
        if not f.nullable and col.null_count:
            raise TableSchemaError(f"{name}: column {f.name} has {col.null_count} null values; it is required")
        if f.name in ("identity", "expression") and len(col):
            values = pc.list_flatten(col)
            bad = len(values) - pc.sum(pc.is_finite(values)).as_py() if len(values) else 0
            if bad:
                raise TableSchemaError(
                    f"{name}: column {f.name} has {bad} NaN or infinite values; the encoder failed on some crops"
                )
