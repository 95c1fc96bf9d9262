"""Pack manifests, verification, loading by kind, s3 caching, init and listing (no real models)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sfsr.faces import pack
from sfsr.faces.align import template
from sfsr.faces.base import Detection, OutputSpec, Pose
from sfsr.faces.pack import Alignment, FacePack, Normalisation, PackError, PackFile, PackManifest


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


FILES = {"det.bin": b"detector weights", "rec.bin": b"recogniser weights" * 100, "sub/expr.bin": b"expr"}
ROLES = {"det.bin": "detector", "rec.bin": "identity", "sub/expr.bin": "expression"}


def _manifest(kind: str = "testkind") -> PackManifest:
    return PackManifest(
        name="tiny",
        version="3",
        kind=kind,
        files=tuple(PackFile(n, _sha(d), ROLES[n], "CC0-1.0", len(d)) for n, d in FILES.items()),
        input_size={"identity": 112, "expression": 64},
        normalisation={"identity": Normalisation((127.5,) * 3, (127.5,) * 3)},
        alignment=Alignment("arcface-112", (0, 1, 2)),
        licence="CC0",
        source="made by the test",
    )


def _write_pack(root: Path, kind: str = "testkind") -> Path:
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / pack.MANIFEST_NAME).write_text(_manifest(kind).to_json())
    return root


class _Stub:
    """Minimal detector/pose/encoder for the test loader."""

    name, version, input_size = "stub", "0", 112
    output = OutputSpec(2, "stub")

    def detect(self, image):  # noqa: ANN001
        return [Detection(np.array([0, 0, 112, 112], np.float32), 1.0, template(112))]

    def estimate(self, image, detection):  # noqa: ANN001
        return Pose(0.0, 0.0, 0.0)

    def __call__(self, crops):  # noqa: ANN001
        return np.zeros((len(crops), 2), np.float32)


def _stub_loader(ctx: pack.PackContext) -> FacePack:
    # The loader sees verified local paths by role; prove it by reading one.
    assert ctx.path("detector").read_bytes() == FILES["det.bin"]
    s = _Stub()
    return FacePack(ctx.manifest, s, s, s, s)


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SFSR_PACKS_DIR", str(tmp_path / "packs"))
    monkeypatch.setenv("SFSR_PACK_CACHE", str(tmp_path / "cache"))
    pack.register_loader("testkind", _stub_loader)


def test_manifest_json_round_trip_is_exact():
    m = _manifest()
    again = PackManifest.from_json(m.to_json())
    assert again == m
    assert again.file("identity").name == "rec.bin"
    assert again.alignment.points == (0, 1, 2)
    assert json.loads(m.to_json())["format"] == pack.MANIFEST_FORMAT


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.pop("kind"), "kind"),
        (lambda d: d["files"][0].update(sha256="abc"), "not 64 hex digits"),
        (lambda d: d.update(alignment={"template": "mystery", "points": [0, 1]}), "mystery"),
        (lambda d: d.update(alignment={"template": "arcface-112", "points": [0, 7]}), "subset of 0..4"),
        (lambda d: d.update(format=99), "format 99"),
    ],
)
def test_malformed_manifest_is_a_clear_error(edit, message):
    d = _manifest().to_dict()
    edit(d)
    with pytest.raises(PackError, match=message):
        PackManifest.from_json(json.dumps(d), where="m.json")


def test_file_by_role_errors_name_the_roles():
    with pytest.raises(PackError, match="role 'pose'.*found 0.*detector"):
        _manifest().file("pose")


def test_verify_ok_returns_manifest(tmp_path):
    root = _write_pack(tmp_path / "p")
    assert pack.verify(str(root)) == _manifest()


def test_tampered_file_fails_naming_file_and_both_checksums(tmp_path):
    root = _write_pack(tmp_path / "p")
    (root / "rec.bin").write_bytes(b"evil")
    with pytest.raises(PackError) as e:
        pack.verify(str(root))
    expected = _sha(FILES["rec.bin"])
    assert e.value.file == "rec.bin" and e.value.expected == expected and e.value.actual == _sha(b"evil")
    assert "rec.bin" in str(e.value) and expected in str(e.value) and _sha(b"evil") in str(e.value)


def test_missing_files_are_all_listed(tmp_path):
    root = _write_pack(tmp_path / "p")
    (root / "det.bin").unlink()
    (root / "sub" / "expr.bin").unlink()
    with pytest.raises(PackError) as e:
        pack.open_pack(str(root))
    assert [(p[0], p[2]) for p in e.value.problems] == [("det.bin", "missing"), ("sub/expr.bin", "missing")]
    assert _sha(FILES["det.bin"]) in str(e.value) and "missing" in str(e.value)


def test_folder_without_manifest_says_how_to_make_one(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackError, match="packs init"):
        pack.open_pack(str(tmp_path / "empty"))
    with pytest.raises(PackError, match="no such folder"):
        pack.open_pack(str(tmp_path / "nowhere"))


def test_open_pack_uses_the_registered_loader_and_crop_size(tmp_path):
    root = _write_pack(tmp_path / "p")
    fp = pack.open_pack(str(root), crop_size=128)
    assert fp.name == "tiny" and fp.crop_size == 128 and fp.location == str(root)
    img = np.zeros((112, 112, 3), np.uint8)
    crop, m = fp.align(img, fp.detector.detect(img)[0])
    assert crop.shape == (128, 128, 3) and m.shape == (2, 3)
    # the stub landmarks are the 112 template, so the matrix is a pure 128/112 scale
    np.testing.assert_allclose(m, [[128 / 112, 0, 0], [0, 128 / 112, 0]], atol=1e-3)


def test_open_pack_by_name_under_packs_dir(tmp_path):
    _write_pack(pack.packs_dir() / "mine")
    assert pack.open_pack("mine").manifest.name == "tiny"


def test_unknown_kind_is_refused(tmp_path):
    root = _write_pack(tmp_path / "p", kind="nobody")
    with pytest.raises(PackError, match="no loader for pack kind 'nobody'"):
        pack.open_pack(str(root))


class _FakeS3:
    """Stands in for sfsr.io.storage.read_bytes / stat_files over an in-memory bucket, counting reads."""

    def __init__(self, objects: dict[str, bytes]):
        self.objects, self.reads = objects, []

    def read_bytes(self, uri: str) -> bytes:
        self.reads.append(uri)
        if uri not in self.objects:
            from sfsr.io.storage import StorageError

            raise StorageError(f"{uri}: no such key")
        return self.objects[uri]

    def stat_files(self, prefix: str) -> list:
        from sfsr.io.storage import FileStat

        return sorted(
            (FileStat(u, len(d), _sha(d)) for u, d in self.objects.items() if u.startswith(prefix)), key=lambda s: s.uri
        )


def _s3(monkeypatch, objects):
    from sfsr.io import storage

    fake = _FakeS3(objects)
    monkeypatch.setattr(storage, "read_bytes", fake.read_bytes)
    monkeypatch.setattr(storage, "stat_files", fake.stat_files)
    return fake


def _bucket(manifest: PackManifest | None = None) -> dict[str, bytes]:
    objs = {f"s3://b/packs/tiny/{n}": d for n, d in FILES.items()}
    objs["s3://b/packs/tiny/sfsr-pack.json"] = (manifest or _manifest()).to_json().encode()
    return objs


def test_s3_pack_downloads_once_into_cache_keyed_by_content(monkeypatch):
    objs = _bucket()
    fake = _s3(monkeypatch, objs)
    fp = pack.open_pack("s3://b/packs/tiny/")
    assert fp.location == "s3://b/packs/tiny"
    copies = list(pack.cache_dir().glob("*/sub/expr.bin"))
    assert [c.read_bytes() for c in copies] == [FILES["sub/expr.bin"]]
    assert len(fake.reads) == 4  # manifest + 3 files
    pack.open_pack("s3://b/packs/tiny")
    assert len(fake.reads) == 4  # unchanged listing: everything came from the cache
    objs["s3://b/packs/tiny/sfsr-pack.json"] = _manifest().to_json().encode() + b"\n"  # a new version of the pack
    pack.open_pack("s3://b/packs/tiny")
    assert len(fake.reads) == 8 and len(list(pack.cache_dir().glob("*/sub/expr.bin"))) == 2


def test_s3_tampered_object_fails_verification(monkeypatch):
    objs = _bucket()
    objs["s3://b/packs/tiny/rec.bin"] = b"swapped"
    _s3(monkeypatch, objs)
    with pytest.raises(PackError) as e:
        pack.open_pack("s3://b/packs/tiny")
    assert e.value.file == "rec.bin" and e.value.actual == _sha(b"swapped")


def test_s3_missing_object_names_file_and_checksum(monkeypatch):
    objs = _bucket()
    del objs["s3://b/packs/tiny/det.bin"]
    _s3(monkeypatch, objs)
    with pytest.raises(PackError, match=f"det.bin.*{_sha(FILES['det.bin'])}"):
        pack.open_pack("s3://b/packs/tiny")


TINY_LAYOUT = pack.Layout(
    kind="testkind",
    files={"a.onnx": "detector", "b.onnx": "identity"},
    input_size={"identity": 112},
    normalisation={"identity": Normalisation((127.5,) * 3, (127.5,) * 3)},
    alignment=Alignment(),
    licence="test licence",
    source="test",
)


def test_init_manifest_trust_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setitem(pack.LAYOUTS, "tiny-layout", TINY_LAYOUT)
    root = tmp_path / "tp"
    root.mkdir()
    for fname in TINY_LAYOUT.files:
        (root / fname).write_bytes(fname.encode() * 10)
    m = pack.init_manifest(root, "tiny-layout")
    assert m.kind == "testkind" and m.name == "tp" and m.version == "tiny-layout"
    assert m.file("identity").name == "b.onnx" and m.input_size["identity"] == 112
    assert m.file("detector").sha256 == _sha(b"a.onnx" * 10) and m.licence == "test licence"
    assert PackManifest.from_json((root / pack.MANIFEST_NAME).read_text()) == m
    with pytest.raises(PackError, match="exists already"):
        pack.init_manifest(root, "tiny-layout")
    (root / "b.onnx").write_bytes(b"changed")
    with pytest.raises(PackError, match="b.onnx"):
        pack.verify(str(root))
    assert pack.init_manifest(root, "tiny-layout", overwrite=True).file("identity").sha256 == _sha(b"changed")


def test_init_manifest_refuses_incomplete_folder_and_unknown_layout(tmp_path, monkeypatch):
    monkeypatch.setitem(pack.LAYOUTS, "tiny-layout", TINY_LAYOUT)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "b.onnx").write_bytes(b"r")
    with pytest.raises(PackError, match="a.onnx"):
        pack.init_manifest(tmp_path / "x", "tiny-layout")
    with pytest.raises(PackError, match="known layouts"):
        pack.init_manifest(tmp_path / "x", "buffalo_xl")
    assert not (tmp_path / "x" / pack.MANIFEST_NAME).exists()


def test_insightface_layouts_load_on_demand():
    assert {"buffalo_l", "antelopev2"} <= set(pack.layout_names())
    assert pack.get_layout("buffalo_l").files["w600k_r50.onnx"] == "identity"
    assert pack.get_layout("antelopev2").kind == "insightface"


def test_list_packs_reports_status_per_folder(tmp_path):
    good = _write_pack(pack.packs_dir() / "good")
    bad = _write_pack(pack.packs_dir() / "bad")
    (bad / "det.bin").write_bytes(b"x")
    (pack.packs_dir() / "loose").mkdir()
    rows = {Path(r.location).name: r for r in pack.list_packs()}
    assert rows["builtin"].kind == "builtin" and rows["builtin"].status == "ok"
    assert rows[good.name].status == "ok" and rows[good.name].licence == "CC0"
    assert rows[bad.name].status == "det.bin: sha256 mismatch"
    assert "sfsr-pack.json" in rows["loose"].status


def test_cli_verify_and_list_exit_codes(tmp_path, capsys):
    from sfsr.cli import main

    root = _write_pack(tmp_path / "p")
    assert main(["packs", "verify", str(root)]) == 0
    assert "3 files match" in capsys.readouterr().out
    (root / "rec.bin").write_bytes(b"oops")
    assert main(["packs", "verify", str(root)]) == 1
    err = capsys.readouterr().err
    assert "rec.bin" in err and _sha(FILES["rec.bin"]) in err
    _write_pack(pack.packs_dir() / "broken")
    (pack.packs_dir() / "broken" / "det.bin").unlink()
    assert main(["packs", "list"]) == 1
    assert "det.bin: missing" in capsys.readouterr().out
