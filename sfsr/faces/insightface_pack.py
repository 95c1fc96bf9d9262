"""The insightface pack loader (kind "insightface"): buffalo_l / antelopev2 folders via onnxruntime.

Importing this module registers
- the loader for manifests of kind "insightface" with `sfsr.faces.pack.register_loader`, and
- the layouts in sfsr/faces/manifests/{buffalo_l,antelopev2}.json with `register_layout`, so
  `init_manifest(folder, "buffalo_l")` writes the roles, sizes, normalisation and licence the
  loader expects.

What a loaded pack runs (CUDAExecutionProvider when onnxruntime has it, else CPU; `providers=`
of `open_pack` overrides):
- detector  (role "detector", SCRFD with keypoints): `ScrfdDetector` at input_size["detector"];
- pose      (role "landmarks_3d68"): `LandmarkPoseEstimator`, yaw/pitch/roll in degrees;
- identity  (role "identity", ArcFace): `ArcFaceEncoder`, 112 px aligned crops -> unit vectors;
- expression: `ExpressionEncoder`: 3D-landmark geometry, preceded by the outputs of an optional
  user-supplied ONNX regressor listed with role "expression" (any (1|N, 3, S, S) -> (1|N, K)
  model; its normalisation comes from the manifest's normalisation["expression"]).
Roles "landmarks_2d106" and "genderage" are verified with the pack but not run.

Normalisation of each network comes from the manifest; where the manifest has none for a role,
insightface's own rule for that network is used (`normalisation_for`).

The same code runs on a real buffalo_l folder and on the small stand-ins that
tests/fixtures/onnx_standins.py writes with the real files' input/output signatures.
"""

from __future__ import annotations

import importlib.resources
import json
import warnings
from collections.abc import Mapping
from typing import Any

from sfsr.faces.insightface_encoders import ArcFaceEncoder, ExpressionEncoder, LandmarkPoseEstimator, Landmarks3D
from sfsr.faces.insightface_runtime import OnnxNet, graph_normalisation, select_providers
from sfsr.faces.insightface_scrfd import ScrfdDetector
from sfsr.faces.pack import (
    MANIFEST_NAME,
    Alignment,
    FacePack,
    Layout,
    Normalisation,
    PackContext,
    PackError,
    PackManifest,
    register_layout,
    register_loader,
)

KIND = "insightface"
LAYOUT_NAMES = ("buffalo_l", "antelopev2")

# SCRFD's fixed input normalisation in insightface, used when a manifest does not give one.
DETECTOR_NORMALISATION = Normalisation((127.5,) * 3, (128.0,) * 3)
DEFAULT_DET_SIZE = 640


class UnpublishedWeightsWarning(UserWarning):
    """A pack file's checksum differs from the one published for the official release file."""


def layout_document(name: str) -> dict[str, Any]:
    """The raw JSON of sfsr/faces/manifests/NAME.json (a layout, not a pack manifest)."""
    if name not in LAYOUT_NAMES:
        raise PackError(f"no insightface layout {name!r}; known: {list(LAYOUT_NAMES)}")
    text = importlib.resources.files("sfsr.faces").joinpath("manifests", f"{name}.json").read_text()
    return json.loads(text)


def layout_from_document(doc: Mapping[str, Any]) -> Layout:
    """A `pack.Layout` from a layout JSON document."""
    where = f"layout {doc.get('layout', '?')!r}"
    try:
        align = doc.get("alignment", {})
        return Layout(
            kind=str(doc["kind"]),
            files={str(k): str(v) for k, v in doc["files"].items()},
            input_size={str(k): int(v) for k, v in doc["input_size"].items()},
            normalisation={
                str(k): Normalisation(tuple(map(float, v["mean"])), tuple(map(float, v["std"])))
                for k, v in doc["normalisation"].items()
            },
            alignment=Alignment(str(align.get("template", "arcface-112")), tuple(align.get("points", (0, 1, 2, 3, 4)))),
            licence=str(doc["licence"]),
            source=str(doc["source"]),
            notes=str(doc.get("notes", "")),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise PackError(f"{where}: malformed layout file ({type(e).__name__}: {e})") from e


def published_mismatches(manifest: PackManifest) -> list[tuple[str, str, str]]:
    """(file, published sha256, manifest sha256) for each file of a buffalo_l / antelopev2 pack
    whose checksum differs from the one recorded for the official release file. Empty when the
    manifest is not of a known layout (its `version` names the layout `init_manifest` used)."""
    if manifest.version not in LAYOUT_NAMES:
        return []
    published = layout_document(manifest.version).get("published_sha256", {})
    return [
        (f.name, published[f.name], f.sha256)
        for f in manifest.files
        if f.name in published and published[f.name] != f.sha256
    ]


def normalisation_for(ctx: PackContext, role: str) -> Normalisation:
    """The manifest's normalisation for `role`; without one, insightface's rule for that kind of
    network (fixed for SCRFD, read from the graph for recognisers and landmark models). A user's
    expression regressor has no such rule, so its manifest entry must say."""
    manifest = ctx.manifest
    if role in manifest.normalisation:
        return manifest.normalisation[role]
    if role == "detector":
        return DETECTOR_NORMALISATION
    if role in ("identity", "landmarks_3d68"):
        return graph_normalisation(ctx.path(role), role)
    raise PackError(
        f"pack {manifest.name!r} at {ctx.location}: no normalisation for role {role!r}; add "
        f'"normalisation": {{"{role}": {{"mean": [...], "std": [...]}}}} (pixels 0..255, RGB) '
        f"to its {MANIFEST_NAME}"
    )


def load_insightface_pack(ctx: PackContext) -> FacePack:
    """Build the FacePack of a verified insightface pack (the registered loader)."""
    manifest = ctx.manifest
    for role in ("detector", "identity", "landmarks_3d68"):
        if not manifest.has_role(role):
            raise PackError(
                f"pack {manifest.name!r} at {ctx.location}: no file with role {role!r}; an insightface "
                "pack needs detector, identity and landmarks_3d68 (re-run `sfsr packs init` with "
                "--layout buffalo_l or antelopev2)"
            )
    mismatched = published_mismatches(manifest)
    if mismatched:
        lines = "; ".join(f"{n}: published {p[:12]}..., this pack {a[:12]}..." for n, p, a in mismatched)
        warnings.warn(
            f"pack {manifest.name!r} at {ctx.location}: files differ from the official {manifest.version} "
            f"release ({lines}); fine for converted or re-exported weights, otherwise re-download",
            UnpublishedWeightsWarning,
            stacklevel=2,
        )
    providers = select_providers(ctx.providers)

    def net(role: str) -> OnnxNet:
        return OnnxNet(ctx.path(role), providers, normalisation_for(ctx, role), role)

    def label(role: str) -> tuple[str, str]:
        f = manifest.file(role)
        return f"{KIND}/{f.name.rsplit('.', 1)[0]}", f.sha256[:12]

    name, version = label("detector")
    detector = ScrfdDetector(
        net("detector"), name=name, version=version, det_size=int(manifest.input_size.get("detector", DEFAULT_DET_SIZE))
    )
    name, version = label("identity")
    identity = ArcFaceEncoder(net("identity"), name=name, version=version)
    landmarks = Landmarks3D(net("landmarks_3d68"))
    lm_name, lm_version = label("landmarks_3d68")
    pose = LandmarkPoseEstimator(landmarks, name=lm_name, version=lm_version)
    regressor = net("expression") if manifest.has_role("expression") else None
    expr_name, expr_version = lm_name + "-geometry", lm_version
    if regressor is not None:
        reg_name, reg_version = label("expression")
        expr_name, expr_version = f"{reg_name}+{expr_name}", f"{reg_version}+{lm_version}"
    expression = ExpressionEncoder(landmarks, regressor, name=expr_name, version=expr_version)
    return FacePack(manifest=manifest, detector=detector, pose=pose, identity=identity, expression=expression)


for _layout in LAYOUT_NAMES:
    register_layout(_layout, layout_from_document(layout_document(_layout)))
register_loader(KIND, load_insightface_pack)
