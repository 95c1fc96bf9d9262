"""Train DiffSFSR on synthetic faces in one local process (no Ray), for a time budget.

    python -m sfsr.model.train_local --preset cpu-demo --minutes 60 --out DIR
    python -m sfsr.model.train_local --smoke-test --out /tmp/x      # seconds

Writes DIR/model (the EMA weights, save_pretrained), DIR/checkpoints/step-NNNNNN (EMA weights
every --ckpt-every-min minutes, for bench/midpoint.py and the metrics over training) and
DIR/train_card.json (command, seed, commit, duration, steps, throughput, losses).
The learning rate follows warm-up then a cosine over the time budget (not a step count: on a
shared machine the number of steps a budget buys is not known in advance).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

from sfsr.model.presets import make_model
from sfsr.model.synth_data import PoolSampler, build_pool
from sfsr.model.diffsfsr import DiffSFSR
from sfsr.model.training import EMA, TrainConfig, make_optimizer, train_step, training_state
from sfsr.model.publish import save_half
from sfsr.provenance import git_commit
from sfsr.synth.judges import load_judges


def _lr_factor(frac: float, step: int, warmup: int, final: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", default="cpu-demo", choices=["tiny", "cpu-demo"], help="model preset")
    p.add_argument("--minutes", type=float, default=60.0, help="training time budget")
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0 = time only)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--pool", type=int, default=30000, help="rendered training faces")
    p.add_argument("--identities", type=int, default=200, help="synthetic identities (the judges know 200)")
    p.add_argument("--batch-size", type=int, default=32, help="samples per step")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    p.add_argument("--seed", type=int, default=0, help="seed of model init, data and noise")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--ckpt-every-min", type=float, default=10.0, help="minutes between EMA checkpoints")
    p.add_argument("--identity-loss-weight", type=float, default=0.0, help="judge identity loss on recovered x0")
    p.add_argument("--expression-loss-weight", type=float, default=0.0, help="judge expression loss on recovered x0")
    p.add_argument("--cache-dir", default="/tmp/sfsr-cache", help="where the rendered pool is cached")
    p.add_argument("--init-from", default="", help="start from this model folder's weights (a second phase: fresh optimiser, new schedule)")
    p.add_argument("--warmup", type=int, default=200, help="learning-rate warm-up steps")
    p.add_argument("--smoke-test", action="store_true", help="tiny preset, 20 steps, 256 faces")
    a = p.parse_args(argv)
    if a.smoke_test:
        a.preset, a.pool, a.max_steps, a.batch_size, a.ckpt_every_min = "tiny", 256, 20, 8, 1e9
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()

    model = make_model(a.preset, seed=a.seed, trained_on=f"sfsr.synth train split, seed {a.seed}, {a.identities} identities")
    if a.init_from:
        start = DiffSFSR.from_pretrained(a.init_from, use_safetensors=True).float()
        if dict(start.config.unet_config) != dict(model.config.unet_config):
            raise SystemExit(f"--init-from {a.init_from}: its UNet config differs from preset {a.preset!r}")
        model.load_state_dict(start.state_dict())
        print(f"initialised from {a.init_from}", flush=True)
    size = model.config.image_size
    judges = load_judges(size=32)
    pool = build_pool(a.pool, seed=a.seed, n_identities=a.identities, size=size, split="train",
                      judges=judges, cache_dir=a.cache_dir)
    print(f"pool: {len(pool)} faces at {size} px in {time.time() - t_start:.0f} s", flush=True)
    sampler = PoolSampler(pool, seed=a.seed)
    cfg = TrainConfig(batch_size=a.batch_size, lr=a.lr, seed=a.seed, warmup_steps=a.warmup,
                      identity_loss_weight=a.identity_loss_weight,
                      expression_loss_weight=a.expression_loss_weight)
    ema = EMA(model, cfg.ema_decay)
    opt, _ = make_optimizer(model, cfg)
    budget = a.minutes * 60.0
    t0 = time.time()
    last_ckpt, step, history, window = t0, 0, [], []
    n_params = sum(p_.numel() for p_ in model.parameters())
    print(f"model {a.preset}: {n_params / 1e6:.2f} M parameters; budget {a.minutes} min", flush=True)
    aux_judges = judges if (a.identity_loss_weight or a.expression_loss_weight) else None
    while True:
        elapsed = time.time() - t0
        if elapsed >= budget or (a.max_steps and step >= a.max_steps):
            break
        for g in opt.param_groups:
            g["lr"] = cfg.lr * _lr_factor(elapsed / budget, step, cfg.warmup_steps, cfg.final_lr_fraction)
        logs = train_step(model, ema, sampler.batch(cfg.batch_size), cfg, step, opt, None, judges=aux_judges)
        window.append(logs)
        step += 1
        if step % 25 == 0 or step == 1:
            el = time.time() - t0
            rec = {"step": step, "minutes": round(el / 60, 2), "samples_per_s": round(step * cfg.batch_size / el, 1),
                   "lr": round(logs["lr"], 6)}
            for key in ("loss", "loss_denoise", "loss_identity", "loss_expression"):
                vals = [w[key] for w in window if key in w]
                if vals:
                    rec[key] = round(sum(vals) / len(vals), 5)
            history.append(rec)
            window = []
            print(json.dumps(rec), flush=True)
        if time.time() - last_ckpt >= a.ckpt_every_min * 60:
            save_half(ema.model, out / "checkpoints" / f"step-{step:06d}")
            last_ckpt = time.time()
    save_half(ema.model, out / "model")
    # full state (model, EMA, optimiser, step) for a later phase; read with weights_only=True
    torch.save(training_state(model, ema, opt, None, step), out / "training_state.pt")
    save_half(ema.model, out / "checkpoints" / f"step-{step:06d}")
    card = {
        "command": "python -m sfsr.model.train_local " + " ".join(sys.argv[1:] if argv is None else argv),
        # on a shared machine OpenMP's spin-waiting threads stall each other; PASSIVE was ~4x faster
        "env": {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "")},
        "preset": a.preset, "seed": a.seed, "git_commit": git_commit(),
        "train_minutes": round((time.time() - t0) / 60, 2), "total_minutes": round((time.time() - t_start) / 60, 2),
        "steps": step, "batch_size": cfg.batch_size, "pool_faces": len(pool),
        "parameters": n_params, "threads": a.threads, "train_config": {k: v for k, v in vars(cfg).items()},
        "history": history,
    }  # fmt: skip
    (out / "train_card.json").write_text(json.dumps(card, indent=1, default=list))
    print(f"done: {step} steps in {card['train_minutes']} min -> {out / 'model'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
