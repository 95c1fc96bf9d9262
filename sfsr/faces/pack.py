"""Model packs: a manifest of checksummed model files, verified, then loaded by kind.

A pack folder holds model files plus `sfsr-pack.json` (a `PackManifest`). Opening a pack:

1. resolve the spec: "builtin" (files shipped inside installed Python packages), a local folder,
   a name under $SFSR_PACKS_DIR, or an s3:// prefix (copied by sfsr.io.cache.fetch_folder, the one
   s3 folder download, into a cache folder keyed by the prefix's listing, so two versions of a
   pack never share a cache entry);
2. verify every file's sha256 against the manifest (a wrong or missing file is a `PackError`
   naming the file, the expected and the actual checksum);
3. call the loader registered for the manifest's `kind` (`register_loader`), which builds the
   `FacePack` from a `PackContext` holding the verified local paths.

Loaders for "builtin" (sfsr.faces.builtin) and "insightface" (sfsr.faces.insightface_pack) are
imported on first use, so importing this module loads no model code.

Roles name what a file is for; loaders look files up by role. Roles used so far: detector,
landmarks5, landmarks68, identity, expression, landmarks_3d68, landmarks_2d106, genderage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.resources
import importlib.util
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sfsr.faces.align import align_face
from sfsr.faces.base import Detection, Detector, Encoder, PoseEstimator

MANIFEST_NAME = "sfsr-pack.json"
MANIFEST_FORMAT = 1
TEMPLATES = ("arcface-112",)  # alignment templates sfsr.faces.align implements
DEFAULT_CROP_SIZE = 256  # the face table's crop size unless a job says otherwise


class PackError(RuntimeError):
    """A pack cannot be used. `problems` lists every (file, expected sha256, actual) found."""

    def __init__(self, message: str, problems: Sequence[tuple[str, str, str]] = ()):
        super().__init__(message)
        self.problems = list(problems)
        self.file = problems[0][0] if problems else None
        self.expected = problems[0][1] if problems else None
        self.actual = problems[0][2] if problems else None


@dataclass(frozen=True)
class PackFile:
    """One model file. `name` is relative to the pack folder, or to the folder of the installed
    Python package `package` when that is set (the builtin pack's files ship inside packages)."""

    name: str
    sha256: str
    role: str
    licence: str
    size: int
    package: str = ""


@dataclass(frozen=True)
class Normalisation:
    """Input normalisation of a network: (pixel - mean) / std per channel, pixels in 0..255."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass(frozen=True)
class Alignment:
    """Which template crops are aligned to, and which of the five landmarks the fit uses."""

    template: str = "arcface-112"
    points: tuple[int, ...] = (0, 1, 2, 3, 4)


@dataclass(frozen=True)
class PackManifest:
    name: str
    version: str
    kind: str  # "builtin" | "insightface" | ...; picks the loader
    files: tuple[PackFile, ...]
    input_size: Mapping[str, int] = field(default_factory=dict)  # role -> square input side, px
    normalisation: Mapping[str, Normalisation] = field(default_factory=dict)  # role -> mean/std
    alignment: Alignment = field(default_factory=Alignment)
    licence: str = ""  # one-line summary; per-file licences are in `files`
    source: str = ""  # where the files come from
    notes: str = ""

    def file(self, role: str) -> PackFile:
        """The single file with `role`; PackError if there is none or more than one."""
        found = [f for f in self.files if f.role == role]
        if len(found) != 1:
            have = sorted({f.role for f in self.files})
            raise PackError(
                f"pack {self.name!r}: expected exactly one file with role {role!r}, found {len(found)}; "
                f"roles in the manifest: {have}"
            )
        return found[0]

    def has_role(self, role: str) -> bool:
        return any(f.role == role for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": MANIFEST_FORMAT,
            "name": self.name,
            "version": self.version,
            "kind": self.kind,
            "files": [{k: v for k, v in vars(f).items() if not (k == "package" and not v)} for f in self.files],
            "input_size": dict(self.input_size),
            "normalisation": {r: {"mean": list(n.mean), "std": list(n.std)} for r, n in self.normalisation.items()},
            "alignment": {"template": self.alignment.template, "points": list(self.alignment.points)},
            "licence": self.licence,
            "source": self.source,
            "notes": self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "manifest") -> PackManifest:
        try:
            if d.get("format", MANIFEST_FORMAT) != MANIFEST_FORMAT:
                raise PackError(f"{where}: manifest format {d.get('format')} is not {MANIFEST_FORMAT}; upgrade sfsr")
            files = tuple(
                PackFile(
                    name=str(f["name"]),
                    sha256=str(f["sha256"]).lower(),
                    role=str(f["role"]),
                    licence=str(f.get("licence", "")),
                    size=int(f["size"]),
                    package=str(f.get("package", "")),
                )
                for f in d["files"]
            )
            align = d.get("alignment", {})
            points = tuple(int(i) for i in align.get("points", (0, 1, 2, 3, 4)))
            manifest = cls(
                name=str(d["name"]),
                version=str(d["version"]),
                kind=str(d["kind"]),
                files=files,
                input_size={str(k): int(v) for k, v in d.get("input_size", {}).items()},
                normalisation={
                    str(k): Normalisation(tuple(map(float, v["mean"])), tuple(map(float, v["std"])))
                    for k, v in d.get("normalisation", {}).items()
                },
                alignment=Alignment(str(align.get("template", "arcface-112")), points),
                licence=str(d.get("licence", "")),
                source=str(d.get("source", "")),
                notes=str(d.get("notes", "")),
            )
        except PackError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise PackError(
                f"{where}: malformed pack manifest ({type(e).__name__}: {e}); compare with sfsr-pack.json "
                "written by `sfsr packs init`"
            ) from e
        for f in manifest.files:
            if len(f.sha256) != 64 or any(c not in "0123456789abcdef" for c in f.sha256):
                raise PackError(f"{where}: file {f.name} has sha256 {f.sha256!r}, which is not 64 hex digits")
        if manifest.alignment.template not in TEMPLATES:
            raise PackError(f"{where}: alignment template {manifest.alignment.template!r} unknown; known: {TEMPLATES}")
        if not manifest.alignment.points or not set(manifest.alignment.points) <= {0, 1, 2, 3, 4}:
            raise PackError(f"{where}: alignment points {manifest.alignment.points} must be a non-empty subset of 0..4")
        return manifest

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "manifest") -> PackManifest:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise PackError(f"{where}: not valid JSON ({e})") from e
        if not isinstance(d, dict):
            raise PackError(f"{where}: expected a JSON object, got {type(d).__name__}")
        return cls.from_dict(d, where)


@dataclass(frozen=True)
class PackContext:
    """What a loader gets: the manifest and the verified local path of every file."""

    manifest: PackManifest
    location: str  # the spec the pack was opened from, for messages
    paths: Mapping[str, Path]  # PackFile.name -> local file
    providers: tuple[str, ...] | None = None  # onnxruntime providers; None = loader's default

    def path(self, role: str) -> Path:
        return self.paths[self.manifest.file(role).name]


@dataclass(frozen=True)
class FacePack:
    """A loaded pack: detector + pose on source images, identity + expression on aligned crops."""

    manifest: PackManifest
    detector: Detector
    pose: PoseEstimator
    identity: Encoder
    expression: Encoder
    crop_size: int = DEFAULT_CROP_SIZE
    location: str = ""

    @property
    def name(self) -> str:
        return self.manifest.name

    def align(self, image: np.ndarray, detection: Detection, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Aligned crop (size, size, 3) uint8 and the (2, 3) source -> crop matrix."""
        return align_face(image, detection.landmarks5, size or self.crop_size, points=self.manifest.alignment.points)


Loader = Callable[[PackContext], FacePack]

# kind -> loader. Filled by the loader modules when they are imported; `_KNOWN_KINDS` says which
# module to import for a kind nobody registered yet.
_LOADERS: dict[str, Loader] = {}
_KNOWN_KINDS = {"builtin": "sfsr.faces.builtin", "insightface": "sfsr.faces.insightface_pack"}


def register_loader(kind: str, fn: Loader) -> None:
    """Make `open_pack` build packs whose manifest says `kind` with `fn(context) -> FacePack`."""
    _LOADERS[kind] = fn


def loader_for(kind: str) -> Loader:
    if kind not in _LOADERS and kind in _KNOWN_KINDS:
        importlib.import_module(_KNOWN_KINDS[kind])
    if kind not in _LOADERS:
        raise PackError(f"no loader for pack kind {kind!r}; known kinds: {sorted(set(_LOADERS) | set(_KNOWN_KINDS))}")
    return _LOADERS[kind]


# ---- locating and verifying files -------------------------------------------------------------


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def packs_dir() -> Path:
    """Where user packs live: $SFSR_PACKS_DIR, default ~/.cache/sfsr/packs."""
    return Path(os.environ.get("SFSR_PACKS_DIR") or Path.home() / ".cache" / "sfsr" / "packs")


def cache_dir() -> Path:
    """Where s3:// packs are downloaded: $SFSR_PACK_CACHE, default ~/.cache/sfsr/pack-cache."""
    return Path(os.environ.get("SFSR_PACK_CACHE") or Path.home() / ".cache" / "sfsr" / "pack-cache")


def package_dir(package: str) -> Path:
    """Folder of an installed top-level package, found without importing it (some, like
    face_recognition_models, import pkg_resources at import time, which new setuptools lacks)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PackError(
            f"Python package {package!r} is not installed; the builtin pack needs it "
            f"(pip install the versions pinned in pyproject.toml)"
        )
    return Path(list(spec.submodule_search_locations)[0])


def builtin_manifest() -> PackManifest:
    text = importlib.resources.files("sfsr.faces").joinpath("manifests", "builtin.json").read_text()
    return PackManifest.from_json(text, where="sfsr/faces/manifests/builtin.json")


def _local_paths(manifest: PackManifest, root: Path | None) -> dict[str, Path]:
    paths = {}
    for f in manifest.files:
        if f.package:
            paths[f.name] = package_dir(f.package) / f.name
        elif root is None:
            raise PackError(f"pack {manifest.name!r}: file {f.name} names no package and the pack has no folder")
        else:
            paths[f.name] = root / f.name
    return paths


def check_files(manifest: PackManifest, paths: Mapping[str, Path], location: str) -> None:
    """Hash every file; PackError listing each missing or mismatched one."""
    problems = []
    for f in manifest.files:
        p = paths[f.name]
        actual = sha256_file(p) if p.is_file() else "missing"
        if actual != f.sha256:
            problems.append((f.name, f.sha256, actual))
    if problems:
        lines = [
            f"  {name}: expected sha256 {exp}, " + ("file is missing" if act == "missing" else f"actual {act}")
            for name, exp, act in problems
        ]
        raise PackError(
            f"pack {manifest.name!r} at {location} failed verification:\n"
            + "\n".join(lines)
            + "\nRe-download the listed files; if you replaced them on purpose, re-run `sfsr packs init`.",
            problems,
        )


def _read_manifest(folder: Path) -> PackManifest:
    mpath = folder / MANIFEST_NAME
    if not mpath.is_file():
        raise PackError(f"{folder}: no {MANIFEST_NAME}; create one with `sfsr packs init {folder} --layout ...`")
    return PackManifest.from_json(mpath.read_bytes(), where=str(mpath))


def _fetch_s3(prefix: str) -> tuple[PackManifest, Path]:
    """An s3:// pack copied into the cache by fetch_folder (all-or-nothing, once per content);
    check_files then verifies what arrived against the manifest."""
    from sfsr.io import storage  # imported here: local packs need no S3 client
    from sfsr.io.cache import fetch_folder

    murl = storage.join(prefix, MANIFEST_NAME)
    try:
        folder = fetch_folder(prefix, cache_dir())
    except (storage.StorageError, FileNotFoundError) as e:
        raise PackError(f"{prefix}: cannot download the pack ({e})") from e
    if not (folder / MANIFEST_NAME).is_file():
        raise PackError(f"{murl}: no pack manifest there; upload the folder `sfsr packs init` wrote, manifest included")
    return PackManifest.from_json((folder / MANIFEST_NAME).read_bytes(), where=murl), folder


def resolve(spec: str) -> tuple[PackManifest, dict[str, Path], str]:
    """(manifest, local paths, location) for a spec, before verification."""
    if spec == "builtin":
        m = builtin_manifest()
        return m, _local_paths(m, None), "builtin"
    if spec.startswith("s3://"):
        prefix = spec.rstrip("/")
        m, folder = _fetch_s3(prefix)
        return m, _local_paths(m, folder), prefix
    folder = Path(spec).expanduser()
    if not folder.exists() and os.sep not in spec and (packs_dir() / spec).is_dir():
        folder = packs_dir() / spec  # a bare name: a pack under $SFSR_PACKS_DIR
    if not folder.is_dir():
        raise PackError(
            f"pack {spec!r}: not 'builtin', not an s3:// prefix, and no such folder (also looked in {packs_dir()})"
        )
    m = _read_manifest(folder)
    return m, _local_paths(m, folder), str(folder)


def verify(root_uri: str) -> PackManifest:
    """Check every file of the pack at `root_uri` ("builtin", folder, s3:// prefix); PackError if
    any is missing or has the wrong sha256. Returns the manifest."""
    manifest, paths, location = resolve(root_uri)
    check_files(manifest, paths, location)
    return manifest


def open_pack(
    spec: str = "builtin", *, providers: Sequence[str] | None = None, crop_size: int = DEFAULT_CROP_SIZE
) -> FacePack:
    """Resolve, verify and load a pack. `providers` goes to onnxruntime packs (None = their default)."""
    manifest, paths, location = resolve(spec)
    check_files(manifest, paths, location)
    ctx = PackContext(manifest, location, paths, tuple(providers) if providers is not None else None)
    pack = loader_for(manifest.kind)(ctx)
    return dataclasses.replace(pack, crop_size=crop_size, location=location)


# ---- user packs: layouts, init (trust on first use), listing ------------------------------------


@dataclass(frozen=True)
class Layout:
    """What `init_manifest` writes for a folder of known files (e.g. an insightface model zoo
    download): file name -> role, plus sizes, normalisation and alignment of that pack kind."""

    kind: str
    files: Mapping[str, str]  # file name -> role
    input_size: Mapping[str, int]
    normalisation: Mapping[str, Normalisation]
    alignment: Alignment
    licence: str
    source: str
    notes: str = ""


# name -> Layout, filled by the modules that own the layouts when imported (insightface_pack
# registers buffalo_l and antelopev2 from sfsr/faces/manifests/*.json); `_KNOWN_LAYOUTS` says
# which module to import for a name nobody registered yet, as `_KNOWN_KINDS` does for loaders.
LAYOUTS: dict[str, Layout] = {}
_KNOWN_LAYOUTS = {"buffalo_l": "sfsr.faces.insightface_pack", "antelopev2": "sfsr.faces.insightface_pack"}


def layout_names() -> list[str]:
    return sorted(set(LAYOUTS) | set(_KNOWN_LAYOUTS))


def get_layout(name: str) -> Layout:
    if name not in LAYOUTS and name in _KNOWN_LAYOUTS:
        importlib.import_module(_KNOWN_LAYOUTS[name])
    if name not in LAYOUTS:
        raise PackError(f"unknown layout {name!r}; known layouts: {layout_names()}")
    return LAYOUTS[name]


def register_layout(name: str, layout: Layout) -> None:
    """Add or replace a layout that `sfsr packs init --layout NAME` can write."""
    LAYOUTS[name] = layout


def init_manifest(
    folder: str | os.PathLike, layout: str, *, name: str | None = None, overwrite: bool = False
) -> PackManifest:
    """Write sfsr-pack.json for a folder the user filled, hashing the files found there.

    Trust on first use: whatever is in the folder now becomes the reference, so run this right
    after downloading from a source you trust; later `verify` catches any change. An existing
    manifest is never silently replaced (overwrite=True to re-trust on purpose).
    """
    root = Path(folder).expanduser()
    lay = get_layout(layout)
    if not root.is_dir():
        raise PackError(f"{root}: not a folder; put the {layout} files ({', '.join(lay.files)}) in one")
    missing = [f for f in lay.files if not (root / f).is_file()]
    if missing:
        raise PackError(
            f"{root}: layout {layout} needs {', '.join(missing)}, which are not there; "
            f"download the {layout} files into this folder first",
            [(f, "", "missing") for f in missing],
        )
    if (root / MANIFEST_NAME).exists() and not overwrite:
        raise PackError(f"{root / MANIFEST_NAME} exists already; pass overwrite (--force) to re-trust the files")
    files = tuple(
        PackFile(fname, sha256_file(root / fname), role, lay.licence, (root / fname).stat().st_size)
        for fname, role in lay.files.items()
    )
    manifest = PackManifest(
        name=name or root.name,
        version=layout,
        kind=lay.kind,
        files=files,
        input_size=dict(lay.input_size),
        normalisation=dict(lay.normalisation),
        alignment=lay.alignment,
        licence=lay.licence,
        source=lay.source,
        notes="manifest written by `sfsr packs init` (trust on first use: checksums are of the files found then)",
    )
    (root / MANIFEST_NAME).write_text(manifest.to_json())
    return manifest


@dataclass(frozen=True)
class PackStatus:
    name: str
    kind: str
    licence: str
    status: str  # "ok", or what is wrong
    location: str


def list_packs(directory: str | os.PathLike | None = None, *, check: bool = True) -> list[PackStatus]:
    """The builtin pack and every folder in `directory` (default `packs_dir()`), with a status
    from verification (check=False only reads the manifests)."""
    specs = ["builtin"]
    d = Path(directory) if directory is not None else packs_dir()
    if d.is_dir():
        specs += sorted(str(p) for p in d.iterdir() if p.is_dir())
    out = []
    for spec in specs:
        try:
            manifest, paths, location = resolve(spec)
        except PackError as e:
            out.append(PackStatus(Path(spec).name, "?", "?", str(e).splitlines()[0], spec))
            continue
        status = "ok" if check else "not verified"
        if check:
            try:
                check_files(manifest, paths, location)
            except PackError as e:
                status = "; ".join(
                    f"{n}: {'missing' if a == 'missing' else 'sha256 mismatch'}" for n, _, a in e.problems
                )
        out.append(PackStatus(manifest.name, manifest.kind, manifest.licence, status, location))
    return out
