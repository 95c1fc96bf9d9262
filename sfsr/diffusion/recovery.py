"""Clean-image recovery from x_t in K denoising steps (the paper's "midpoint" estimate, sec. 3.3).

The identity and expression losses need the clean image x0 behind a noisy training input x_t.
`recover_x0` estimates it by integrating the deterministic DDIM ODE from t down to 0 in
`steps` sub-steps:

    ONE_STEP  (K=1): x0 = (x_t - sqrt(1 - a_t) eps(x_t, t)) / sqrt(a_t), the usual estimate.
    MIDPOINT  (K=2): one DDIM step to t/2 with that estimate, a second evaluation there, and
                     its x0 estimate; the paper's two-step "midpoint" recovery.
    IMPROVED  (K=2, same two network evaluations as MIDPOINT):
      1. trapezoid in data space: the result is the mean of the two sub-steps' x0 estimates,
         (D(x_t, t) + D(x_m, t/2)) / 2, instead of the second one alone. The one-step estimate
         is the network's posterior-mean guess (its errors are blur, largest at high noise); the
         midpoint estimate is sharper but inherits the first step's errors through x_m. Their
         errors are only partly correlated, so the average has a lower error than either
         (measured in bench/midpoint.py, ablation "midpoint+mean"). With exact predictions both
         are x0, so the recovery stays exact.
      2. background paste at every sub-step: outside the face mask the clean image is known (it
         is the model's background input), so each sub-step's x0 estimate is replaced there by
         the known pixels and eps is recomputed from x_t to stay consistent with it. The
         intermediate state is then exactly the forward-noised background outside the mask, so
         the second evaluation sees a correct context instead of the first estimate's errors.
      3. the first evaluation is optional (`first=`): in training the denoising loss has
         already computed the network output at (x_t, t), so recovery costs one extra evaluation.
    A log-SNR placement of the intermediate step (`spacing="logsnr"`: halfway between t and 0 in
    log-SNR rather than in the timestep index) is available; it did not help measurably on the
    cpu-demo checkpoints, so IMPROVED keeps the paper's t/2. The measured comparison lives in
    bench/midpoint.py.

`denoise(x, t)` is the network with its conditions bound, returning its raw output (in the
model's prediction type) for x (B, C, H, W) and integer timesteps t (B,).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sfsr.diffusion.schedule import add_noise, eps_from_x0, gather, paste, split_prediction

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Recovery:
    """How to recover x0: number of sub-steps, their placement, background paste."""

    steps: int = 1
    spacing: str = "linear"  # "linear" in the timestep index, or "logsnr"
    paste_background: bool = False
    combine: str = "last"  # "last": the final sub-step's x0; "mean": the mean over sub-steps

    def __post_init__(self) -> None:
        if self.combine not in ("last", "mean"):
            raise ValueError(f"Recovery.combine={self.combine!r}: use 'last' or 'mean'")
        if self.steps < 1:
            raise ValueError(f"Recovery.steps must be >= 1, got {self.steps}")
        if self.spacing not in ("linear", "logsnr"):
            raise ValueError(f"Recovery.spacing={self.spacing!r}: use 'linear' or 'logsnr'")


ONE_STEP = Recovery(steps=1)
MIDPOINT = Recovery(steps=2)
IMPROVED = Recovery(steps=2, spacing="linear", paste_background=True, combine="mean")
RECOVERIES: dict[str, Recovery] = {"one_step": ONE_STEP, "midpoint": MIDPOINT, "improved": IMPROVED}


def substep_timesteps(t: torch.Tensor, alphas_cumprod: torch.Tensor, steps: int, spacing: str) -> list[torch.Tensor]:
    """[t_0 = t, t_1, ..., t_{K-1}] integer timesteps (each (B,)) of the K evaluations.

    linear: t_k = round(t (K - k) / K). logsnr: t_k is the timestep whose log-SNR is nearest
    to lambda(t) + k/K (lambda(0) - lambda(t)), lambda = log(a / (1 - a)). Both end at x0 (the
    last DDIM step goes to a = 1); sub-steps never go above t, and are strictly decreasing where
    t allows it."""
    t = t.long()
    out = [t]
    if steps == 1:
        return out
    lam_all = torch.log(alphas_cumprod / (1 - alphas_cumprod)).to(t.device)  # (T,) increasing as t decreases
    lam_t, lam_0 = lam_all[t], lam_all[0]
    for k in range(1, steps):
        if spacing == "linear":
            tk = torch.round(t.double() * (steps - k) / steps).long()
        else:
            lam_k = lam_t + (lam_0 - lam_t) * (k / steps)  # (B,)
            tk = (lam_all[None, :] - lam_k[:, None]).abs().argmin(dim=1)  # (B,)
        out.append(torch.minimum(tk, out[-1]))
    return out


def recover_x0(
    denoise: Denoise,
    x_t: torch.Tensor,
    t: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    prediction_type: str,
    recovery: Recovery = ONE_STEP,
    *,
    background: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    first: torch.Tensor | None = None,
) -> torch.Tensor:
    """x0 estimate (B, C, H, W) from x_t (B, C, H, W) at integer timesteps t (B,).

    alphas_cumprod: (T,) table of a_t. background (B, C, H, W) / mask (B, 1, H, W), 1 = face: used
    when recovery.paste_background. first: the network output at (x_t, t) if already computed.
    Differentiable through every evaluation (use torch.no_grad() around it for evaluation)."""
    if recovery.paste_background and (background is None or mask is None):
        raise ValueError("recover_x0: paste_background needs background and mask tensors")
    ts = substep_timesteps(t, alphas_cumprod, recovery.steps, recovery.spacing)
    x = x_t
    estimates = []
    for k, tk in enumerate(ts):
        a = gather(alphas_cumprod, tk)  # (B,)
        pred = first if (k == 0 and first is not None) else denoise(x, tk)
        x0, eps = split_prediction(pred, x, a, prediction_type)
        if recovery.paste_background:
            x0 = paste(x0, background, mask)
            eps = eps_from_x0(x, x0, a)
        estimates.append(x0)
        if k + 1 < len(ts):
            a_next = gather(alphas_cumprod, ts[k + 1])
            x = add_noise(x0, eps, a_next)  # deterministic DDIM (eta = 0) state at a_next
    if recovery.combine == "mean":
        return torch.stack(estimates).mean(dim=0)
    return estimates[-1]
