"""Samplers: diffusers schedulers + two-scale classifier-free guidance + background paste-back.

Guidance (compositional, Liu et al. 2022 "Compositional Visual Generation"; the identity and
expression streams are dropped independently in training, so each has its own null):

    compositional:  e = e_u + s_id (e_id - e_u) + s_exp (e_exp - e_u)
    nested:         e = e_u + s_id (e_id - e_u) + s_exp (e_full - e_id)

e_u: both conditions null; e_id: identity only; e_exp: expression only; e_full: both. One
batched network call evaluates the three terms (3B samples). s_id = s_exp = 0 is exactly the
unconditional model; nested with s_id = s_exp = 1 is exactly the fully conditioned model.
Guidance is combined on the x0 / eps pair (linear in the network output for every prediction
type, so combining raw outputs is the same thing).

Paste-back: at every step the x0 estimate outside the face region is replaced by the known
background and eps is recomputed from x_t, so the scheduler's next state is consistent with
the known pixels; the final image is pasted once more, so background pixels come back exactly.

Seeds: the initial noise of sample i comes from its own torch.Generator, and DDIM (eta = 0) and
DPM-Solver++ (deterministic) add no other noise, so sample i does not depend on which other
samples share its batch (up to float round-off of batched kernels).

Inversion (`invert`, DDIM only): instead of noise, sampling can start from the background image
itself run backwards through the same deterministic DDIM steps under its own conditions (the
face's own identity and expression, no guidance): Song et al. 2021 "Denoising Diffusion Implicit
Models", sec. 4.3; Mokady et al. 2023 "Null-text Inversion" use it the same way for editing.
Sampling forward from there under the requested conditions keeps what the conditions do not
change (hair, skin, lighting, the exact shape of the face) closer to the input than fresh noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

from sfsr.diffusion.schedule import Schedule, eps_from_x0, join_prediction, paste, split_prediction

# net(x (N, C, h, w), t (N,), drop_identity (N,) bool, drop_expression (N,) bool) -> output
Net = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
SAMPLERS = ("ddim", "dpmsolver")
GUIDANCE_MODES = ("compositional", "nested")


def make_scheduler(schedule: Schedule, sampler: str = "ddim"):
    """A diffusers scheduler for `schedule`. Trailing timestep spacing, so the first step starts
    from pure noise at t = T - 1 (the cosine schedule's a_T is ~0 there)."""
    kw = schedule.scheduler_kwargs()
    if sampler == "ddim":
        return DDIMScheduler(**kw, clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing")
    if sampler == "dpmsolver":
        return DPMSolverMultistepScheduler(
            **kw, algorithm_type="dpmsolver++", solver_order=2, timestep_spacing="trailing", final_sigmas_type="zero"
        )
    raise ValueError(f"sampler={sampler!r} is not one of {SAMPLERS}")


def initial_noise(
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """(B, *shape) standard normal noise, row i drawn from generators[i] only."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators]).to(device, dtype)


def generators_for(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per sample seed (the seed derives from a sample id, not a position)."""
    return [torch.Generator(device="cpu").manual_seed(int(s) & 0xFFFF_FFFF_FFFF) for s in seeds]


def guided_output(
    net: Net,
    x: torch.Tensor,
    t: torch.Tensor,
    guidance_identity: float,
    guidance_expression: float,
    mode: str = "compositional",
) -> torch.Tensor:
    """Two-scale classifier-free guided network output (B, C, h, w); see the module docstring."""
    if mode not in GUIDANCE_MODES:
        raise ValueError(f"guidance mode={mode!r} is not one of {GUIDANCE_MODES}")
    b = x.shape[0]
    yes, no = torch.ones(b, dtype=torch.bool, device=x.device), torch.zeros(b, dtype=torch.bool, device=x.device)
    # rows: unconditional, identity only, expression only (compositional) or full (nested)
    drop_id = torch.cat([yes, no, yes if mode == "compositional" else no])
    drop_ex = torch.cat([yes, yes, no])
    out = net(torch.cat([x] * 3), torch.cat([t] * 3), drop_id, drop_ex)
    e_u, e_id, e_3 = out.chunk(3)
    if mode == "compositional":
        return e_u + guidance_identity * (e_id - e_u) + guidance_expression * (e_3 - e_u)
    return e_u + guidance_identity * (e_id - e_u) + guidance_expression * (e_3 - e_id)


def sample(
    net: Net,
    schedule: Schedule,
    shape: Sequence[int],
    generators: Sequence[torch.Generator],
    *,
    background: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    steps: int = 25,
    guidance_identity: float = 2.0,
    guidance_expression: float = 2.0,
    guidance_mode: str = "compositional",
    sampler: str = "ddim",
    clip: float | None = 1.0,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw len(generators) samples (B, *shape) in model space.

    background (B, C, h, w) and mask (B, 1, h, w) (1 = generate) paste the known pixels back at
    every step; clip bounds the x0 estimate (pixel models: 1.0; latent models: None). start
    (B, *shape), from `invert` with the same steps, replaces the initial noise (DDIM only)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    sched = make_scheduler(schedule, sampler)
    sched.set_timesteps(steps, device=device)
    alphas_cumprod = sched.alphas_cumprod.to(device)  # (T,) float32, diffusers' own values
    if start is None:
        x = initial_noise(shape, generators, device) * sched.init_noise_sigma  # (B, C, h, w)
    elif sampler != "ddim":
        raise ValueError(f"a start from invert() runs DDIM backwards; it needs sampler='ddim', not {sampler!r}")
    else:
        x = start.to(device)
    ptype = schedule.prediction_type
    for i, t in enumerate(sched.timesteps):
        tt = t.reshape(1).expand(x.shape[0]).to(device)
        out = guided_output(net, x, tt, guidance_identity, guidance_expression, guidance_mode)
        a = alphas_cumprod[tt.long()]  # (B,)
        x0, eps = split_prediction(out, x, a, ptype)
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        x0 = paste(x0, background, mask)
        eps = eps_from_x0(x, x0, a)
        x = sched.step(join_prediction(x0, eps, a, ptype), t, x).prev_sample
        if progress is not None:
            progress(i + 1, steps)
    return paste(x, background, mask)


@torch.no_grad()
def invert(
    net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    schedule: Schedule,
    x0: torch.Tensor,
    *,
    background: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    steps: int = 25,
    clip: float | None = 1.0,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """DDIM inversion of x0 (B, C, h, w) in model space: the x at the first of `sample`'s `steps`
    timesteps from which deterministic DDIM under the same conditions returns (about) x0.

    net(x, t) is the network under the image's own conditions, unguided (one call per step).
    Each step goes up one timestep with the x0 and eps estimated at the level below (the first
    from the clean image itself); background and mask paste the known pixels as `sample` does."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    sched = make_scheduler(schedule, "ddim")
    sched.set_timesteps(steps, device=device)
    alphas_cumprod = sched.alphas_cumprod.to(device)
    ptype = schedule.prediction_type
    x = x0.to(device)
    b = x.shape[0]
    below = None  # the timestep x is at (None: clean)
    for t in reversed(sched.timesteps):
        at = (t if below is None else below).reshape(1).expand(b).to(device)
        a = alphas_cumprod[at.long()]
        est_x0, eps = split_prediction(net(x, at), x, a, ptype)
        if below is None:
            est_x0 = x0.to(device)  # x is the clean image: only its noise direction is estimated
        else:
            if clip is not None:
                est_x0 = est_x0.clamp(-clip, clip)
            est_x0 = paste(est_x0, background, mask)
            eps = eps_from_x0(x, est_x0, a)
        a_up = alphas_cumprod[t.long()].reshape(1, 1, 1, 1)
        x = a_up.sqrt() * est_x0 + (1 - a_up).sqrt() * eps
        below = t
    return x
