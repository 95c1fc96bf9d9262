"""Face analysis: detect, align, pose, identity and expression encoders, in model packs.

Importing this package loads no model code; `open_pack` imports a pack kind's loader on first use.
"""

from sfsr.faces.analyze import FaceRecord, analyze_image, encode_crops, face_mask
from sfsr.faces.base import Detection, Detector, Encoder, OutputSpec, Pose, PoseEstimator
from sfsr.faces.pack import (
    FacePack,
    PackContext,
    PackError,
    PackFile,
    PackManifest,
    init_manifest,
    list_packs,
    open_pack,
    register_loader,
    verify,
)

__all__ = [
    "Detection",
    "Detector",
    "Encoder",
    "FacePack",
    "FaceRecord",
    "OutputSpec",
    "PackContext",
    "PackError",
    "PackFile",
    "PackManifest",
    "Pose",
    "PoseEstimator",
    "analyze_image",
    "encode_crops",
    "face_mask",
    "init_manifest",
    "list_packs",
    "open_pack",
    "register_loader",
    "verify",
]
