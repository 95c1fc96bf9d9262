"""Judge networks: small CNNs that read identity and expression factors back from a face.

Used as differentiable losses and as evaluators on synthetic faces. Plain torch, weights in
safetensors (never pickle), architecture in a JSON card next to the weights.

- IdentityJudge: cosine classifier (CosFace-style) over the training identities. Its
  embedding (B, D) is L2-normalised, so the logits are `scale * cos(embedding, class
  centre)` and the cosine between two embeddings is directly an identity similarity.
- ExpressionJudge: regresses the EXPRESSION_FACTORS vector in its native ranges (it learns
  z-scored targets and undoes the z-score with buffers stored in the weights).

Tensor inputs are float (B, 3, S, S) in [-1, 1] (RGB, S = the judge's input size); the
numpy helpers take uint8 (B, S', S', 3) and resize with INTER_AREA when S' != S.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from sfsr.io.images import resize_square_batch
from sfsr.synth.factors import EXPRESSION_FACTORS

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class JudgeConfig:
    """Architecture of both judges (saved in the weights card, read back by load_judges)."""

    size: int = 32  # input side in pixels
    widths: tuple[int, int, int] = (32, 64, 96)  # channels of the three stages
    embed_dim: int = 128  # identity embedding size
    hidden: int = 128  # expression head hidden units
    n_identities: int = 200
    n_factors: int = len(EXPRESSION_FACTORS)
    cos_scale: float = 16.0  # logit scale of the cosine classifier


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, k, stride, k // 2 if k % 2 else 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class _Trunk(nn.Module):
    """(B, 3, S, S) -> (B, 512). A 4x4 stride-2 stem keeps 1-px features (brows, lip lines)
    as channels instead of blurring them away, at a quarter of the cost of a full-res stage."""

    def __init__(self, widths: tuple[int, int, int]) -> None:
        super().__init__()
        a, b, c = widths
        self.body = nn.Sequential(
            *_conv(3, a, k=4, stride=2),  # (B, a, S/2, S/2)
            *_conv(a, a),
            nn.MaxPool2d(2),  # (B, a, S/4, S/4)
            *_conv(a, b),
            *_conv(b, b),
            nn.MaxPool2d(2),  # (B, b, S/8, S/8)
            *_conv(b, c),
            nn.AdaptiveAvgPool2d(4),  # (B, c, 4, 4) for any S >= 32
            *_conv(c, 32, k=1),  # (B, 32, 4, 4)
            nn.Flatten(),  # (B, 512)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class IdentityJudge(nn.Module):
    def __init__(self, cfg: JudgeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = _Trunk(cfg.widths)
        self.embed = nn.Linear(512, cfg.embed_dim)
        self.centres = nn.Parameter(torch.randn(cfg.n_identities, cfg.embed_dim) * 0.1)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed(self.trunk(x)), dim=1)  # (B, D), unit norm

    def cosines(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x) @ F.normalize(self.centres, dim=1).T  # (B, N) in [-1, 1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cfg.cos_scale * self.cosines(x)  # (B, N) logits


class ExpressionJudge(nn.Module):
    def __init__(self, cfg: JudgeConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.trunk = _Trunk(cfg.widths)
        self.head = nn.Sequential(
            nn.Linear(512, cfg.hidden), nn.ReLU(inplace=True), nn.Linear(cfg.hidden, cfg.n_factors)
        )
        # z-score of the training targets; set by the trainer, saved with the weights.
        self.register_buffer("target_mean", torch.zeros(cfg.n_factors))
        self.register_buffer("target_std", torch.ones(cfg.n_factors))

    def normalised(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))  # (B, F) z-scored factors

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalised(x) * self.target_std + self.target_mean  # (B, F)


def uint8_to_tensor(images: np.ndarray, size: int | None = None) -> torch.Tensor:
    """uint8 RGB (B, H, W, 3) or (H, W, 3) -> float (B, 3, size, size) in [-1, 1]."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.ndim not in (3, 4) or arr.shape[-1] != 3:
        raise ValueError(
            f"images: got dtype {arr.dtype} shape {arr.shape}; expected uint8 RGB (B, H, W, 3) or (H, W, 3)"
        )
    if arr.ndim == 3:
        arr = arr[None]
    if size is not None:
        arr = resize_square_batch(arr, size, enlarge=cv2.INTER_AREA)
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float()  # (B, 3, H, W)
    return t / 127.5 - 1.0


class Judges(nn.Module):
    """Both judges, frozen (parameters need no grad; gradients still flow to the input)."""

    def __init__(
        self, cfg: JudgeConfig, identity: IdentityJudge, expression: ExpressionJudge, card: dict | None = None
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.identity_net = identity
        self.expression_net = expression
        self.card = card or {}
        self.eval()
        self.requires_grad_(False)

    @property
    def size(self) -> int:
        return self.cfg.size

    def _check(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (self.size,) * 2:
            raise ValueError(
                f"images: got shape {tuple(images.shape)}, expected (B, 3, {self.size}, "
                f"{self.size}) in [-1, 1]; resize (e.g. F.interpolate(..., mode='area')) or "
                f"load_judges(size=...) with judges trained at your size"
            )
        return images.to(memory_format=torch.channels_last)

    def identity(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, n_identities) logits (cos_scale * cosine)."""
        return self.identity_net(self._check(images))

    def identity_embedding(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, embed_dim), unit L2 norm."""
        return self.identity_net.embedding(self._check(images))

    def expression(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] -> (B, F) factors in EXPRESSION_FACTORS order."""
        return self.expression_net(self._check(images))

    @torch.no_grad()
    def predict_identity_np(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) -> predicted identity ids (B,) int64."""
        x = uint8_to_tensor(images, self.size).to(self._device())
        return self.identity(x).argmax(dim=1).cpu().numpy()

    @torch.no_grad()
    def identity_embedding_np(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) -> float32 (B, embed_dim), unit norm."""
        x = uint8_to_tensor(images, self.size).to(self._device())
        return self.identity_embedding(x).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def expression_np(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, H, W, 3) -> float32 (B, F) in EXPRESSION_FACTORS order."""
        x = uint8_to_tensor(images, self.size).to(self._device())
        return self.expression(x).cpu().numpy().astype(np.float32)

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def weights_paths(size: int, folder: Path | str = WEIGHTS_DIR) -> tuple[Path, Path]:
    """(safetensors path, JSON card path) of the judges trained at `size`."""
    folder = Path(folder)
    return folder / f"judges_{size}px.safetensors", folder / f"judges_{size}px.json"


def build_judges(cfg: JudgeConfig) -> tuple[IdentityJudge, ExpressionJudge]:
    return IdentityJudge(cfg), ExpressionJudge(cfg)


def load_judges(size: int = 32, folder: Path | str = WEIGHTS_DIR, device: str | torch.device = "cpu") -> Judges:
    """Load the shipped (or `folder`'s) judges for `size` px inputs via safetensors."""
    weights, card_path = weights_paths(size, folder)
    if not weights.is_file() or not card_path.is_file():
        have = sorted(p.name for p in Path(folder).glob("judges_*px.safetensors"))
        raise FileNotFoundError(
            f"{weights}: no judges trained at {size} px (found {have or 'none'}); train them "
            f"with `python -m sfsr.synth.train_judges --size {size}` or pick an existing size"
        )
    card = json.loads(card_path.read_text())
    raw = dict(card["config"])
    raw["widths"] = tuple(raw["widths"])
    cfg = JudgeConfig(**raw)
    identity, expression = build_judges(cfg)
    state = load_file(str(weights))
    for prefix, net in (("identity.", identity), ("expression.", expression)):
        sub = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        net.load_state_dict(sub, strict=True)
    judges = Judges(cfg, identity, expression, card)
    return judges.to(device=device, memory_format=torch.channels_last)


def judges_state(identity: IdentityJudge, expression: ExpressionJudge) -> dict[str, torch.Tensor]:
    """Flat, contiguous state dict for safetensors.torch.save_file."""
    out = {f"identity.{k}": v for k, v in identity.state_dict().items()}
    out.update({f"expression.{k}": v for k, v in expression.state_dict().items()})
    return {k: v.detach().cpu().contiguous() for k, v in out.items()}


def config_dict(cfg: JudgeConfig) -> dict:
    d = asdict(cfg)
    d["widths"] = list(cfg.widths)
    return d
