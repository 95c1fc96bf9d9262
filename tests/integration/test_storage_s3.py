"""sfsr.io against a real S3 server (the session's SeaweedFS) and the same against a local folder,
plus the round trip inside Ray tasks and Ray Data, and probe() against dead endpoints."""

from __future__ import annotations

import socket
import threading
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sfsr.io import storage, table
from sfsr.io.schema import ERROR_SCHEMA
from sfsr.io.storage import StorageError, StorageNotFoundError
from tests.fixtures.tables import err_rows


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def root(request, tmp_path) -> str:
    """A fresh, empty folder: local, or a unique prefix in the S3 server's bucket."""
    if request.param == "local":
        yield str(tmp_path / "root")
        return
    server = request.getfixturevalue("s3_server")
    uri = f"s3://{server.bucket}/test-{uuid.uuid4().hex[:12]}"
    yield uri
    storage.delete_prefix(uri)


def test_object_roundtrip(root):
    a, b, c = (storage.join(root, p) for p in ("a.bin", "sub/b.JPG", "sub/deep/c.txt"))
    payload = bytes(range(256)) * 100
    storage.write_bytes(a, payload)
    storage.write_bytes(b, b"jpeg?")
    storage.write_bytes(c, b"text")
    storage.write_bytes(storage.join(root + "0", "elsewhere.bin"), b"x")  # sibling with a common prefix
    try:
        assert storage.read_bytes(a) == payload
        assert (
            storage.exists(a)
            and storage.exists(storage.join(root, "sub"))
            and not storage.exists(storage.join(root, "zz"))
        )
        assert storage.list_files(root) == sorted([a, b, c])
        assert storage.list_files(root, (".jpg",)) == [b]
        with pytest.raises(StorageNotFoundError):
            storage.read_bytes(storage.join(root, "missing.bin"))
        storage.delete(a)
        storage.delete(a)  # idempotent
        assert not storage.exists(a)
        assert storage.delete_prefix(root) == 2
        assert storage.list_files(root) == []
        assert storage.read_bytes(storage.join(root + "0", "elsewhere.bin")) == b"x"  # untouched
    finally:
        storage.delete_prefix(root + "0")


def test_parquet_through_arrow_filesystem(root):
    t = pa.table({"x": list(range(1000)), "s": [str(i) for i in range(1000)]})
    fs, path = storage.arrow_filesystem(storage.join(root, "data", "t.parquet"))
    assert "://" not in path
    fs.create_dir(path.rsplit("/", 1)[0])
    with fs.open_output_stream(path) as f:
        pq.write_table(t, f)
    assert pq.read_table(path, filesystem=fs).equals(t)
    fs_dir, dir_path = storage.arrow_filesystem(storage.join(root, "data"))
    assert pq.read_table(dir_path, filesystem=fs_dir).num_rows == 1000
    assert storage.list_files(root, (".parquet",)) == [storage.join(root, "data", "t.parquet")]


def test_table_commit_is_idempotent(root):
    tbl = storage.join(root, "errors")
    rows = err_rows(range(60))
    for attempt in range(2):  # the second run re-commits the same rows
        st = table.staging_uri(tbl)
        for i, chunk in enumerate((rows[:25], rows[25:])):
            shard = pa.Table.from_pylist(chunk, schema=ERROR_SCHEMA)
            storage.write_atomic(storage.join(st, f"s{i}.parquet"), lambda f, t=shard: pq.write_table(t, f))
        r = table.commit(st, tbl, "input_id", ERROR_SCHEMA)
        assert r.table_rows == 60 and r.replaced == (60 if attempt else 0)
        assert not storage.exists(st)
    st = table.staging_uri(tbl)
    shard = pa.Table.from_pylist(err_rows(range(50, 80), "new"), schema=ERROR_SCHEMA)
    storage.write_atomic(storage.join(st, "s.parquet"), lambda f: pq.write_table(shard, f))
    r = table.commit(st, tbl, "input_id", ERROR_SCHEMA)
    assert (r.inserted, r.replaced, r.table_rows) == (20, 10, 80)
    got = {x["input_id"]: x["message"] for x in table.read_table(tbl).to_pylist()}
    assert len(got) == 80 and got["k0049"] == "m49" and got["k0050"] == "new50"
    assert table.read_keys(tbl, "input_id") == set(got)


def test_probe_roundtrip(root):
    out = storage.probe(root, timeout_s=10)
    assert set(out["timings_s"]) == {"write", "read", "list", "arrow_stat", "delete"}
    assert out["total_s"] < 10
    assert not storage.exists(out["probe_uri"])


@pytest.mark.s3
def test_s3_errors_say_what_to_do(s3_server, monkeypatch):
    with pytest.raises(StorageError, match="bucket 'no-such-bucket-x' does not exist"):
        storage.read_bytes("s3://no-such-bucket-x/a")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(StorageError) as e:
        storage.write_bytes(f"s3://{s3_server.bucket}/denied.bin", b"x")
    assert "AWS_SECRET_ACCESS_KEY" in str(e.value) and s3_server.endpoint in str(e.value)
    assert "wrong-secret" not in str(e.value)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_probe_against_a_closed_port_fails_fast_naming_the_endpoint(monkeypatch):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    start = time.monotonic()
    with pytest.raises(StorageError) as e:
        storage.probe("s3://bucket/prefix", timeout_s=10)
    assert time.monotonic() - start < 30
    assert endpoint in str(e.value) and "cannot connect" in str(e.value)


def test_probe_against_a_silent_server_times_out(monkeypatch):
    """A server that accepts connections but never answers (a hung proxy): fails within ~timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_hold():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept_and_hold, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    try:
        start = time.monotonic()
        with pytest.raises(StorageError) as e:
            storage.probe("s3://bucket/prefix", timeout_s=3)
        elapsed = time.monotonic() - start
        assert elapsed < 10 and endpoint in str(e.value)
    finally:
        stop.set()
        thread.join()
        for s in accepted:
            s.close()
        listener.close()


@pytest.mark.ray
@pytest.mark.s3
def test_roundtrip_inside_ray_tasks_and_ray_data(s3_server, ray_address):
    import ray

    ray.init(address=ray_address, ignore_reinit_error=True)
    # Tasks get the S3 settings only through runtime_env, as a job submitted to a cluster would
    # (sfsr itself is installed in the cluster's environment).
    env = {"env_vars": dict(s3_server.env)}
    base = f"s3://{s3_server.bucket}/ray-{uuid.uuid4().hex[:8]}"
    tbl, st = f"{base}/errors", table.staging_uri(f"{base}/errors", "run1")

    @ray.remote
    def write_shard(i: int) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from sfsr.io import storage as s
        from sfsr.io.schema import ERROR_SCHEMA as schema

        rows = [
            {"input_id": f"k{j:04d}", "source_uri": f"/in/{j}", "stage": "decode", "reason": "empty", "message": "m"}
            for j in range(i * 10, i * 10 + 10)
        ]
        t = pa.Table.from_pylist(rows, schema=schema)
        s.write_atomic(s.join(st, f"task-{i}.parquet"), lambda f: pq.write_table(t, f))
        s.write_bytes(s.join(base, f"blob-{i}.bin"), bytes([i]) * 100)
        return len(s.read_bytes(s.join(base, f"blob-{i}.bin")))

    @ray.remote
    def read_back() -> tuple[int, int]:
        from sfsr.io import storage as s
        from sfsr.io import table as tb

        return tb.read_table(tbl).num_rows, len(s.list_files(base, (".bin",)))

    try:
        assert ray.get([write_shard.options(runtime_env=env).remote(i) for i in range(3)]) == [100] * 3
        # Ray Data writes more shards into the same staging prefix through arrow_filesystem.
        fs, st_path = storage.arrow_filesystem(st)
        ds = ray.data.from_arrow(pa.Table.from_pylist(err_rows(range(20, 50), "ray"), schema=ERROR_SCHEMA))
        ds.write_parquet(st_path, filesystem=fs)
        r = table.commit(st, tbl, "input_id", ERROR_SCHEMA)
        assert (r.table_rows, r.replaced, r.staged_duplicates) == (50, 0, 10)  # ids 20-29 staged twice
        assert ray.get(read_back.options(runtime_env=env).remote()) == (50, 3)
        fs_t, tbl_path = storage.arrow_filesystem(tbl)
        assert ray.data.read_parquet(tbl_path, filesystem=fs_t).count() == 50
    finally:
        storage.delete_prefix(base)
