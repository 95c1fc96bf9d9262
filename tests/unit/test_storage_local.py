"""sfsr.io.storage on local paths, plus the parts of S3 handling that need no server."""

from __future__ import annotations

import os
import pickle

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from sfsr.io import storage
from sfsr.io.storage import StorageError, StorageNotFoundError


def test_uri_helpers():
    assert storage.is_s3("s3://b/k") and not storage.is_s3("/tmp/x") and not storage.is_s3("file:///x")
    assert storage.split_s3("s3://bucket/a/b.jpg") == ("bucket", "a/b.jpg")
    assert storage.split_s3("s3://bucket") == ("bucket", "")
    assert storage.join("s3://b/root/", "/x/", "y.parquet") == "s3://b/root/x/y.parquet"
    assert storage.join("/data", "a", "b.txt") == "/data/a/b.txt"
    with pytest.raises(StorageError, match="s3://BUCKET/KEY"):
        storage.split_s3("/local/path")
    with pytest.raises(StorageError, match="no bucket"):
        storage.split_s3("s3:///key")


def test_write_read_roundtrip_creates_parents(tmp_path):
    uri = str(tmp_path / "a" / "b" / "c.bin")
    data = os.urandom(10_000)
    storage.write_bytes(uri, data)
    assert storage.read_bytes(uri) == data
    assert storage.read_bytes("file://" + uri) == data
    storage.write_bytes(uri, b"second")  # overwrite
    assert storage.read_bytes(uri) == b"second"
    assert os.listdir(tmp_path / "a" / "b") == ["c.bin"]  # no temp files left behind


def test_failed_write_keeps_old_content_and_leaves_no_temp(tmp_path):
    uri = str(tmp_path / "x.bin")
    storage.write_bytes(uri, b"old")

    def half_then_fail(f):
        f.write(b"partial")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError, match="writer died"):
        storage.write_atomic(uri, half_then_fail)
    assert storage.read_bytes(uri) == b"old"
    assert os.listdir(tmp_path) == ["x.bin"]


def test_missing_file_is_both_storage_and_filenotfound_error(tmp_path):
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(missing)
    with pytest.raises(StorageNotFoundError, match="nope.jpg: no such file"):
        storage.read_bytes(missing)
    assert issubclass(StorageNotFoundError, StorageError)
    err = pickle.loads(pickle.dumps(StorageNotFoundError("x: gone")))  # crosses Ray processes
    assert isinstance(err, FileNotFoundError) and str(err) == "x: gone"


def test_exists_delete_and_delete_prefix(tmp_path):
    root = str(tmp_path / "run")
    for rel in ("a.txt", "sub/b.txt", "sub/deeper/c.txt"):
        storage.write_bytes(storage.join(root, rel), b"x")
    assert storage.exists(root) and storage.exists(storage.join(root, "sub/b.txt"))
    assert not storage.exists(storage.join(root, "zzz"))
    storage.delete(storage.join(root, "a.txt"))
    storage.delete(storage.join(root, "a.txt"))  # idempotent
    assert not storage.exists(storage.join(root, "a.txt"))
    with pytest.raises(StorageError, match="is a folder"):
        storage.delete(storage.join(root, "sub"))
    with pytest.raises(StorageError, match="is a file"):
        storage.delete_prefix(storage.join(root, "sub/b.txt"))
    assert storage.delete_prefix(root) == 2
    assert not storage.exists(root)
    assert storage.delete_prefix(root) == 0
    with pytest.raises(StorageError, match="root"):
        storage.delete_prefix("/")


def test_list_files_recursive_sorted_filtered_folder_semantics(tmp_path):
    base = str(tmp_path)
    for rel in ("run1/b.JPG", "run1/a.png", "run1/x/c.jpg", "run1/notes.txt", "run10/d.jpg"):
        storage.write_bytes(storage.join(base, rel), b"x")
    got = storage.list_files(storage.join(base, "run1"), (".jpg", ".png"))
    assert got == sorted(got)
    assert [os.path.relpath(p, base) for p in got] == ["run1/a.png", "run1/b.JPG", "run1/x/c.jpg"]
    assert all(os.path.isabs(p) for p in got)
    assert len(storage.list_files(storage.join(base, "run1"))) == 4  # run10 is not under run1
    assert storage.list_files(storage.join(base, "missing")) == []


def test_arrow_filesystem_local_reads_what_pyarrow_wrote(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = storage.arrow_filesystem("rel/t.parquet")
    assert isinstance(fs, pafs.LocalFileSystem) and path == str(tmp_path / "rel" / "t.parquet")
    fs.create_dir(os.path.dirname(path))
    pq.write_table(pa.table({"x": [1, 2, 3]}), path, filesystem=fs)
    assert pq.read_table(path, filesystem=fs).column("x").to_pylist() == [1, 2, 3]


def test_s3_settings_from_env_and_secret_hidden(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9/")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKID")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-3")
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    s = storage.s3_settings()
    assert (s.endpoint, s.region, s.access_key, s.secret_key) == (
        "http://127.0.0.1:9",
        "eu-west-3",
        "AKID",
        "s3cr3t-value",
    )
    assert "s3cr3t" not in repr(s) and "AKID" in repr(s)
    monkeypatch.setenv("AWS_REGION", "us-west-2")  # AWS_REGION wins over AWS_DEFAULT_REGION
    assert storage.s3_settings().region == "us-west-2"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "127.0.0.1:8333")
    with pytest.raises(StorageError, match="no scheme"):
        storage.s3_settings()


def test_clients_cached_per_settings(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "one")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    a = storage._client()
    assert storage._client() is a
    assert a.meta.endpoint_url == "http://127.0.0.1:9"
    assert a.meta.config.s3["addressing_style"] == "path"
    fs, path = storage.arrow_filesystem("s3://bucket/some/key.parquet")
    assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/some/key.parquet"
    assert storage.arrow_filesystem("s3://bucket/x")[0] is fs
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "two")
    assert storage._client() is not a


def test_probe_local(tmp_path):
    out = storage.probe(str(tmp_path / "p"))
    assert out["backend"] == "local" and out["endpoint"] is None
    assert set(out["timings_s"]) == {"write", "read", "list", "arrow_stat", "delete"}
    assert all(0 <= t < 5 for t in out["timings_s"].values())
    assert storage.list_files(str(tmp_path / "p")) == []  # probe object removed
