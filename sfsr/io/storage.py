"""One storage API for local paths and s3:// URIs.

Object operations (read, write, list, delete) go through boto3; columnar data goes through
pyarrow filesystems (`arrow_filesystem`), which is also what Ray Data's `filesystem=` takes.
The S3 endpoint and credentials come from the standard AWS variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION or AWS_DEFAULT_REGION), read when a client is
first needed and never at import time, so a Ray task that receives them through runtime_env
env_vars sees them. A custom endpoint (SeaweedFS, MinIO, ...) uses path-style addressing.

Prefix semantics: a prefix is a folder. `list_files("s3://b/run1")` lists keys under "run1/", never
"run10/...". Local paths are returned absolute, because Ray workers do not share the driver's
working directory. `file://` URIs are accepted as local paths.

Timeouts: every client connects with a short timeout and few retries, so an unreachable endpoint
fails in seconds with a StorageError that names it, instead of hanging a job or `sfsr doctor`.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.fs as pafs

S3_SCHEME = "s3://"
# Short connect timeout and bounded retries: a dead endpoint must fail fast (well under 30 s for
# `sfsr doctor`), while a live but busy one still gets a few attempts.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 120.0
MAX_ATTEMPTS = 3
# Objects larger than this are uploaded multipart by boto3; S3 publishes a multipart object only
# on completion (and boto3 aborts it on failure), so both paths keep writes all-or-nothing.
SINGLE_PUT_MAX_BYTES = 256 * 1024 * 1024


class StorageError(RuntimeError):
    """A storage operation failed; the message names the URI, the endpoint and what to do."""


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The file or object does not exist (also a FileNotFoundError, so either except works)."""


@dataclass(frozen=True)
class S3Settings:
    """Where and as whom to talk S3; the secret never appears in repr or logs."""

    endpoint: str | None  # e.g. "http://127.0.0.1:8333"; None means AWS itself
    region: str
    access_key: str | None = field(default=None)
    secret_key: str | None = field(default=None, repr=False)

    @property
    def endpoint_label(self) -> str:
        return self.endpoint or f"AWS S3 ({self.region})"


def s3_settings() -> S3Settings:
    """Read the S3 settings from the standard AWS environment variables (each call)."""
    endpoint = (os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "").strip()
    if endpoint and "://" not in endpoint:
        raise StorageError(
            f"AWS_ENDPOINT_URL={endpoint!r} has no scheme; set it to http://{endpoint} or https://{endpoint}"
        )
    return S3Settings(
        endpoint=endpoint.rstrip("/") or None,
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        access_key=os.environ.get("AWS_ACCESS_KEY_ID") or None,
        secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY") or None,
    )


def is_s3(uri: str) -> bool:
    return uri.startswith(S3_SCHEME)


def _local(uri: str) -> str:
    """A local URI as an absolute path (file:// stripped)."""
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    return os.path.abspath(os.path.expanduser(uri))


def split_s3(uri: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b'); the key may be empty."""
    if not is_s3(uri):
        raise StorageError(f"{uri}: not an s3:// URI; write it as s3://BUCKET/KEY")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise StorageError(f"{uri}: no bucket name; write it as s3://BUCKET/KEY")
    return bucket, key


def join(base: str, *parts: str) -> str:
    """Join path parts with '/' for s3:// (os.path.join for local paths)."""
    if is_s3(base):
        out = base.rstrip("/")
        for p in parts:
            p = p.strip("/")
            if p:
                out = f"{out}/{p}"
        return out
    return os.path.join(base, *[p.lstrip("/") for p in parts])


@functools.lru_cache(maxsize=16)
def _boto_client(settings: S3Settings, connect_timeout: float, read_timeout: float, attempts: int) -> Any:
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": attempts, "mode": "standard"},  # includes the first try
        # Path-style for custom endpoints: SeaweedFS/MinIO on 127.0.0.1 have no per-bucket DNS.
        s3={"addressing_style": "path" if settings.endpoint else "auto"},
        region_name=settings.region,
    )
    # Own session: boto3's default session is not thread-safe.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        config=config,
    )


def _client(settings: S3Settings | None = None) -> Any:
    return _boto_client(settings or s3_settings(), CONNECT_TIMEOUT_S, READ_TIMEOUT_S, MAX_ATTEMPTS)


@functools.lru_cache(maxsize=16)
def _arrow_s3(settings: S3Settings, connect_timeout: float, attempts: int) -> pafs.S3FileSystem:
    kwargs: dict[str, Any] = {
        "region": settings.region,
        "connect_timeout": connect_timeout,
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=attempts),
    }
    if settings.endpoint:
        scheme, _, hostport = settings.endpoint.partition("://")
        kwargs.update(endpoint_override=hostport, scheme=scheme, force_virtual_addressing=False)
    if settings.access_key and settings.secret_key:
        kwargs.update(access_key=settings.access_key, secret_key=settings.secret_key)
    return pafs.S3FileSystem(**kwargs)


def arrow_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path without scheme) for pyarrow and Ray Data's `filesystem=` argument."""
    if is_s3(uri):
        bucket, key = split_s3(uri)
        path = f"{bucket}/{key}".rstrip("/")
        return _arrow_s3(s3_settings(), CONNECT_TIMEOUT_S, MAX_ATTEMPTS), path
    return pafs.LocalFileSystem(), _local(uri)


def _s3_error(uri: str, action: str, exc: BaseException, settings: S3Settings | None = None) -> StorageError:
    """Translate a botocore exception into a StorageError that says what to do."""
    from botocore.exceptions import (
        ClientError,
        ConnectTimeoutError,
        EndpointConnectionError,
        NoCredentialsError,
        ReadTimeoutError,
    )

    settings = settings or s3_settings()
    where = f"{uri} (endpoint {settings.endpoint_label})"
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound"):
            return StorageNotFoundError(f"{where}: no such object; check the path")
        if code == "NoSuchBucket":
            bucket = split_s3(uri)[0]
            return StorageError(f"{where}: bucket {bucket!r} does not exist; create it or fix the URI")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403") or status == 403:
            return StorageError(
                f"{where}: {action} refused ({code or status}); check AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY and the bucket's permissions"
            )
        return StorageError(f"{where}: {action} failed: {code} {exc}")
    if isinstance(exc, (EndpointConnectionError, ConnectTimeoutError)):
        return StorageError(
            f"{where}: cannot connect to the S3 endpoint; is the server running and AWS_ENDPOINT_URL right? ({exc})"
        )
    if isinstance(exc, ReadTimeoutError):
        return StorageError(f"{where}: {action} timed out waiting for the endpoint; retry or check the server")
    if isinstance(exc, NoCredentialsError):
        return StorageError(f"{where}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
    return StorageError(f"{where}: {action} failed: {type(exc).__name__}: {exc}")


def arrow_error(uri: str, action: str, exc: OSError) -> StorageError:
    """A pyarrow filesystem OSError as a StorageError naming the URI and, for s3, the endpoint."""
    if isinstance(exc, FileNotFoundError):
        return StorageNotFoundError(f"{uri}: no such file; check the path")
    where = f"{uri} (endpoint {s3_settings().endpoint_label})" if is_s3(uri) else uri
    return StorageError(
        f"{where}: {action} failed ({exc}); check the storage is reachable and the credentials are right"
    )


def _boto_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def read_bytes(uri: str) -> bytes:
    """The whole file or object; StorageNotFoundError when it does not exist."""
    if not is_s3(uri):
        path = _local(uri)
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            raise StorageNotFoundError(f"{path}: no such file; check the path") from None
        except OSError as e:
            raise StorageError(f"{path}: cannot read ({e.strerror or e}); check permissions") from e
    bucket, key = split_s3(uri)
    try:
        return _client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except _boto_errors() as e:
        raise _s3_error(uri, "read", e) from e


def write_bytes(uri: str, data: bytes) -> None:
    """Write all-or-nothing: local via temp file + rename (parents created), S3 via one PUT."""
    write_atomic(uri, lambda f: f.write(data))


def write_atomic(uri: str, fill: Callable[[BinaryIO], Any]) -> None:
    """Call fill(binary file) and publish the result at `uri` all-or-nothing.

    Local: a temp file beside the target, fsync, rename. S3: filled in memory, then one PUT (or a
    multipart upload that S3 publishes only on completion). An exception in `fill` leaves the
    previous content of `uri` untouched.
    """
    if not is_s3(uri):
        _atomic_local_write(_local(uri), fill)
        return
    bucket, key = split_s3(uri)
    if not key or key.endswith("/"):
        raise StorageError(f"{uri}: not an object key; give a file name after the bucket")
    buf = io.BytesIO()
    fill(buf)
    size = buf.tell()
    buf.seek(0)
    client = _client()
    try:
        if size <= SINGLE_PUT_MAX_BYTES:
            client.put_object(Bucket=bucket, Key=key, Body=buf.getvalue())
        else:
            client.upload_fileobj(buf, bucket, key)
    except _boto_errors() as e:
        raise _s3_error(uri, "write", e) from e


def _atomic_local_write(path: str, write: Callable[[BinaryIO], Any]) -> None:
    """Call write(file) on a temp file beside `path`, then rename it over `path`.

    The temp name ends in ".tmp" and starts with ".", so suffix filters and pyarrow/Ray readers
    (which skip names starting with "." or "_") never pick up an interrupted write.
    """
    parent = os.path.dirname(path) or "."
    try:
        os.makedirs(parent, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise StorageError(f"{path}: cannot create the folder or a temp file ({e}); check permissions") from e
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise StorageError(f"{path}: write failed ({e}); check free space and permissions") from e
        raise


def exists(uri: str) -> bool:
    """True for an existing file/object, or a folder/prefix with something under it."""
    if not is_s3(uri):
        return os.path.exists(_local(uri))
    bucket, key = split_s3(uri)
    client = _client()
    try:
        if key and not key.endswith("/"):
            try:
                client.head_object(Bucket=bucket, Key=key)
                return True
            except _boto_errors() as e:
                if not isinstance(_s3_error(uri, "stat", e), StorageNotFoundError):
                    raise
        prefix = key.rstrip("/") + "/" if key else ""
        out = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        return out.get("KeyCount", 0) > 0
    except _boto_errors() as e:
        raise _s3_error(uri, "stat", e) from e


def delete(uri: str) -> None:
    """Delete one file or object; deleting something absent is not an error (idempotent)."""
    if not is_s3(uri):
        path = _local(uri)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise StorageError(f"{path}: is a folder; use delete_prefix to remove a folder") from None
        except OSError as e:
            raise StorageError(f"{path}: cannot delete ({e}); check permissions") from e
        return
    bucket, key = split_s3(uri)
    try:
        _client().delete_object(Bucket=bucket, Key=key)
    except _boto_errors() as e:
        raise _s3_error(uri, "delete", e) from e


def delete_prefix(uri: str) -> int:
    """Delete everything under the folder `uri`; returns how many files/objects went."""
    if not is_s3(uri):
        path = _local(uri)
        if os.path.dirname(path) == path:
            raise StorageError(f"{path}: refusing to delete a filesystem root")
        if os.path.isfile(path):
            raise StorageError(f"{path}: is a file; use delete() for a single file")
        if not os.path.isdir(path):
            return 0
        count = sum(len(files) for _, _, files in os.walk(path))
        try:
            shutil.rmtree(path)
        except OSError as e:
            raise StorageError(f"{path}: cannot delete the folder ({e}); check permissions") from e
        return count
    bucket, key = split_s3(uri)
    if not key.strip("/"):
        raise StorageError(f"{uri}: refusing to delete a whole bucket; give a prefix inside it")
    keys = _list_keys(uri)
    client = _client()
    for start in range(0, len(keys), 1000):  # DeleteObjects takes at most 1000 keys
        batch = [{"Key": k} for k in keys[start : start + 1000]]
        try:
            out = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        except _boto_errors() as e:
            raise _s3_error(uri, "delete", e) from e
        if out.get("Errors"):
            first = out["Errors"][0]
            raise StorageError(
                f"{uri} (endpoint {s3_settings().endpoint_label}): could not delete "
                f"{len(out['Errors'])} objects, e.g. {first.get('Key')}: {first.get('Message')}; "
                "check permissions and retry"
            )
    return len(keys)


def _list_objects(uri: str) -> list[dict[str, Any]]:
    """S3's records (Key, Size, ETag, ...) of every object under the folder `uri`."""
    bucket, key = split_s3(uri)
    prefix = key.rstrip("/") + "/" if key.strip("/") else ""
    objects: list[dict[str, Any]] = []
    try:
        for page in _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects.extend(page.get("Contents", []))
    except _boto_errors() as e:
        raise _s3_error(uri, "list", e) from e
    return objects


def _list_keys(uri: str) -> list[str]:
    return [obj["Key"] for obj in _list_objects(uri)]


@dataclass(frozen=True)
class FileStat:
    """A file under a folder and what changes when its content does."""

    uri: str
    size: int
    version: str  # S3: the ETag; local: the modification time in nanoseconds


def stat_files(prefix: str) -> list[FileStat]:
    """Every file under the folder `prefix` with its size and version, sorted by URI (a missing
    folder lists as empty). Two listings with equal stats hold the same bytes, unless a local
    file was rewritten within the file system's timestamp resolution keeping its size."""
    if is_s3(prefix):
        bucket, _ = split_s3(prefix)
        stats = [
            FileStat(f"{S3_SCHEME}{bucket}/{o['Key']}", int(o["Size"]), str(o.get("ETag", "")).strip('"'))
            for o in _list_objects(prefix)
            if not o["Key"].endswith("/")
        ]
    else:
        stats = []
        for uri in list_files(prefix):
            st = os.stat(uri)
            stats.append(FileStat(uri, st.st_size, str(st.st_mtime_ns)))
    return sorted(stats, key=lambda s: s.uri)


def list_files(prefix: str, suffixes: tuple[str, ...] | None = None) -> list[str]:
    """Every file under the folder `prefix`, recursively, sorted, as full URIs.

    `suffixes` filters by name ending, case-insensitively (".jpg" matches "A.JPG"). A missing
    folder lists as empty.
    """
    wanted = tuple(s.lower() for s in suffixes) if suffixes else None
    if is_s3(prefix):
        bucket, _ = split_s3(prefix)
        uris = [f"{S3_SCHEME}{bucket}/{k}" for k in _list_keys(prefix) if not k.endswith("/")]
    else:
        root = _local(prefix)
        uris = []
        for dirpath, _, files in os.walk(root):
            uris.extend(os.path.join(dirpath, f) for f in files)
    if wanted:
        uris = [u for u in uris if u.lower().endswith(wanted)]
    return sorted(uris)


def probe(uri: str, timeout_s: float = 10) -> dict[str, Any]:
    """Check that the folder `uri` is usable: write, read, list, pyarrow-stat and delete a probe.

    Returns {"uri", "backend", "endpoint", "probe_uri", "bytes", "timings_s": {step: seconds},
    "total_s"}; "arrow_stat" checks the pyarrow path Ray Data uses. Raises StorageError naming
    the endpoint, within about `timeout_s`, when any step fails.
    """
    settings = s3_settings() if is_s3(uri) else None
    label = settings.endpoint_label if settings else "local"
    probe_uri = join(uri, f".sfsr-probe-{uuid.uuid4().hex}")
    payload = os.urandom(64) + b"sfsr probe"
    if settings:
        # Own clients: a connect timeout of a fraction of the budget and a single attempt, so a
        # dead endpoint fails inside timeout_s instead of after the job-time retries.
        connect = max(0.5, min(CONNECT_TIMEOUT_S, timeout_s / 3))
        client, fs = _boto_client(settings, connect, max(1.0, timeout_s / 2), 1), _arrow_s3(settings, connect, 1)
        bucket, key = split_s3(probe_uri)
        steps = {
            "write": lambda: client.put_object(Bucket=bucket, Key=key, Body=payload),
            "read": lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read(),
            "list": lambda: [
                f"{S3_SCHEME}{bucket}/{o['Key']}"
                for o in client.list_objects_v2(Bucket=bucket, Prefix=key).get("Contents", [])
            ],
            "arrow_stat": lambda: fs.get_file_info(f"{bucket}/{key}").size,
            "delete": lambda: client.delete_object(Bucket=bucket, Key=key),
        }
    else:
        fs, path = arrow_filesystem(probe_uri)
        steps = {
            "write": lambda: write_bytes(probe_uri, payload),
            "read": lambda: read_bytes(probe_uri),
            # Only the folder itself, not recursively: `uri` may be a large data root.
            "list": lambda: [join(uri, n) for n in os.listdir(_local(uri))],
            "arrow_stat": lambda: fs.get_file_info(path).size,
            "delete": lambda: delete(probe_uri),
        }
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}
    start = time.perf_counter()
    for name, run in steps.items():
        t = time.perf_counter()
        try:
            results[name] = run()
        except StorageError:
            raise
        except _boto_errors() as e:
            raise _s3_error(probe_uri, f"probe step {name!r}", e, settings) from e
        except OSError as e:  # pyarrow and local I/O
            raise StorageError(
                f"{probe_uri} (endpoint {label}): probe step {name!r} failed ({e}); check "
                "AWS_REGION, the endpoint scheme and permissions"
            ) from e
        timings[name] = round(time.perf_counter() - t, 4)
        if time.perf_counter() - start > timeout_s:
            raise StorageError(
                f"{uri} (endpoint {label}): probe took longer than {timeout_s:g} s at step "
                f"{name!r}; the storage is too slow or overloaded"
            )
    if results["read"] != payload or probe_uri not in results["list"] or results["arrow_stat"] != len(payload):
        raise StorageError(
            f"{probe_uri} (endpoint {label}): the storage did not return what was written "
            f"(read {len(results['read'])} of {len(payload)} bytes, listed: "
            f"{probe_uri in results['list']}, pyarrow size: {results['arrow_stat']})"
        )
    return {
        "uri": uri,
        "backend": "s3" if settings else "local",
        "endpoint": settings.endpoint_label if settings else None,
        "probe_uri": probe_uri,
        "bytes": len(payload),
        "timings_s": timings,
        "total_s": round(time.perf_counter() - start, 4),
    }
