"""Training losses: the face-weighted denoising loss and the identity / expression losses.

All return per-sample losses (B,) so callers can weight, mask or average them (k-diffusion
style). The identity and expression losses act on an x0 estimate (see recovery.py) through a
differentiable recogniser: the synth judges (`sfsr.synth.judges.Judges`) on synthetic data, a
torch ArcFace (`sfsr.diffusion.arcface`) on real faces; anything with
`identity_embedding(images) -> (B, D)` (unit norm) and, for the expression loss,
`expression(images) -> (B, F)` fits.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from sfsr.diffusion.schedule import snr, target


class IdentityEncoder(Protocol):
    def identity_embedding(self, images: torch.Tensor) -> torch.Tensor: ...


class ExpressionEncoder(Protocol):
    def expression(self, images: torch.Tensor) -> torch.Tensor: ...


def face_weights(mask: torch.Tensor, face_weight: float = 1.0, background_weight: float = 0.1) -> torch.Tensor:
    """Per-pixel loss weights (B, 1, H, W): face pixels count face_weight, the rest
    background_weight. The background is pasted back at sampling, so its prediction matters
    little; weighting keeps the small model's capacity on the face (issue 4's measured warning)."""
    return background_weight + (face_weight - background_weight) * mask


def denoising_loss(
    pred: torch.Tensor,
    x0: torch.Tensor,
    eps: torch.Tensor,
    a: torch.Tensor,
    prediction_type: str,
    mask: torch.Tensor | None = None,
    *,
    face_weight: float = 1.0,
    background_weight: float = 0.1,
    min_snr_gamma: float | None = 5.0,
) -> torch.Tensor:
    """Per-sample weighted MSE (B,) between the network output and its target.

    pred, x0, eps (B, C, H, W); a (B,) alphas_cumprod at the sampled t; mask (B, 1, H, W) with
    1 = face (at the resolution of pred). min_snr_gamma: Min-SNR weighting (Hang et al. 2023),
    which balances timesteps and speeds up convergence; the weight is written for the chosen
    prediction type so that every type optimises min(SNR, gamma) * ||x0 error||^2."""
    tgt = target(x0, eps, a, prediction_type)
    err = (pred.float() - tgt.float()) ** 2  # (B, C, H, W)
    if mask is not None:
        w = face_weights(mask.float(), face_weight, background_weight)  # (B, 1, H, W)
        per = (err * w).sum(dim=(1, 2, 3)) / (w.sum(dim=(1, 2, 3)) * err.shape[1]).clamp_min(1e-8)
    else:
        per = err.mean(dim=(1, 2, 3))
    if min_snr_gamma is not None:
        s = snr(a.double()).clamp_min(1e-12)
        clipped = torch.clamp(s, max=min_snr_gamma)
        # eps error = SNR * x0 error; v error = (SNR + 1) * x0 error; sample error = x0 error.
        denom = {"epsilon": s, "v_prediction": s + 1, "sample": torch.ones_like(s)}[prediction_type]
        per = per * (clipped / denom).to(per.dtype)
    return per


def identity_loss(encoder: IdentityEncoder, x0_hat: torch.Tensor, target_embedding: torch.Tensor) -> torch.Tensor:
    """1 - cos(encoder(x0_hat), target) per sample (B,). x0_hat (B, 3, S, S) in [-1, 1] at the
    encoder's input size; target (B, D)."""
    emb = encoder.identity_embedding(x0_hat.clamp(-1, 1))  # (B, D)
    return 1.0 - F.cosine_similarity(emb, target_embedding.to(emb.dtype), dim=1)


def expression_loss(
    encoder: ExpressionEncoder,
    x0_hat: torch.Tensor,
    target_expression: torch.Tensor,
    scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error of the encoder's expression of x0_hat against the target (B,).
    scale (F,) divides each component first (e.g. its spread), so factors weigh equally."""
    pred = encoder.expression(x0_hat.clamp(-1, 1))  # (B, F)
    diff = pred - target_expression.to(pred.dtype)
    if scale is not None:
        diff = diff / scale.to(diff)
    return (diff**2).mean(dim=1)


def resize_for(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 3, size, size), area when shrinking, bilinear when growing."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    mode = "area" if images.shape[-1] > size else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(images, size=(size, size), mode=mode, **kw)
