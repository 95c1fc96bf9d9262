"""sfsr.io.cache: remote model folders are cached by content, so a new model at the same URI is
fetched again (local folders stand in for s3:// here; tests/integration/test_model_cache.py
does the same against a real S3 server)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sfsr.io import cache, storage


def _folder(path: Path, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    return str(path)


def _reads(monkeypatch) -> list[str]:
    seen: list[str] = []
    real = storage.read_bytes

    def counting(uri: str) -> bytes:
        seen.append(uri)
        return real(uri)

    monkeypatch.setattr(storage, "read_bytes", counting)
    return seen


def test_unchanged_folder_is_copied_once_and_a_changed_one_again(tmp_path, monkeypatch) -> None:
    src = _folder(tmp_path / "model", {"config.json": b"{}", "weights.safetensors": b"A" * 100, "sub/x": b"1"})
    reads = _reads(monkeypatch)
    first = cache.fetch_folder(src, tmp_path / "cache")
    assert (first / "weights.safetensors").read_bytes() == b"A" * 100 and (first / "sub" / "x").read_bytes() == b"1"
    assert len(reads) == 3
    assert cache.fetch_folder(src + "/", tmp_path / "cache") == first and len(reads) == 3  # no download

    # a new model written to the same place, same size: a new copy with the new bytes
    path = Path(src) / "weights.safetensors"
    path.write_bytes(b"B" * 100)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # coarse clocks: a distinct version
    second = cache.fetch_folder(src, tmp_path / "cache")
    assert second != first and (second / "weights.safetensors").read_bytes() == b"B" * 100
    assert (first / "weights.safetensors").read_bytes() == b"A" * 100  # a reader of the old copy is untouched
    assert not [p for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")]


def test_a_folder_written_during_the_copy_is_copied_again(tmp_path, monkeypatch) -> None:
    src = _folder(tmp_path / "model", {"a": b"old", "b": b"old"})
    real, calls = storage.read_bytes, []

    def racing(uri: str) -> bytes:  # the writer replaces b between our listing and our read of it
        calls.append(uri)
        if len(calls) == 1:
            Path(src, "b").write_bytes(b"new!")
        return real(uri)

    monkeypatch.setattr(storage, "read_bytes", racing)
    got = cache.fetch_folder(src, tmp_path / "cache")
    assert (got / "a").read_bytes() == b"old" and (got / "b").read_bytes() == b"new!"
    assert len(calls) == 4  # the first copy was thrown away


def test_an_empty_prefix_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no files under this prefix"):
        cache.fetch_folder(str(tmp_path / "nothing"), tmp_path / "cache")


def test_files_digest_follows_the_weights_not_the_card(tmp_path) -> None:
    folder = Path(_folder(tmp_path / "m", {"config.json": b"{}", "w.safetensors": b"A", "sfsr_card.json": b"{}"}))
    before = cache.files_digest(folder)
    (folder / "sfsr_card.json").write_text('{"metrics": {}}')
    assert cache.files_digest(folder) == before
    (folder / "w.safetensors").write_bytes(b"B")
    assert cache.files_digest(folder) != before
    with pytest.raises(FileNotFoundError, match="is this a model folder"):
        cache.files_digest(tmp_path)
