"""Discrete-time noise schedule and the conversions between model outputs, noise and x0.

Forward process (DDPM, Ho et al. 2020): x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps, where a_t is
`alphas_cumprod[t]` for integer t in [0, T). The schedule is built exactly as diffusers builds
it from the same (beta_schedule, num_train_timesteps, beta_start, beta_end), so the samplers can
use diffusers' DDIM / DPMSolver schedulers and the training loss stays consistent with them
(tests/unit/test_diffusion.py checks the equality).

Prediction types follow diffusers: "epsilon" (the noise), "v_prediction"
(v = sqrt(a) eps - sqrt(1 - a) x0, Salimans & Ho 2022) and "sample" (x0). Every function here is
a pure function of tensors.

Names, here and in recovery.py, sampling.py and sfsr/model/training.py: `alphas_cumprod` is the
(T,) table; `a` (or `a_next`) is its value gathered per sample, (B,); `a4` is that value
broadcast to (B, 1, 1, 1) against an image batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


@dataclass(frozen=True)
class Schedule:
    """What defines the forward process; mirrored into the diffusers scheduler configs."""

    beta_schedule: str = "squaredcos_cap_v2"  # "linear", "scaled_linear" or "squaredcos_cap_v2"
    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    prediction_type: str = "v_prediction"

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type={self.prediction_type!r} is not one of {PREDICTION_TYPES}")
        if self.beta_schedule not in ("linear", "scaled_linear", "squaredcos_cap_v2"):
            raise ValueError(
                f"beta_schedule={self.beta_schedule!r}: use 'linear', 'scaled_linear' or 'squaredcos_cap_v2'"
            )

    def scheduler_kwargs(self) -> dict:
        """Keyword arguments for diffusers' DDIMScheduler / DPMSolverMultistepScheduler."""
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": self.beta_schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": self.prediction_type,
        }


def alphas_cumprod(schedule: Schedule) -> torch.Tensor:
    """(T,) float64 cumulative products a_t, the way diffusers computes them (float32 betas)."""
    T = schedule.num_train_timesteps
    if schedule.beta_schedule == "linear":
        betas = torch.linspace(schedule.beta_start, schedule.beta_end, T, dtype=torch.float32)
    elif schedule.beta_schedule == "scaled_linear":
        betas = torch.linspace(schedule.beta_start**0.5, schedule.beta_end**0.5, T, dtype=torch.float32) ** 2
    else:  # Nichol & Dhariwal 2021 cosine, betas capped at 0.999 as in diffusers
        f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)], dtype=torch.float32)
    return torch.cumprod(1.0 - betas, dim=0).to(torch.float64)


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1) in like's dtype/device."""
    return a.to(like.device, like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def gather(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """a_t = alphas_cumprod[t] ((T,) table) for integer timesteps t (B,) -> (B,) on t's device."""
    return alphas_cumprod.to(t.device)[t.long()]


def add_noise(x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """x_t = sqrt(a) x0 + sqrt(1 - a) eps; x0, eps (B, C, H, W), a (B,)."""
    a4 = _bcast(a, x0)
    return a4.sqrt() * x0 + (1 - a4).sqrt() * eps


def target(x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """What the network should output for (x0, eps) at a: (B, C, H, W)."""
    if prediction_type == "epsilon":
        return eps
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        a4 = _bcast(a, x0)
        return a4.sqrt() * eps - (1 - a4).sqrt() * x0
    raise ValueError(f"prediction_type={prediction_type!r} is not one of {PREDICTION_TYPES}")


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The noise that makes x_t from x0 at a (B,): eps = (x_t - sqrt(a) x0) / sqrt(1 - a), (B, C, H, W).

    sqrt(1 - a) is floored at 1e-8: at t = 0 the cosine schedule's a is 1 to float precision."""
    a4 = _bcast(a, x_t)
    return (x_t - a4.sqrt() * x0) / (1 - a4).sqrt().clamp_min(1e-8)


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """The clean image behind x_t given its noise, at a (B,): x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)."""
    a4 = _bcast(a, x_t)
    return (x_t - (1 - a4).sqrt() * eps) / a4.sqrt()


def split_prediction(
    pred: torch.Tensor, x_t: torch.Tensor, a: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x0_hat, eps_hat), each (B, C, H, W), from a network output at x_t with a (B,)."""
    if prediction_type == "epsilon":
        return x0_from_eps(x_t, pred, a), pred
    if prediction_type == "v_prediction":
        a4 = _bcast(a, x_t)
        s, c = a4.sqrt(), (1 - a4).sqrt()
        return s * x_t - c * pred, c * x_t + s * pred
    if prediction_type == "sample":
        return pred, eps_from_x0(x_t, pred, a)
    raise ValueError(f"prediction_type={prediction_type!r} is not one of {PREDICTION_TYPES}")


def join_prediction(x0: torch.Tensor, eps: torch.Tensor, a: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """Inverse of split_prediction: the network output that means (x0, eps) at a."""
    return target(x0, eps, a, prediction_type)


def paste(x0: torch.Tensor, background: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor:
    """mask * x0 + (1 - mask) * background: keep the known pixels outside the face region.

    mask (B, 1, H, W) in [0, 1], 1 = generated (face). None leaves x0 unchanged."""
    if background is None or mask is None:
        return x0
    return mask * x0 + (1 - mask) * background


def snr(a: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio a / (1 - a), (B,)."""
    return a / (1 - a)
