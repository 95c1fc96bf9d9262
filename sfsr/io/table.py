"""An idempotent Parquet table writer: stage shards, then commit them by key.

Ray Data's write_parquet appends, so writing a re-run's output straight into a table would
duplicate every row. Instead a job writes its shards to a staging prefix unique to the run
(`staging_uri(table_uri, run_id)`), and `commit` merges them into the table:

- rows are keyed by one string column; a staged row replaces any table row with the same key
  (new wins), so committing the same inputs twice neither duplicates nor loses rows;
- keys are hash-bucketed into a fixed number of part files, `part-BBBBB-of-NNNNN.parquet`; a key
  lives in exactly one part, and a commit rewrites only the parts whose buckets it touches;
- each part is replaced all-or-nothing (temp file + rename locally, one PUT on S3), so a commit
  interrupted at any point leaves every part either old or new: never a duplicate, never a lost
  old row. The staging prefix is deleted only after every part is written, so re-running the
  commit finishes the job;
- every staged file is read and validated before the table is touched: a partial or malformed
  staged file fails the commit with the table unchanged and the staging kept.

The table folder holds nothing but part files, so `ray.data.read_parquet(table_uri)` and
pyarrow read it directly. One committer per table at a time: there is no lock (S3 has none).
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sfsr.io import storage
from sfsr.io.schema import TableSchemaError, read_parquet, table_files, validate_table

DEFAULT_BUCKETS = 16
META_KEY = b"sfsr_table_key"
META_BUCKETS = b"sfsr_table_buckets"
_PART = re.compile(r"^part-(\d{5})-of-(\d{5})\.parquet$")
# Row groups of about this many bytes: big enough for fast scans, small enough that Ray Data
# can split a part into several read tasks.
ROW_GROUP_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class CommitResult:
    table_uri: str
    staged_files: int
    staged_rows: int  # rows read from staging, before de-duplication
    inserted: int  # keys new to the table
    replaced: int  # keys already in the table, overwritten by the staged row
    staged_duplicates: int  # rows dropped because a later staged row had the same key
    parts_rewritten: int
    table_rows: int  # rows in the table after the commit


def staging_uri(table_uri: str, run_id: str | None = None) -> str:
    """A staging prefix for one run, beside (never inside) the table folder."""
    return storage.join(table_uri.rstrip("/") + ".staging", run_id or uuid.uuid4().hex)


def bucket_of(keys: list[str], num_buckets: int) -> np.ndarray:
    """(N,) int64 bucket per key: first 8 bytes of sha256, so every process agrees."""
    return np.fromiter(
        (int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "big") % num_buckets for k in keys),
        dtype=np.int64,
        count=len(keys),
    )


def _name(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _part_name(bucket: int, num_buckets: int) -> str:
    return f"part-{bucket:05d}-of-{num_buckets:05d}.parquet"


def _existing_parts(table_uri: str) -> dict[int, tuple[str, int]]:
    """{bucket: (uri, num_buckets)} for the table's part files; TableSchemaError on strays."""
    parts: dict[int, tuple[str, int]] = {}
    for uri in table_files(table_uri):
        m = _PART.match(_name(uri))
        if not m:
            raise TableSchemaError(
                f"{table_uri}: unexpected file {_name(uri)} in the table folder; tables are written "
                "only by sfsr.io.table.commit (write shards to a staging prefix); move it away"
            )
        parts[int(m.group(1))] = (uri, int(m.group(2)))
    counts = {n for _, n in parts.values()}
    if len(counts) > 1:
        raise TableSchemaError(
            f"{table_uri}: part files disagree on the bucket count {sorted(counts)}; "
            "the folder mixes two tables, rebuild it"
        )
    return parts


def _read(uri: str, columns: list[str] | None = None) -> pa.Table:
    return read_parquet(
        uri,
        lambda path, fs: pq.read_table(path, filesystem=fs, columns=columns),
        "an interrupted write? delete it and re-run the job that wrote it",
    )


def _table_meta(schema: pa.Schema) -> dict[bytes, bytes]:
    return {k: v for k, v in (schema.metadata or {}).items() if k not in (META_KEY, META_BUCKETS)}


def _conform(table: pa.Table, schema: pa.Schema, source: str) -> pa.Table:
    """Staged shard -> exactly `schema` (column order, types, non-null checks)."""
    have, want = set(table.column_names), set(schema.names)
    if have != want:
        raise TableSchemaError(
            f"{source}: columns differ from the table schema: missing "
            f"{sorted(want - have)}, unexpected {sorted(have - want)}"
        )
    try:
        out = table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
        raise TableSchemaError(f"{source}: does not fit the table schema ({e})") from e
    validate_table(out, schema, name=source)
    return out


def _last_per_key(table: pa.Table, key: str) -> pa.Table:
    """Keep the last row of each key (later staged rows win), ordered by key."""
    keys = table.column(key).to_pylist()
    last = {k: i for i, k in enumerate(keys)}
    order = sorted(last)  # deterministic part content, whatever the staging order
    return table.take(pa.array([last[k] for k in order], pa.int64()))


def _write_part(uri: str, table: pa.Table, schema: pa.Schema, key: str, num_buckets: int) -> None:
    meta = dict(_table_meta(schema))
    meta[META_KEY] = key.encode()
    meta[META_BUCKETS] = str(num_buckets).encode()
    table = table.replace_schema_metadata(meta)
    row_bytes = max(1, table.nbytes // max(1, table.num_rows))
    rows_per_group = max(1, ROW_GROUP_BYTES // row_bytes)
    storage.write_atomic(uri, lambda f: pq.write_table(table, f, row_group_size=rows_per_group))


def _check_compatible(table_uri: str, part_uri: str, schema: pa.Schema, key: str) -> None:
    existing = read_parquet(part_uri, lambda path, fs: pq.read_schema(path, filesystem=fs), "restore or delete it")
    if not existing.equals(schema, check_metadata=False):
        raise TableSchemaError(
            f"{table_uri}: the table's columns differ from this commit's schema; "
            "write to a new table (or delete this one) instead of mixing schemas"
        )
    old_meta, new_meta = _table_meta(existing), _table_meta(schema)
    if old_meta != new_meta:
        diff = sorted(k.decode() for k in set(old_meta) | set(new_meta) if old_meta.get(k) != new_meta.get(k))
        raise TableSchemaError(
            f"{table_uri}: the table was written with different {', '.join(diff)} "
            f"({ {k: old_meta.get(k.encode(), b'').decode() for k in diff} } vs "
            f"{ {k: new_meta.get(k.encode(), b'').decode() for k in diff} }); write to a new table"
        )
    old_key = (existing.metadata or {}).get(META_KEY, b"").decode()
    if old_key != key:
        raise TableSchemaError(f"{table_uri}: the table is keyed by {old_key!r}, not {key!r}")


def commit(
    staging_uri: str,
    table_uri: str,
    key: str,
    schema: pa.Schema,
    *,
    num_buckets: int = DEFAULT_BUCKETS,
    delete_staging: bool = True,
) -> CommitResult:
    """Merge every Parquet file under `staging_uri` into the table at `table_uri`.

    `num_buckets` applies when the table is created; an existing table keeps its own count.
    Raises TableSchemaError (table unchanged, staging kept) when a staged file is unreadable or
    does not fit `schema`, or when the table was written with a different schema.
    """
    if key not in schema.names or not schema.field(key).type.equals(pa.string()):
        raise TableSchemaError(f"commit: key column {key!r} must be a string column of the schema")
    parts = _existing_parts(table_uri)
    if parts:
        num_buckets = next(iter(parts.values()))[1]
        _check_compatible(table_uri, next(iter(parts.values()))[0], schema, key)
    staged = [f for f in storage.list_files(staging_uri, (".parquet",)) if not _name(f).startswith((".", "_"))]

    staged_rows = 0
    with tempfile.TemporaryDirectory(prefix="sfsr-commit-") as spill_dir:
        # Pass 1: read and validate every staged file, spilling rows per bucket to local disk, so
        # memory holds one staged file at a time and nothing in the table changes on bad input.
        writers: dict[int, pq.ParquetWriter] = {}
        try:
            for uri in staged:
                shard = _conform(_read(uri), schema, uri)
                staged_rows += shard.num_rows
                buckets = bucket_of(shard.column(key).to_pylist(), num_buckets)
                for b in np.unique(buckets):
                    if int(b) not in writers:
                        writers[int(b)] = pq.ParquetWriter(str(Path(spill_dir) / f"{int(b)}.parquet"), schema)
                    writers[int(b)].write_table(shard.filter(pa.array(buckets == b)))
        finally:
            for w in writers.values():
                w.close()

        # Pass 2: per touched bucket, old rows minus replaced keys, plus staged rows.
        inserted = replaced = kept_rows = 0
        for b in sorted(writers):
            new = _last_per_key(pq.read_table(str(Path(spill_dir) / f"{b}.parquet")), key)
            kept_rows += new.num_rows
            part_uri = storage.join(table_uri, _part_name(b, num_buckets))
            if b in parts:
                old = _read(parts[b][0]).select(schema.names).cast(schema)
                is_new = pc.is_in(old.column(key), value_set=new.column(key).combine_chunks())
                old_kept = old.filter(pc.invert(is_new))
                replaced += old.num_rows - old_kept.num_rows
                merged = pa.concat_tables([old_kept, new])
                merged = merged.take(pc.sort_indices(merged, [(key, "ascending")]))
            else:
                merged = new
            inserted += new.num_rows
            _write_part(part_uri, merged, schema, key, num_buckets)
    inserted -= replaced

    if delete_staging:
        storage.delete_prefix(staging_uri)
    _clean_temp_files(table_uri)
    return CommitResult(
        table_uri=table_uri,
        staged_files=len(staged),
        staged_rows=staged_rows,
        inserted=inserted,
        replaced=replaced,
        staged_duplicates=staged_rows - kept_rows,
        parts_rewritten=len(writers),
        table_rows=_count_rows(table_uri),
    )


def _clean_temp_files(table_uri: str) -> None:
    """Remove leftovers of interrupted local part writes (readers already skip them)."""
    if storage.is_s3(table_uri):
        return  # S3 writes leave no partial objects
    for uri in storage.list_files(table_uri, (".tmp",)):
        if _name(uri).startswith(".part-"):
            storage.delete(uri)


def _count_rows(table_uri: str) -> int:
    read = lambda path, fs: pq.read_metadata(path, filesystem=fs).num_rows  # noqa: E731
    return sum(read_parquet(uri, read, "delete it and re-run the job that wrote it") for uri in table_files(table_uri))


def read_keys(table_uri: str, key: str) -> set[str]:
    """Every value of column `key` in the table (empty when the table does not exist yet)."""
    keys: set[str] = set()
    for uri in table_files(table_uri):
        keys.update(_read(uri, columns=[key]).column(key).to_pylist())
    return keys


def read_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """The whole table (a folder of parts, or one Parquet file) in memory, parts in bucket order."""
    files = table_files(uri)
    if not files:
        raise storage.StorageNotFoundError(f"{uri}: no Parquet files there; check the path or run the job first")
    return pa.concat_tables([_read(f, columns) for f in files])


def delete_rows(table_uri: str, column: str, values: set[str]) -> int:
    """Remove every row whose `column` is in `values`; returns how many went.

    Each touched part is rewritten all-or-nothing, like a commit (used when an input that once
    failed now succeeds, so it leaves the error table as it enters the face table)."""
    if not values:
        return 0
    removed = 0
    value_set = pa.array(sorted(values), pa.string())
    for uri in table_files(table_uri):
        part = _read(uri)
        hit = pc.is_in(part.column(column), value_set=value_set)
        n = pc.sum(hit).as_py() or 0
        if not n:
            continue
        meta = part.schema.metadata or {}
        key = meta.get(META_KEY, b"").decode()
        buckets = int(meta.get(META_BUCKETS, b"0") or 0)
        _write_part(uri, part.filter(pc.invert(hit)), part.schema, key, buckets)
        removed += n
    return removed
