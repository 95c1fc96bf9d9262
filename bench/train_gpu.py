"""One device, the latent256 training step: throughput, step time, peak memory and MFU, the
denoising-only step (baseline) against the step with the recovery losses (candidate).

    .venv/bin/python bench/train_gpu.py --vae /data/sd-vae                # on a GPU: bf16 autocast
    .venv/bin/python bench/train_gpu.py --vae s3://bucket/sd --batch-size 64 --steps 20
    .venv/bin/python bench/train_gpu.py --smoke                            # CPU, seconds: a tiny VAE and UNet

The step is sfsr.model.training.train_step, under the autocast jobs/train.py's train_loop uses
(bf16 on CUDA, off on CPU), on synthetic batches of latent256's shapes:

    image (B, 3, 256, 256) in [-1, 1], mask (B, 1, 256, 256) in {0, 1}, identity (B, 512), expression (B, 13)
        -> frozen VAE encode -> (B, 4, 32, 32) latents -> UNet forward + backward -> AdamW, EMA

The candidate adds the expression loss (weight 0.1) read by the builtin FER network
(sfsr.model.recognisers) on faces recovered from x_t: more UNet passes, a VAE decode and the reader.

FLOPs per step are counted once per variant with torch.utils.flop_counter.FlopCounterMode over a
whole train_step (matmuls, convolutions and attention, forward and backward; elementwise work is
not counted, by convention). MFU = FLOPs per step / step time / the device's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sfsr.model.diffsfsr import DiffSFSR  # noqa: E402
from sfsr.model.presets import _unet, make_model  # noqa: E402
from sfsr.model.recognisers import photo_recognisers  # noqa: E402
from sfsr.model.training import EMA, TrainConfig, make_optimizer, train_step  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
EXPRESSION_LOSS_WEIGHT = 0.1  # the candidate's, as platform/kuberay/rayjob-train-photos-gpu.yaml trains

# Dense (no sparsity) bf16 tensor-core peaks from the vendor datasheets, FLOP/s. Matched as
# substrings of torch.cuda.get_device_name, longest first ("H100 PCIe" before "H100").
PEAK_BF16 = {
    "H100 PCIe": 756e12,
    "H100": 989e12,  # SXM
    "H200": 989e12,
    "A100": 312e12,
}


def _cpu_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _cpu_sdpa_backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


# FlopCounterMode knows the CUDA attention kernels but not the CPU one diffusers' attention
# dispatches to, which it would count as 0 FLOPs (arguments arrive as shapes).
CPU_ATTENTION = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa,
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_sdpa_backward,
}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of the matmuls, convolutions and attention that fn() runs, forward and backward."""
    with FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION) as counter:
        fn()
    return int(counter.get_total_flops())


def peak_flops(device: torch.device, override_tflops: float | None) -> float | None:
    """The device's dense bf16 peak in FLOP/s: --peak-tflops, else PEAK_BF16; None when unknown."""
    if override_tflops is not None:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((PEAK_BF16[k] for k in sorted(PEAK_BF16, key=len, reverse=True) if k in name), None)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def synthetic_batch(model: DiffSFSR, b: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors of the shapes train_step takes (values do not change the work done)."""
    g = torch.Generator().manual_seed(seed)
    c, s = model.config, model.config.image_size
    batch = {
        "image": torch.rand(b, 3, s, s, generator=g) * 2 - 1,  # (B, 3, S, S) in [-1, 1]
        "mask": (torch.rand(b, 1, s, s, generator=g) > 0.5).float(),  # (B, 1, S, S)
        "identity": torch.randn(b, c.identity_dim, generator=g),  # (B, 512)
        "expression": torch.randn(b, c.expression_dim, generator=g),  # (B, 13)
    }
    return {k: v.to(device) for k, v in batch.items()}


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset; CPU: the process's peak RSS so far (never reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Result:
    variant: str
    batch_size: int
    step_s: float  # median over the timed steps
    samples_per_s: float
    peak_memory_mib: float
    flops_per_step: int
    achieved_tflops: float
    mfu: float | None


def measure(
    variant: str,
    model: DiffSFSR,
    cfg: TrainConfig,
    judges: Any | None,
    device: torch.device,
    warmup: int,
    steps: int,
    peak: float | None,
) -> Result:
    """Warm-up, timed and one FLOP-counted train_step of `model` under `cfg`, with a fresh optimiser and EMA."""
    opt, sched = make_optimizer(model, cfg)
    ema = EMA(model, cfg.ema_decay)
    batch = synthetic_batch(model, cfg.batch_size, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    def step(i: int) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            train_step(model, ema, batch, cfg, i, opt, sched, judges)

    for i in range(warmup):
        step(i)
    times = []
    for i in range(warmup, warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        step(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    memory = peak_memory_mib(device)
    flops = count_flops(lambda: step(warmup + steps))
    step_s = statistics.median(times)
    achieved = flops / step_s
    return Result(
        variant=variant,
        batch_size=cfg.batch_size,
        step_s=step_s,
        samples_per_s=cfg.batch_size / step_s,
        peak_memory_mib=memory,
        flops_per_step=flops,
        achieved_tflops=achieved / 1e12,
        mfu=achieved / peak if peak else None,
    )


def tiny_vae_folder(root: Path) -> str:
    """A random diffusers AutoencoderKL with latent256's latent shape (4 channels, 8x down) and
    4-channel blocks, saved as save_pretrained writes it: the --smoke stand-in for a real VAE."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(
        block_out_channels=(4,) * 4,  # 3 downsamplings: Stable Diffusion's 8x
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
    )
    vae.save_pretrained(root / "vae")
    return str(root / "vae")


def build(vae: str, smoke: bool, device: torch.device) -> DiffSFSR:
    """latent256 at 256 px with its 512-d identity and 13 expression values; --smoke swaps its
    104 M-parameter UNet for a small one on the same 32 x 32 x 4 latents."""
    small = dict(cond_hidden=32, unet_config=_unet(32, (16, 32), (False, True), 32, 2, 1, 8, 32, 4)) if smoke else {}
    return make_model("latent256", vae_path=vae, identity_dim=512, expression_dim=13, **small).to(device)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--vae",
        default=None,
        help="AutoencoderKL folder (or SD folder with vae/), local or s3:// (default: none; required unless --smoke)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny random VAE and UNet, CPU-sized (default: off)")
    p.add_argument("--batch-size", type=int, default=None, help="samples per step (default: 32, --smoke 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default: 3, --smoke 1)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (default: 10, --smoke 2)")
    p.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak bf16 TFLOP/s for MFU (default: from the device name)",
    )
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--out", default=str(RESULTS), help=f"folder for the results .json and .txt (default: {RESULTS})")
    args = p.parse_args(argv)
    if not args.smoke and not args.vae:
        p.error(
            "--vae FOLDER is required unless --smoke: a diffusers AutoencoderKL folder, or a Stable Diffusion "
            "folder with vae/, local or s3://"
        )
    for name, full, smoke in (("batch_size", 32, 2), ("warmup", 3, 1), ("steps", 10, 2)):
        if getattr(args, name) is None:
            setattr(args, name, smoke if args.smoke else full)
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0:
        p.error(f"--batch-size {args.batch_size}, --steps {args.steps} must be >= 1 and --warmup {args.warmup} >= 0")
    return args


def table(results: list[Result], device: str, peak: float | None) -> list[str]:
    lines = [
        f"device: {device}; peak bf16: {f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown (MFU n/a; --peak-tflops)'}",
        f"{'variant':<10} {'batch':>5} {'step ms':>9} {'samples/s':>10} {'peak MiB':>9} {'GFLOP/step':>11} "
        f"{'TFLOP/s':>8} {'MFU':>6}",
    ]
    for r in results:
        mfu = f"{100 * r.mfu:.1f}%" if r.mfu is not None else "n/a"
        lines.append(
            f"{r.variant:<10} {r.batch_size:>5} {1e3 * r.step_s:>9.1f} {r.samples_per_s:>10.2f} "
            f"{r.peak_memory_mib:>9.0f} {r.flops_per_step / 1e9:>11.1f} {r.achieved_tflops:>8.3f} {mfu:>6}"
        )
    return lines


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    peak = peak_flops(device, args.peak_tflops)
    with tempfile.TemporaryDirectory(prefix="sfsr-bench-vae-") as tmp:
        vae = tiny_vae_folder(Path(tmp)) if args.smoke else args.vae
        model = build(vae, args.smoke, device)
    judges = photo_recognisers(None, expression=True, device=str(device))  # the builtin FER reader
    base = TrainConfig(batch_size=args.batch_size)
    candidate = TrainConfig(batch_size=args.batch_size, expression_loss_weight=EXPRESSION_LOSS_WEIGHT)
    results = [
        measure("denoise", model, base, None, device, args.warmup, args.steps, peak),
        measure("recovery", model, candidate, judges, device, args.warmup, args.steps, peak),
    ]
    name = device_name(device)
    ratio = results[1].step_s / results[0].step_s
    lines = [
        *table(results, name, peak),
        f"recovery losses: expression (builtin FER, weight {EXPRESSION_LOSS_WEIGHT}) on "
        f"{min(base.aux_batch, args.batch_size)} samples per step, {base.recovery} recovery",
        f"ratio recovery / denoise step time: {ratio:.2f}x",
    ]
    print("\n".join(lines), flush=True)
    report = {
        "device": name,
        "smoke": args.smoke,
        "preset": "latent256",
        "vae": "tiny random (--smoke)" if args.smoke else args.vae,
        "autocast_bf16": device.type == "cuda",
        "warmup": args.warmup,
        "steps": args.steps,
        "peak_flops": peak,
        "results": [asdict(r) for r in results],
        "ratio_recovery_over_denoise": ratio,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "train_gpu-smoke" if args.smoke else f"train_gpu-{name.split('(')[0].strip().replace(' ', '-')}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return report


if __name__ == "__main__":
    main()
