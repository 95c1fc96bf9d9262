"""A local copy of a remote folder (an s3:// model), keyed by what the folder holds, not its name.

    local = fetch_folder("s3://sfsr/runs/demo/model", cache_root)   # a folder of plain files

The cache key is a digest of the folder's listing: every file's relative name, size and version
(the S3 ETag). Writing a new model to the same URI changes the listing, so the next fetch lands
in a new folder and every reader (a fresh Generator, an evaluation actor, a Serve replica) sees
the new files; an unchanged folder is downloaded once. A copy is published all-or-nothing
(downloaded into a temporary folder, checked against a second listing, then renamed), so
concurrent readers on one machine never see half a model, and a folder that changed while it
was being copied is fetched again.

Layout under the cache root:
    <digest>/           the files, as under the URI, plus LISTING (what they were fetched from)
    .tmp-*/             copies in progress (removed when they fail)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from sfsr.io import storage

LISTING = ".sfsr-listing.json"
ATTEMPTS = 3  # a folder that keeps changing while we copy it is an error after this many tries


def listing_digest(prefix: str, stats: list[storage.FileStat]) -> str:
    """sha256 (hex) of the files' names relative to `prefix`, sizes and versions."""
    base = prefix.rstrip("/") + "/"
    h = hashlib.sha256()
    for s in sorted(stats, key=lambda s: s.uri):
        h.update(json.dumps([s.uri[len(base) :], s.size, s.version]).encode() + b"\n")
    return h.hexdigest()


def fetch_folder(uri: str, cache_root: str | Path) -> Path:
    """The files under the folder `uri` (s3:// or local), copied into `cache_root`; the copy's
    folder name is the digest of the listing, so changed content is copied again."""
    root = Path(cache_root)
    prefix = uri.rstrip("/")
    for _ in range(ATTEMPTS):
        stats = storage.stat_files(prefix + "/")
        if not stats:
            raise FileNotFoundError(f"{uri}: no files under this prefix; upload the model folder there first")
        digest = listing_digest(prefix, stats)
        dest = root / digest[:32]
        if (dest / LISTING).is_file():
            return dest
        tmp = root / f".tmp-{digest[:12]}-{uuid.uuid4().hex[:8]}"
        try:
            for s in stats:
                target = tmp / s.uri[len(prefix) + 1 :]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(storage.read_bytes(s.uri))
            if listing_digest(prefix, storage.stat_files(prefix + "/")) != digest:
                continue  # written to while we copied: what we hold may mix two versions
            (tmp / LISTING).write_text(
                json.dumps({"uri": uri, "digest": digest, "files": [[s.uri, s.size, s.version] for s in stats]})
            )
            try:
                os.rename(tmp, dest)
            except OSError:
                if not (dest / LISTING).is_file():  # not another process winning the same copy
                    raise
            return dest
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    raise storage.StorageError(
        f"{uri}: its files changed during each of {ATTEMPTS} copies; "
        "wait until whoever writes there has finished, then load it again"
    )


def default_root() -> Path:
    """Where remote models are cached: $SFSR_MODEL_CACHE, else ~/.cache/sfsr/models."""
    return Path(os.environ.get("SFSR_MODEL_CACHE") or Path.home() / ".cache" / "sfsr" / "models")


def local_folder(uri: str, cache_root: str | Path | None = None) -> Path:
    """A local folder holding the files of `uri`: the folder itself, or for s3:// a cached copy
    of its current content (fetch_folder)."""
    if storage.is_s3(uri):
        return fetch_folder(uri, cache_root or default_root())
    return Path(uri)


def files_digest(folder: str | Path, names: tuple[str, ...] = ("config.json", "*.safetensors")) -> str:
    """sha256 (hex) of the contents of the files of a local folder that match `names` (glob
    patterns, in the folder itself): for a model folder, what decides its outputs. Cards and
    previews written next to the weights do not change it."""
    path = Path(folder)
    files = sorted({f for pattern in names for f in path.glob(pattern) if f.is_file()})
    if not files:
        raise FileNotFoundError(f"{folder}: no files matching {list(names)}; is this a model folder?")
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
