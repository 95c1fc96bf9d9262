"""table.commit: idempotent, keyed, crash-safe merging of staged shards into a bucketed table."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sfsr.io import schema as S
from sfsr.io import storage, table
from sfsr.io.schema import ERROR_SCHEMA, TableSchemaError
from tests.fixtures.tables import err_rows


def stage(staging: str, *shards: list[dict], schema: pa.Schema = ERROR_SCHEMA) -> None:
    """Write shards the way a Ray job would: plain parquet files, schema without our metadata."""
    for i, rows in enumerate(shards):
        t = pa.Table.from_pylist(rows, schema=schema).replace_schema_metadata(None)
        storage.write_atomic(storage.join(staging, f"shard-{i:03d}.parquet"), lambda f, t=t: pq.write_table(t, f))


def as_sorted_rows(t: pa.Table) -> list[dict]:
    return sorted(t.to_pylist(), key=lambda r: r["input_id"])


def test_commit_then_recommit_same_rows_is_idempotent(tmp_path):
    tbl, rows = str(tmp_path / "errors"), err_rows(range(100))
    st = table.staging_uri(tbl, "run1")
    assert st.startswith(tbl + ".staging") and not st.startswith(tbl + "/")
    stage(st, rows[:40], rows[40:70], rows[70:])
    r1 = table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    assert (r1.staged_files, r1.staged_rows, r1.inserted, r1.replaced, r1.table_rows) == (3, 100, 100, 0, 100)
    assert not storage.exists(st)  # staging removed after the commit
    first = table.read_table(tbl)
    assert as_sorted_rows(first) == rows
    names = sorted(os.listdir(tbl))
    assert (
        all(n.startswith("part-") and n.endswith("-of-00016.parquet") for n in names)
        and len(names) == r1.parts_rewritten
    )

    st2 = table.staging_uri(tbl, "run2")
    stage(st2, rows[50:], rows[:50])  # same rows, different sharding
    r2 = table.commit(st2, tbl, "input_id", ERROR_SCHEMA)
    assert (r2.inserted, r2.replaced, r2.table_rows) == (0, 100, 100)
    assert table.read_table(tbl).equals(first)  # same content, same order, byte-for-byte
    assert table.read_keys(tbl, "input_id") == {r["input_id"] for r in rows}
    # The folder is a plain Parquet dataset: readers that know nothing of sfsr see the same rows.
    assert pq.read_table(tbl).num_rows == 100


def test_overlapping_commit_is_a_union_and_new_rows_win(tmp_path):
    tbl = str(tmp_path / "t")
    st = table.staging_uri(tbl)
    stage(st, err_rows(range(0, 60)))
    table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    st = table.staging_uri(tbl)
    stage(st, err_rows(range(40, 100), message="new"))
    r = table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    assert (r.inserted, r.replaced, r.table_rows) == (40, 20, 100)
    got = {row["input_id"]: row["message"] for row in table.read_table(tbl).to_pylist()}
    assert len(got) == 100
    assert got["k0039"] == "m39" and got["k0040"] == "new40" and got["k0099"] == "new99"


def test_commit_rewrites_only_touched_parts(tmp_path):
    tbl = str(tmp_path / "t")
    st = table.staging_uri(tbl)
    stage(st, err_rows(range(200)))
    table.commit(st, tbl, "input_id", ERROR_SCHEMA, num_buckets=8)
    before = {n: os.stat(os.path.join(tbl, n)).st_mtime_ns for n in os.listdir(tbl)}
    assert len(before) == 8
    st = table.staging_uri(tbl)
    stage(st, err_rows([7], message="changed"))
    r = table.commit(st, tbl, "input_id", ERROR_SCHEMA, num_buckets=32)  # existing count (8) wins
    after = {n: os.stat(os.path.join(tbl, n)).st_mtime_ns for n in os.listdir(tbl)}
    assert r.parts_rewritten == 1 and set(after) == set(before)
    changed = [n for n in before if before[n] != after[n]]
    bucket = int(table.bucket_of(["k0007"], 8)[0])
    assert changed == [f"part-{bucket:05d}-of-00008.parquet"]


def test_duplicate_keys_in_staging_later_file_wins(tmp_path):
    tbl = str(tmp_path / "t")
    st = table.staging_uri(tbl)
    stage(st, err_rows(range(5), message="first"), err_rows(range(3), message="second"))
    r = table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    assert (r.staged_rows, r.staged_duplicates, r.table_rows) == (8, 3, 5)
    got = {row["input_id"]: row["message"] for row in table.read_table(tbl).to_pylist()}
    assert got == {"k0000": "second0", "k0001": "second1", "k0002": "second2", "k0003": "first3", "k0004": "first4"}


def test_partial_staged_file_fails_without_touching_the_table(tmp_path):
    tbl = str(tmp_path / "t")
    st = table.staging_uri(tbl)
    stage(st, err_rows(range(30)))
    table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    before = table.read_table(tbl)
    st = table.staging_uri(tbl)
    stage(st, err_rows(range(20, 50), message="new"))
    good = storage.read_bytes(storage.join(st, "shard-000.parquet"))
    storage.write_bytes(storage.join(st, "shard-001.parquet"), good[: len(good) // 2])  # a killed writer
    with pytest.raises(TableSchemaError, match="shard-001.parquet: not a readable Parquet file"):
        table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    assert table.read_table(tbl).equals(before)
    assert storage.exists(storage.join(st, "shard-000.parquet"))  # staging kept for inspection
    storage.delete(storage.join(st, "shard-001.parquet"))
    assert table.commit(st, tbl, "input_id", ERROR_SCHEMA).table_rows == 50


def test_commit_interrupted_mid_parts_never_duplicates_and_a_rerun_finishes(tmp_path, monkeypatch):
    tbl = str(tmp_path / "t")
    st = table.staging_uri(tbl)
    stage(st, err_rows(range(100)))
    table.commit(st, tbl, "input_id", ERROR_SCHEMA, num_buckets=8)
    st = table.staging_uri(tbl, "retry")
    stage(st, err_rows(range(50, 150), message="new"))

    real_write, calls = pq.write_table, {"n": 0}

    def dies_on_fourth_part(t, where, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            where.write(b"PAR1 half a part")
            raise KeyboardInterrupt("killed mid-write")
        return real_write(t, where, **kw)

    monkeypatch.setattr(table.pq, "write_table", dies_on_fourth_part)
    with pytest.raises(KeyboardInterrupt):
        table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    monkeypatch.setattr(table.pq, "write_table", real_write)

    mid = table.read_table(tbl)  # three parts new, the rest old: no duplicates, no lost old rows
    keys = mid.column("input_id").to_pylist()
    assert len(keys) == len(set(keys))
    assert {f"k{i:04d}" for i in range(100)} <= set(keys)
    assert not [n for n in os.listdir(tbl) if not n.startswith("part-")]  # temp file cleaned up
    assert storage.exists(st)

    r = table.commit(st, tbl, "input_id", ERROR_SCHEMA)  # same staging: finishes the job
    final = {row["input_id"]: row["message"] for row in table.read_table(tbl).to_pylist()}
    assert r.table_rows == 150 and len(final) == 150
    assert final["k0049"] == "m49" and final["k0050"] == "new50" and final["k0149"] == "new149"


def test_stray_temp_file_in_table_is_ignored_and_cleaned(tmp_path):
    tbl = str(tmp_path / "t")
    st = table.staging_uri(tbl)
    stage(st, err_rows(range(10)))
    table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    stray = os.path.join(tbl, ".part-00003-of-00016.parquet.abc.tmp")
    with open(stray, "wb") as f:
        f.write(b"PAR1 interrupted")
    assert table.read_table(tbl).num_rows == 10 and len(table.read_keys(tbl, "input_id")) == 10
    st = table.staging_uri(tbl)
    stage(st, err_rows([3]))
    table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    assert not os.path.exists(stray)


def test_bad_inputs_are_refused(tmp_path):
    tbl = str(tmp_path / "t")
    st = table.staging_uri(tbl)
    bad = pa.table({"input_id": ["a"], "source_uri": ["x"]})
    os.makedirs(st)
    pq.write_table(bad, os.path.join(st, "s.parquet"))
    with pytest.raises(TableSchemaError, match=r"missing \['message', 'reason', 'stage'\]"):
        table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    with pytest.raises(TableSchemaError, match="key column 'nope'"):
        table.commit(st, tbl, "nope", ERROR_SCHEMA)
    rows = err_rows(range(2))
    rows[1]["stage"] = None
    st2 = table.staging_uri(tbl)
    nullable = pa.schema([f.with_nullable(True) for f in ERROR_SCHEMA])  # as Ray would infer it
    stage(st2, rows, schema=nullable)
    with pytest.raises(TableSchemaError, match="stage"):
        table.commit(st2, tbl, "input_id", ERROR_SCHEMA)
    os.makedirs(tbl)
    pq.write_table(bad, os.path.join(tbl, "written-by-ray-directly.parquet"))
    with pytest.raises(TableSchemaError, match="unexpected file written-by-ray-directly.parquet"):
        table.commit(st, tbl, "input_id", ERROR_SCHEMA)


def _faces(n: int, identity_dim: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "face_id": S.face_id(f"/p/{i}.jpg", 0),
            "source_uri": f"/p/{i}.jpg",
            "face_index": 0,
            "split": "train",
            "image": bytes(rng.integers(0, 256, 50, dtype=np.uint8)),
            "bbox": rng.random(4, dtype=np.float32),
            "landmarks": rng.random(10, dtype=np.float32),
            "align_matrix": rng.random(6, dtype=np.float32),
            "identity": rng.standard_normal(identity_dim).astype(np.float32),
            "identity_model": "idm",
            "expression": rng.standard_normal(3).astype(np.float32),
            "expression_model": "exm",
            "expression_label": None,
            "yaw": 1.0,
            "pitch": 2.0,
            "roll": 3.0,
            "face_mask": b"\x89PNG",
            "labels": {"identity_label": str(i), "expression_word": None, "synth_params": None},
        }
        for i in range(n)
    ]


def test_face_table_roundtrip_and_schema_mismatch(tmp_path):
    tbl = str(tmp_path / "faces")
    schema = S.face_table_schema(8, 3, crop_size=16, identity_model="idm", expression_model="exm")
    rows = _faces(20, 8, seed=1)
    st = table.staging_uri(tbl)
    stage(st, rows[:7], rows[7:], schema=schema)
    table.commit(st, tbl, "face_id", schema)
    got = {r["face_id"]: r for r in table.read_table(tbl).to_pylist()}
    for r in rows:
        np.testing.assert_array_equal(np.array(got[r["face_id"]]["identity"], np.float32), r["identity"])
        assert got[r["face_id"]]["image"] == r["image"]
    info = S.read_table_info(tbl, identity_dim=8)
    assert (info.num_rows, info.identity_model, info.crop_size) == (20, "idm", 16)

    other = S.face_table_schema(16, 3, crop_size=16, identity_model="idm2", expression_model="exm")
    st = table.staging_uri(tbl)
    stage(st, _faces(2, 16, seed=2), schema=other)
    with pytest.raises(TableSchemaError, match="columns differ|different"):
        table.commit(st, tbl, "face_id", other)
    assert table.read_table(tbl).num_rows == 20


def test_read_on_missing_table(tmp_path):
    assert table.read_keys(str(tmp_path / "none"), "input_id") == set()
    with pytest.raises(storage.StorageNotFoundError, match="no Parquet files"):
        table.read_table(str(tmp_path / "none"))
