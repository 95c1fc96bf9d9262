"""One training step of DiffSFSR, its optimiser, EMA and checkpoint state (no Ray here).

jobs/train.py (Ray Train) drives `train_step`, the one training loop:

    model = make_model("cpu-demo"); ema = EMA(model, cfg.ema_decay)
    opt, sched = make_optimizer(model, cfg)
    for step, batch in enumerate(batches):      # batch: dict of tensors, see train_step
        logs = train_step(model, ema, batch, cfg, step, opt, sched, judges=judges)

Self-reconstruction training (DESIGN.md): the face is denoised from its own background, its
identity vector (ideally of another image of the same person, so expression cannot leak through
it) and its expression vector, each condition dropped independently for guidance.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from sfsr.diffusion import schedule as noise_schedule
from sfsr.diffusion.losses import denoising_loss, expression_loss, identity_loss, resize_for
from sfsr.diffusion.recovery import RECOVERIES, recover_x0
from sfsr.diffusion.schedule import add_noise, gather
from sfsr.model.presets import make_model
from sfsr.model.table_batch import batch_from_table_rows, identity_label_means  # re-exported

if TYPE_CHECKING:
    from sfsr.model.diffsfsr import DiffSFSR

__all__ = [
    "EMA",
    "TrainConfig",
    "batch_from_table_rows",
    "face_region",
    "identity_label_means",
    "make_model",
    "make_optimizer",
    "train_step",
    "training_state",
    "load_training_state",
]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and loss settings (the model's own settings live in its config)."""

    batch_size: int = 32
    lr: float = 2e-3  # high for Adam on purpose: small UNets tolerate it and learn faster
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 200
    total_steps: int = 4000  # cosine decay to final_lr_fraction * lr at this step
    final_lr_fraction: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    p_drop_identity: float = 0.1  # independent condition dropout, for two guidance scales
    p_drop_expression: float = 0.1
    face_weight: float = 1.0
    background_weight: float = 0.1
    min_snr_gamma: float | None = 5.0
    identity_loss_weight: float = 0.0  # on the recovered x0 through the judges / ArcFace
    expression_loss_weight: float = 0.0
    aux_start_step: int = 0
    aux_batch: int = 8  # samples of each batch that get the recovery losses
    aux_t_max: int = 600  # recovery losses only where x_t still shows the face
    # Fraction of the aux samples trained as swaps: conditioned on another sample's identity, their
    # identity loss pulls the recovered face toward that identity while the background, mask and
    # expression stay the target's. Self-reconstruction alone never shows the model a background
    # that disagrees with the identity vector, so it learns to read identity off the context.
    aux_swap: float = 0.0
    recovery: str = "improved"  # "one_step", "midpoint" or "improved" (sfsr.diffusion.recovery)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.recovery not in RECOVERIES:
            raise ValueError(f"TrainConfig.recovery={self.recovery!r} is not one of {sorted(RECOVERIES)}")
        for name in ("p_drop_identity", "p_drop_expression", "aux_swap"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)} must be in [0, 1]")


def face_region(mask: torch.Tensor, dilate: int) -> torch.Tensor:
    """Face mask (B, 1, S, S) in {0, 1} grown by `dilate` pixels: the region the model
    generates. The rim catches the anti-aliased edge pixels that mix face and background."""
    if dilate <= 0:
        return mask
    return F.max_pool2d(mask, 2 * dilate + 1, stride=1, padding=dilate)


class EMA:
    """Exponential moving average of a model's weights (decay warms up as (1+n)/(10+n))."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.999) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for e, p in zip(self.model.parameters(), model.parameters()):
            if p.requires_grad:  # frozen weights (a latent preset's VAE) never move: nothing to average
                e.lerp_(p.detach(), 1.0 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "updates": self.updates, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.updates = int(state["updates"])
        self.decay = float(state["decay"])


def make_optimizer(
    model: DiffSFSR, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters (never the frozen VAE) with linear warm-up and a
    cosine decay to cfg.final_lr_fraction at cfg.total_steps."""
    params = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("vae.")]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        frac = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.total_steps - cfg.warmup_steps))
        return cfg.final_lr_fraction + (1 - cfg.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * frac))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _check_batch(batch: dict[str, torch.Tensor], model: DiffSFSR) -> None:
    need = ("image", "mask", "identity", "expression")
    missing = [k for k in need if k not in batch]
    if missing:
        raise ValueError(f"train_step batch: missing {missing}; it needs {need} (see batch_from_table_rows)")
    img, m = batch["image"], batch["mask"]
    s = model.config.image_size
    if img.ndim != 4 or img.shape[1:] != (3, s, s) or m.shape != (img.shape[0], 1, s, s):
        raise ValueError(
            f"train_step batch: image {tuple(img.shape)}, mask {tuple(m.shape)}; this model needs "
            f"image (B, 3, {s}, {s}) in [-1, 1] and mask (B, 1, {s}, {s}) in {{0, 1}}"
        )


def train_step(
    model: DiffSFSR,
    ema: EMA | None,
    batch: dict[str, torch.Tensor],
    cfg: TrainConfig,
    step: int,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    judges: Any | None = None,
    *,
    ddp_model: torch.nn.Module | None = None,
) -> dict[str, float]:
    """One optimisation step; returns floats for logging.

    batch: image (B, 3, S, S) in [-1, 1], mask (B, 1, S, S) in {0, 1} (1 = face), identity
    (B, Di), expression (B, De), all on the model's device. Randomness (t, noise, dropout)
    comes from a generator seeded by (cfg.seed, step), so a resumed run repeats it exactly.
    judges: identity_embedding / expression recogniser for the recovery losses (optional).
    ddp_model: the DistributedDataParallel wrapper of `model`, when training under DDP."""
    _check_batch(batch, model)
    net = ddp_model or model
    model.train()
    dev = batch["image"].device
    g = torch.Generator(device="cpu").manual_seed(cfg.seed * 1_000_003 + step)
    b = batch["image"].shape[0]
    alphas_cumprod = noise_schedule.alphas_cumprod(model.schedule)  # (T,)
    ptype = model.schedule.prediction_type

    region = face_region(batch["mask"].float(), model.config.mask_dilate)  # (B, 1, S, S)
    with torch.no_grad():
        x0 = model.encode(batch["image"].float())  # (B, C, h, w)
        background, mregion = model.prepare_background(batch["image"].float(), region)
    t = torch.randint(0, alphas_cumprod.numel(), (b,), generator=g).to(dev)
    eps = torch.randn(x0.shape, generator=g).to(dev, x0.dtype)
    drop_id = (torch.rand(b, generator=g) < cfg.p_drop_identity).to(dev)
    drop_ex = (torch.rand(b, generator=g) < cfg.p_drop_expression).to(dev)
    a = gather(alphas_cumprod, t)
    x_t = add_noise(x0, eps, a)
    pred = net(x_t, t, background, mregion, batch["identity"], batch["expression"], drop_id, drop_ex)
    per = denoising_loss(
        pred,
        x0,
        eps,
        a,
        ptype,
        mregion,
        face_weight=cfg.face_weight,
        background_weight=cfg.background_weight,
        min_snr_gamma=cfg.min_snr_gamma,
    )
    loss = per.mean()
    logs = {"loss_denoise": float(loss.detach())}

    use_aux = (
        judges is not None
        and step >= cfg.aux_start_step
        and (cfg.identity_loss_weight > 0 or cfg.expression_loss_weight > 0)
    )
    if use_aux:
        aux = _aux_losses(net, model, judges, batch, x0, background, mregion, alphas_cumprod, cfg, g)
        for k, v in aux.items():
            logs[k] = float(v.detach())
        loss = (
            loss + cfg.identity_loss_weight * aux["loss_identity"] + cfg.expression_loss_weight * aux["loss_expression"]
        )

    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    gn = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if ema is not None:
        ema.update(model)
    logs.update(loss=float(loss.detach()), grad_norm=float(gn), lr=float(optimizer.param_groups[0]["lr"]))
    return logs


def _aux_losses(net, model, judges, batch, x0, background, mregion, alphas_cumprod, cfg, g) -> dict[str, torch.Tensor]:
    """Identity and expression losses on x0 recovered from a fresh x_t (t < aux_t_max) of the
    first aux_batch samples, conditioned on their full (undropped) vectors. The first
    round(aux_swap * n) of them take their identity (and identity-loss target) from a donor,
    the sample half a batch away, when that is another person."""
    b = x0.shape[0]
    n = min(cfg.aux_batch, b)
    dev = x0.device
    t = torch.randint(0, min(cfg.aux_t_max, alphas_cumprod.numel()), (n,), generator=g).to(dev)
    eps = torch.randn(x0[:n].shape, generator=g).to(dev, x0.dtype)
    x_t = add_noise(x0[:n], eps, gather(alphas_cumprod, t))
    target_emb = batch.get("identity_target", batch["identity"])
    source = swap_sources(batch["identity"], n, round(cfg.aux_swap * n))
    ident, expr, target_emb = batch["identity"][source], batch["expression"][:n], target_emb[source]
    bg, m = background[:n], mregion[:n]

    def denoise(x: torch.Tensor, tt: torch.Tensor) -> torch.Tensor:
        return net(x, tt, bg, m, ident, expr)

    x0_hat = recover_x0(
        denoise, x_t, t, alphas_cumprod, model.schedule.prediction_type, RECOVERIES[cfg.recovery], background=bg, mask=m
    )
    images = resize_for(model.decode(x0_hat), judges.size)  # (n, 3, s, s)
    if not getattr(judges, "targets_from_images", False):  # the synth judges: the table's vectors are targets
        return {
            "loss_identity": identity_loss(judges, images, target_emb).mean(),
            "loss_expression": expression_loss(judges, images, expr).mean(),
        }
    # photo recognisers (sfsr.model.recognisers): targets are their readings of the true faces,
    # the donor's for the identity of a swap; a loss with weight 0 is not computed
    zero = x0.new_zeros(())
    with torch.no_grad():
        truth = resize_for(batch["image"].float(), judges.size)  # (B, 3, s, s) in [-1, 1]
    out = {"loss_identity": zero, "loss_expression": zero}
    if cfg.identity_loss_weight > 0:
        with torch.no_grad():
            wanted = judges.identity_embedding(truth[source])  # (n, E)
        out["loss_identity"] = identity_loss(judges, images, wanted).mean()
    if cfg.expression_loss_weight > 0:
        with torch.no_grad():
            wanted = judges.expression(truth[:n])  # (n, F)
        out["loss_expression"] = expression_loss(judges, images, wanted).mean()
    return out


def swap_sources(identity: torch.Tensor, n: int, k: int) -> torch.Tensor:
    """Index of the identity each of the first n samples is conditioned on: the first k take the
    sample half a batch away when its identity vector differs (cosine < 0.99), the rest their own."""
    b = identity.shape[0]
    idx = torch.arange(n, device=identity.device)
    if k <= 0 or b < 2:
        return idx
    donor = (idx[:k] + b // 2) % b
    other = F.cosine_similarity(identity[idx[:k]], identity[donor], dim=1) < 0.99
    idx[:k] = torch.where(other, donor, idx[:k])
    return idx


def training_state(
    model: DiffSFSR, ema: EMA | None, optimizer: torch.optim.Optimizer, scheduler: Any | None, step: int
) -> dict[str, Any]:
    """Everything a checkpoint needs; tensors and plain values only, so
    torch.load(..., weights_only=True) reads it back (no arbitrary pickle)."""
    return {
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "step": int(step),
    }


def load_training_state(
    state: dict[str, Any], model: DiffSFSR, ema: EMA | None, optimizer: torch.optim.Optimizer, scheduler: Any | None
) -> int:
    """Restore what training_state saved; returns the step to continue from."""
    model.load_state_dict(state["model"])
    if ema is not None and state.get("ema") is not None:
        ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["step"])
