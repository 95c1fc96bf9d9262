"""ArcFace in torch: an IResNet (insightface's arcface_torch layout) loaded from the user's weights.

ArcFace weights cannot be downloaded here, so nothing is shipped: a user with a licence for, say,
an iresnet50 trained on MS1MV3 points `load_arcface` at its state dict (.safetensors, or a .pt /
.pth read with torch.load(weights_only=True), never unpickling arbitrary objects). The depth is
read from the weights (number of blocks per stage), so r18 / r34 / r50 / r100 all load; insightface's
ONNX recognisers (w600k_r50, glintr100) convert with sfsr.diffusion.arcface_onnx (`sfsr packs arcface`). Used as
the differentiable identity recogniser for the identity loss on real faces
(sfsr.diffusion.losses.identity_loss): input (B, 3, S, S) RGB in [-1, 1], resized to 112 px.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

INPUT_SIZE = 112


class IBasicBlock(nn.Module):
    """BN - conv3x3 - BN - PReLU - conv3x3(stride) - BN, plus the (projected) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin, eps=1e-5)
        self.conv1 = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout, eps=1e-5)
        self.prelu = nn.PReLU(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout, eps=1e-5)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout, eps=1e-5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """(B, 3, 112, 112) -> (B, embedding) identity features (not normalised)."""

    def __init__(self, layers: tuple[int, int, int, int], embedding: int = 512) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        widths, cin = (64, 128, 256, 512), 64
        for k, (n, w) in enumerate(zip(layers, widths), start=1):
            blocks = [IBasicBlock(cin if i == 0 else w, w, 2 if i == 0 else 1) for i in range(n)]
            setattr(self, f"layer{k}", nn.Sequential(*blocks))
            cin = w
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(512 * 7 * 7, embedding)  # 112 px / 2^4 = 7
        self.features = nn.BatchNorm1d(embedding, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))  # (B, 64, 112, 112)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512, 7, 7)
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))  # (B, E)


class ArcFaceEncoder(nn.Module):
    """Frozen IResNet with the identity-encoder interface used by the losses."""

    size = INPUT_SIZE

    def __init__(self, net: IResNet) -> None:
        super().__init__()
        self.net = net.requires_grad_(False)
        self.eval()

    def identity_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) RGB in [-1, 1] -> (B, E) unit-norm embeddings (differentiable in images)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images: got shape {tuple(images.shape)}, expected (B, 3, S, S) RGB in [-1, 1]")
        if images.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return F.normalize(self.net(images), dim=1)

    def train(self, mode: bool = True) -> ArcFaceEncoder:  # always eval: BN statistics are fixed
        return super().train(False)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file, or a .pt/.pth state dict read with weights_only=True."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such ArcFace weights file")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # weights_only refuses pickled objects that are not plain tensors
        raise ValueError(
            f"{p}: not a plain state dict ({type(e).__name__}: {e}); save it with "
            "torch.save(model.state_dict(), path) or as .safetensors"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{p}: holds a {type(state).__name__}, expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def layers_from_state(state: dict[str, torch.Tensor]) -> tuple[int, int, int, int]:
    """Blocks per stage, from the keys layer{k}.{i}.* (e.g. (3, 4, 14, 3) for iresnet50)."""
    counts = [0, 0, 0, 0]
    for key in state:
        m = re.match(r"layer([1-4])\.(\d+)\.", key)
        if m:
            k, i = int(m.group(1)) - 1, int(m.group(2))
            counts[k] = max(counts[k], i + 1)
    if min(counts) == 0:
        raise ValueError(
            f"weights have blocks per stage {counts}: not an IResNet state dict (keys like "
            "'layer1.0.conv1.weight' expected, as insightface's arcface_torch saves them)"
        )
    return tuple(counts)  # type: ignore[return-value]


def load_arcface(path: str | Path, device: str | torch.device = "cpu") -> ArcFaceEncoder:
    """An ArcFaceEncoder from a weights file (architecture inferred from the keys)."""
    state = read_state_dict(path)
    try:
        layers = layers_from_state(state)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    fc = state.get("fc.weight")
    if fc is None or fc.shape[1] != 512 * 49:
        raise ValueError(
            f"{path}: fc.weight is {None if fc is None else tuple(fc.shape)}; expected "
            f"(E, {512 * 49}) of a 112 px IResNet"
        )
    net = IResNet(layers, embedding=int(fc.shape[0]))
    missing, unexpected = net.load_state_dict(state, strict=False)
    # num_batches_tracked is optional in saved BN layers; anything else missing is an error
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not match IResNet{layers}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return ArcFaceEncoder(net).to(device)
