"""The face-table and error-table schemas, their metadata, and read_table_info's checks."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sfsr.io import schema as S
from sfsr.io.images import encode_png
from sfsr.io.storage import StorageNotFoundError


def face_rows(n: int, identity_dim: int = 8, expression_dim: int = 5, crop: int = 16, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        uri = f"/data/img{i // 2}.jpg"
        rows.append(
            {
                "face_id": S.face_id(uri, i % 2),
                "source_uri": uri,
                "face_index": i % 2,
                "split": "train",
                "image": encode_png(rng.integers(0, 256, (crop, crop, 3), dtype=np.uint8)),
                "bbox": np.array([1, 2, 30, 40], np.float32),
                "landmarks": rng.random(10, dtype=np.float32),
                "align_matrix": np.array([1, 0, 0, 0, 1, 0], np.float32),
                "identity": rng.standard_normal(identity_dim).astype(np.float32),
                "identity_model": "idm",
                "expression": rng.standard_normal(expression_dim).astype(np.float32),
                "expression_model": "exm",
                "expression_label": None if i % 3 else "joy",
                "yaw": 1.5,
                "pitch": -2.0,
                "roll": 0.25,
                "face_mask": encode_png(np.full((crop, crop), 255, np.uint8)),
                "labels": {"identity_label": f"p{i}", "expression_word": None, "synth_params": json.dumps({"seed": i})},
            }
        )
    return rows


def make_schema(identity_dim: int = 8, expression_dim: int = 5) -> pa.Schema:
    return S.face_table_schema(identity_dim, expression_dim, crop_size=16, identity_model="idm", expression_model="exm")


def test_face_id_is_a_stable_hash():
    expected = hashlib.sha256(b"s3://b/a.jpg\x000").hexdigest()[:32]
    assert S.face_id("s3://b/a.jpg", 0) == expected
    assert S.face_id("s3://b/a.jpg", 1) != expected and S.face_id("s3://b/a.jp", 0) != expected
    assert S.face_id("x1", 1) != S.face_id("x", 11)  # the separator keeps fields apart
    assert S.input_id("s3://b/a.jpg") == hashlib.sha256(b"s3://b/a.jpg").hexdigest()[:32]


def test_face_schema_columns_types_and_metadata():
    s = make_schema(512, 7)
    assert s.names == [
        "face_id",
        "source_uri",
        "face_index",
        "split",
        "image",
        "bbox",
        "landmarks",
        "align_matrix",
        "identity",
        "identity_model",
        "expression",
        "expression_model",
        "expression_label",
        "yaw",
        "pitch",
        "roll",
        "face_mask",
        "labels",
    ]
    assert s.field("identity").type == pa.list_(pa.float32(), 512)
    assert s.field("expression").type == pa.list_(pa.float32(), 7)
    assert (
        s.field("bbox").type.list_size,
        s.field("landmarks").type.list_size,
        s.field("align_matrix").type.list_size,
    ) == (4, 10, 6)
    assert s.field("face_index").type == pa.int32() and s.field("yaw").type == pa.float32()
    assert s.field("labels").type.names == ["identity_label", "expression_word", "synth_params"]
    assert s.field("expression_label").nullable and not s.field("identity").nullable
    m = s.metadata
    assert m[b"sfsr_schema_version"] == str(S.SCHEMA_VERSION).encode()
    assert (m[b"crop_size"], m[b"identity_dim"], m[b"expression_dim"]) == (b"16", b"512", b"7")
    assert (m[b"identity_model"], m[b"expression_model"]) == (b"idm", b"exm")
    with pytest.raises(ValueError, match="identity_dim"):
        S.face_table_schema(0, 5, crop_size=16, identity_model="a", expression_model="b")


def test_error_schema():
    assert S.ERROR_SCHEMA.names == ["input_id", "source_uri", "stage", "reason", "message"]
    assert S.ERROR_SCHEMA.metadata[b"sfsr_schema_version"] == str(S.SCHEMA_VERSION).encode()


def test_rows_from_numpy_build_a_valid_table():
    s = make_schema()
    rows = face_rows(6)
    t = pa.Table.from_pylist(rows, schema=s)
    S.validate_table(t, s)
    np.testing.assert_array_equal(np.array(t.column("identity")[3].as_py(), np.float32), rows[3]["identity"])
    assert t.column("expression_label").null_count == 4


def _parts(row: dict) -> dict:
    """face_row's keyword arguments for a fixture row."""
    return dict(
        source_uri=row["source_uri"],
        face_index=row["face_index"],
        split=row["split"],
        image_png=row["image"],
        face_mask_png=row["face_mask"],
        bbox=row["bbox"],
        landmarks=row["landmarks"],
        align_matrix=row["align_matrix"],
        identity=row["identity"],
        expression=row["expression"],
        yaw=row["yaw"],
        pitch=row["pitch"],
        roll=row["roll"],
        expression_label=row["expression_label"],
        identity_label=row["labels"]["identity_label"],
        synth_params=row["labels"]["synth_params"],
    )


def test_face_row_builds_the_same_row_as_by_hand():
    s = make_schema()
    hand = face_rows(4)
    for r in hand:  # face_row files the expression label as the row's expression word too (what ingest writes)
        r["labels"]["expression_word"] = r["expression_label"]
    built = [S.face_row(s, **_parts(r)) for r in hand]
    assert [list(r) for r in built] == [s.names] * 4
    S.validate_table(pa.Table.from_pylist(built, schema=s), s)
    assert pa.Table.from_pylist(built, schema=s).equals(pa.Table.from_pylist(hand, schema=s))
    assert built[1]["face_id"] == S.face_id("/data/img0.jpg", 1) and built[1]["identity_model"] == "idm"
    # vectors come out as float32 values whatever the input layout: (5, 2) landmarks -> 10
    again = S.face_row(
        s, **{**_parts(hand[0]), "landmarks": np.asarray(hand[0]["landmarks"], np.float64).reshape(5, 2)}
    )
    assert again["landmarks"] == built[0]["landmarks"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"identity": np.zeros(7, np.float32)}, "identity has 7 values, the face table expects 8"),
        ({"expression": np.full(5, np.nan, np.float32)}, "expression holds NaN"),
        ({"bbox": [1.0, 2.0, 3.0]}, "bbox has 3 values, the face table expects 4"),
        ({"face_mask_png": np.zeros((16, 16), np.uint8)}, "face_mask_png must be PNG bytes, got ndarray"),
        ({"image_png": b"JFIF...."}, "image_png is not PNG data"),
        ({"split": "val"}, "split is 'val'"),
        ({"face_index": -1}, "face_index must be a non-negative int"),
        ({"yaw": "12"}, "yaw must be a number"),
        ({"identity_label": 3}, "identity_label must be a string or None"),
    ],
)
def test_face_row_names_the_wrong_field(change, field):
    with pytest.raises(ValueError, match=f"face row '/data/img0.jpg' face -?[0-9]+: {field}"):
        S.face_row(make_schema(), **{**_parts(face_rows(1)[0]), **change})


def test_face_row_refuses_another_schema():
    with pytest.raises(ValueError, match="not a face-table schema"):
        S.face_row(S.ERROR_SCHEMA, **_parts(face_rows(1)[0]))


def test_validate_table_catches_problems():
    s = make_schema()
    good = pa.Table.from_pylist(face_rows(3), schema=s)
    with pytest.raises(S.TableSchemaError, match=r"missing \['yaw'\]"):
        S.validate_table(good.drop_columns(["yaw"]), s)
    rows = face_rows(3)
    rows[1]["source_uri"] = None
    with pytest.raises(S.TableSchemaError, match="source_uri has 1 null"):
        S.validate_table(pa.Table.from_pylist(rows, schema=s), s)
    rows = face_rows(3)
    rows[2]["identity"][4] = np.nan
    with pytest.raises(S.TableSchemaError, match="identity has 1 NaN"):
        S.validate_table(pa.Table.from_pylist(rows, schema=s), s)
    with pytest.raises(S.TableSchemaError, match="column face_index is int64"):
        S.validate_table(good.set_column(2, "face_index", pa.array([0, 1, 0], pa.int64())), s)


def test_read_table_info_and_dimension_errors(tmp_path):
    s = make_schema(512, 5)
    path = tmp_path / "face-table.parquet"
    pq.write_table(pa.Table.from_pylist(face_rows(4, identity_dim=512), schema=s), path)
    info = S.read_table_info(str(path))
    assert (info.kind, info.schema_version, info.num_rows) == ("faces", S.SCHEMA_VERSION, 4)
    assert (info.identity_dim, info.expression_dim, info.crop_size) == (512, 5, 16)
    assert (info.identity_model, info.expression_model) == ("idm", "exm")
    with pytest.raises(S.TableSchemaError) as e:
        S.read_table_info(str(path), identity_dim=128)
    assert str(e.value) == (
        "face-table.parquet: column identity has 512 values per row, this model "
        "expects 128; re-run ingest with the same face pack"
    )
    with pytest.raises(S.TableSchemaError, match="identity_model is 'idm', this model expects 'arcface'"):
        S.read_table_info(str(path), identity_model="arcface")
    with pytest.raises(S.TableSchemaError, match="crops are 16 px"):
        S.read_table_info(str(path), crop_size=256)
    S.read_table_info(str(path), identity_dim=512, expression_dim=5, crop_size=16)  # matches: no error


def test_read_table_info_folder_counts_all_files(tmp_path):
    s = make_schema()
    for i in range(3):
        pq.write_table(pa.Table.from_pylist(face_rows(2 + i, seed=i), schema=s), tmp_path / f"p{i}.parquet")
    (tmp_path / ".p9.parquet.tmp").write_bytes(b"partial")  # ignored, like pyarrow/Ray do
    info = S.read_table_info(str(tmp_path))
    assert info.num_rows == 2 + 3 + 4 and len(info.files) == 3


def test_wrong_version_and_foreign_files_are_refused(tmp_path):
    s = make_schema()
    t = pa.Table.from_pylist(face_rows(2), schema=s)
    meta = dict(s.metadata)
    meta[b"sfsr_schema_version"] = b"999"
    pq.write_table(t.replace_schema_metadata(meta), tmp_path / "old.parquet")
    with pytest.raises(S.TableSchemaError, match="schema version 999, this code reads version 1; re-run ingest"):
        S.read_table_info(str(tmp_path / "old.parquet"))
    pq.write_table(pa.table({"x": [1]}), tmp_path / "foreign.parquet")
    with pytest.raises(S.TableSchemaError, match="not written by sfsr"):
        S.read_table_info(str(tmp_path / "foreign.parquet"))
    with pytest.raises(StorageNotFoundError):
        S.read_table_info(str(tmp_path / "nothing-here"))


def test_error_table_info(tmp_path):
    t = pa.Table.from_pylist(
        [{"input_id": "a", "source_uri": "/a.jpg", "stage": "decode", "reason": "empty", "message": "m"}],
        schema=S.ERROR_SCHEMA,
    )
    pq.write_table(t, tmp_path / "errors.parquet")
    info = S.read_table_info(str(tmp_path / "errors.parquet"))
    assert info.kind == "errors" and info.num_rows == 1 and info.identity_dim is None
