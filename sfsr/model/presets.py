"""Size presets of DiffSFSR and initialisation from a local Stable Diffusion folder.

tiny      16 px pixels, ~0.2 M parameters: unit tests, seconds on a CPU.
cpu-demo  32 px pixels, synthetic faces conditioned on the synth judges (128-d identity
          embedding, 7 expression factors); sized to learn control on 2 CPU cores in about
          an hour (issue 4's measured warning: no attention at 32 px, small widths, the
          conditions also through the timestep embedding).
photo64   64 px pixels, photos conditioned on the builtin face pack (128-d dlib identity, 13
          expression values: 7 FER2013 probabilities + 6 landmark geometry ratios); patch 4, so
          the UNet runs at 16 x 16 like cpu-demo's, and narrower: it trains on 2 CPU cores.
base      256 px through an AutoencoderKL (32 x 32 x 4 latents), for GPUs; a fresh VAE is
          random, so pass vae_path= (a diffusers AutoencoderKL folder) to train on real faces.
latent256 base's denoiser for photos (512-d ArcFace identity, the builtin pack's 13 expression
          values, both overridable): its VAE must come from vae_path= (jobs.train --vae), a
          diffusers AutoencoderKL folder or a Stable Diffusion folder with vae/, local or s3://;
          a random VAE's latents mean nothing, so it is refused without one.
sd-init   from a local Stable Diffusion folder (unet/ and vae/ subfolders, as
          save_pretrained writes them): its UNet and VAE weights, conv_in widened from C to
          2C + 1 input channels with zero-initialised new weights, and a zero-initialised
          condition -> timestep-embedding projection, so the widened model starts out
          computing exactly what the original UNet computed.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from sfsr.conditions import SYNTH_EXPRESSION_ENCODER, SYNTH_IDENTITY_ENCODER, EncoderRef  # SYNTH_*: re-exported
from sfsr.diffusion.schedule import Schedule
from sfsr.io import storage
from sfsr.io.cache import local_folder

if TYPE_CHECKING:  # diffusers and the network are imported where a model is built: a job's driver
    # that only checks presets (jobs.train) then starts ~3 s sooner
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from sfsr.model.diffsfsr import DiffSFSR

PRESETS = ("tiny", "cpu-demo", "photo64", "base", "latent256", "sd-init")
NEEDS_VAE = ("latent256",)  # latent presets refused without vae_path (base keeps its random-VAE default)

# The builtin face pack's encoders (sfsr/faces/builtin.py, DlibIdentity and FerGeometryExpression),
# which encode photo tables: named, not imported, so building a model never loads dlib.
BUILTIN_IDENTITY_ENCODER = str(EncoderRef("builtin", "dlib-resnet-v1", "1"))  # 128-d
BUILTIN_EXPRESSION_ENCODER = str(EncoderRef("builtin", "fer2013-minixception+geometry68", "1"))  # 7 + 6

# Stable Diffusion's AutoencoderKL: 8x down, 4 latent channels (the shape base and latent256 expect)
_SD_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}


def _unet(
    size: int,
    channels: tuple[int, ...],
    attn: tuple[bool, ...],
    cross_dim: int,
    heads: int,
    layers: int,
    groups: int,
    cond_hidden: int,
    c: int,
    patch: int = 1,
) -> dict[str, Any]:
    down = ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn]
    up = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
    return {
        "sample_size": size // patch,
        "in_channels": (2 * c + 1) * patch**2,
        "out_channels": c * patch**2,
        "down_block_types": down,
        "up_block_types": up,
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": list(channels),
        "layers_per_block": layers,
        "norm_num_groups": groups,
        "cross_attention_dim": cross_dim,
        "attention_head_dim": heads,  # diffusers' name; it sets the number of heads
        "class_embed_type": "projection",
        "projection_class_embeddings_input_dim": 2 * cond_hidden,
        "resnet_time_scale_shift": "scale_shift",  # FiLM: conditions scale and shift features
    }


def preset_config(preset: str, **overrides: Any) -> dict[str, Any]:
    """DiffSFSR constructor kwargs for a preset (not sd-init), with top-level overrides."""
    if preset == "tiny":
        cfg = dict(
            image_size=16,
            identity_dim=128,
            expression_dim=7,
            identity_tokens=2,
            expression_tokens=1,
            cond_hidden=32,
            unet_config=_unet(16, (16, 32), (False, True), 32, 2, 1, 8, 32, 3),
            schedule=vars(Schedule()),
        )
    elif preset == "cpu-demo":
        # patch 2: the UNet runs at 16 x 16 (no full-resolution level), 3-4x faster per sample
        # than a pixel UNet of a third the width (measured on 2 cores, see the model card).
        cfg = dict(
            image_size=32,
            identity_dim=128,
            expression_dim=7,
            identity_tokens=4,
            expression_tokens=4,
            cond_hidden=128,
            patch_size=2,
            unet_config=_unet(32, (64, 128), (False, True), 128, 4, 1, 16, 128, 3, 2),
            schedule=vars(Schedule()),
            identity_encoder=SYNTH_IDENTITY_ENCODER,
            expression_encoder=SYNTH_EXPRESSION_ENCODER,
        )
    elif preset == "photo64":
        # patch 4: the UNet runs at 16 x 16 like cpu-demo's, at 3/4 of its widths (2.7 M parameters to
        # cpu-demo's 4.5 M). train_step at batch 16, both presets in one process, best of 4 on the 2
        # shared dev cores (issue 13): photo64 0.149 s (108 samples/s) against cpu-demo's 0.226 s
        # (71 samples/s) on 2 threads; 0.217 s (74/s) against 0.329 s (49/s) on 1 thread; ratio 1.52.
        cfg = dict(
            image_size=64,
            identity_dim=128,
            expression_dim=13,
            identity_tokens=4,
            expression_tokens=4,
            cond_hidden=128,
            patch_size=4,
            unet_config=_unet(64, (48, 96), (False, True), 96, 4, 1, 16, 128, 3, 4),
            schedule=vars(Schedule()),
            identity_encoder=BUILTIN_IDENTITY_ENCODER,
            expression_encoder=BUILTIN_EXPRESSION_ENCODER,
        )
    elif preset in ("base", "latent256"):
        photo = preset == "latent256"
        cfg = dict(
            image_size=256,
            identity_dim=512,
            expression_dim=13 if photo else 16,
            identity_tokens=8,
            expression_tokens=4,
            cond_hidden=256,
            vae_config=dict(_SD_VAE),
            unet_config=_unet(32, (128, 256, 512), (False, True, True), 512, 8, 2, 32, 256, 4),
            schedule=vars(Schedule(beta_schedule="scaled_linear")),
            # latent256: jobs.train names the table's encoders (e.g. an insightface pack's ArcFace)
            identity_encoder="" if photo else "insightface-arcface",
            expression_encoder="" if photo else "builtin",
        )
    else:
        raise ValueError(f"preset={preset!r} is not one of {PRESETS} (sd-init: use sd_init())")
    unknown = (
        set(overrides)
        - set(cfg)
        - {
            "preset",
            "trained_on",
            "identity_encoder",
            "expression_encoder",
            "framing",
            "patch_size",
            "vae_config",
            "mask_dilate",
        }
    )
    if unknown:
        raise ValueError(f"preset {preset!r}: unknown override(s) {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update(overrides)
    cfg["preset"] = preset
    return cfg


def check_vae(preset: str, vae_path: str | None) -> None:
    """Refuse a preset / VAE pairing that cannot work, before anything is built or loaded."""
    if preset == "sd-init":
        if vae_path:
            raise ValueError("vae_path (jobs.train --vae): preset 'sd-init' takes its VAE from sd_path's vae/")
        return
    if preset in NEEDS_VAE and not vae_path:
        raise ValueError(
            f"preset {preset!r} works in the latents of a pretrained AutoencoderKL, and none was given: set "
            "vae_path= (jobs.train --vae) to a diffusers AutoencoderKL folder or a Stable Diffusion folder with "
            "vae/, local or s3://"
        )
    if vae_path and "vae_config" not in preset_config(preset):
        raise ValueError(f"vae_path (jobs.train --vae) given, but preset {preset!r} works in pixel space (no VAE)")


def make_model(
    preset: str, *, seed: int = 0, vae_path: str | None = None, sd_path: str | None = None, **overrides: Any
) -> DiffSFSR:
    """A freshly initialised DiffSFSR for `preset` (weights from torch.manual_seed(seed)).

    vae_path: the pretrained AutoencoderKL of a latent preset (see load_vae): required by
    latent256, and replaces base's random VAE.
    sd_path: the Stable Diffusion folder, required for preset "sd-init"."""
    check_vae(preset, vae_path)
    if preset == "sd-init":
        if not sd_path:
            raise ValueError("preset 'sd-init' needs sd_path=<local Stable Diffusion folder with unet/ and vae/>")
        return sd_init(sd_path, seed=seed, **overrides)
    if sd_path:
        raise ValueError(f"sd_path is only used by preset 'sd-init', not {preset!r}")
    cfg = preset_config(preset, **overrides)
    vae = None
    if vae_path:
        vae, source = load_vae(vae_path)
        _check_vae_shape(vae, cfg, source)
        # the model's config records the VAE's own (its weights are saved with the model) and where it came from
        cfg["vae_config"] = {**dict(vae.config), "_name_or_path": source}
    from sfsr.model.diffsfsr import DiffSFSR

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DiffSFSR(**cfg)
    if vae is not None:
        model.vae.load_state_dict(vae.state_dict())
    return model


def load_vae(vae_path: str) -> tuple[AutoencoderKL, str]:
    """(the AutoencoderKL, the folder it was read from) for `vae_path`, local or s3://: its vae/
    subfolder when it has one (a Stable Diffusion folder, as save_pretrained writes it), else the
    folder itself (a diffusers AutoencoderKL folder). Only that folder is fetched from s3://."""
    sub = storage.join(vae_path, "vae")
    source = sub if storage.exists(storage.join(sub, "config.json")) else vae_path
    folder = local_folder(source)
    what = (
        f"vae_path {vae_path} (jobs.train --vae): expected a diffusers AutoencoderKL folder (config.json + "
        "diffusion_pytorch_model.safetensors, as save_pretrained writes them) or a Stable Diffusion folder with vae/"
    )
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{what}; {source}/config.json cannot be read ({err})") from err
    kind = config.get("_class_name") if isinstance(config, dict) else None
    if kind != "AutoencoderKL":
        raise ValueError(f"{what}; {source}/config.json describes {kind or 'no diffusers model'}, not an AutoencoderKL")
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, TypeError) as err:  # missing or mismatched weights, bad config
        raise ValueError(f"{what}; loading {source} failed: {err}") from err
    return vae.requires_grad_(False), source


def _check_vae_shape(vae: AutoencoderKL, cfg: dict[str, Any], source: str) -> None:
    """The loaded VAE must make the latents the preset's UNet is built for."""
    want = cfg["vae_config"]
    have_c, want_c = int(vae.config.latent_channels), int(want["latent_channels"])
    have_f, want_f = 2 ** (len(vae.config.block_out_channels) - 1), 2 ** (len(want["block_out_channels"]) - 1)
    if (have_c, have_f) != (want_c, want_f):
        s = cfg["image_size"]
        raise ValueError(
            f"VAE {source}: {have_c} latent channels, {have_f}x down ({s} px -> {s // have_f} x {s // have_f}); preset "
            f"{cfg['preset']!r} needs {want_c} channels, {want_f}x down ({s // want_f} x {s // want_f} latents), like "
            "Stable Diffusion 1.x / 2.x's VAE"
        )


def _sd_parts(sd_path: str) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    root = Path(sd_path)
    missing = [s for s in ("unet", "vae") if not (root / s / "config.json").is_file()]
    if missing:
        raise FileNotFoundError(
            f"{sd_path}: no {' or '.join(missing)} subfolder with a config.json; sd-init expects "
            "a diffusers Stable Diffusion folder (unet/, vae/ as save_pretrained writes them)"
        )
    from diffusers import AutoencoderKL, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(root / "unet", use_safetensors=True)
    vae = AutoencoderKL.from_pretrained(root / "vae", use_safetensors=True)
    return unet, vae


def sd_init(
    sd_path: str,
    *,
    seed: int = 0,
    identity_dim: int = 512,
    expression_dim: int = 16,
    identity_tokens: int = 8,
    expression_tokens: int = 4,
    cond_hidden: int = 256,
    image_size: int | None = None,
    **extra: Any,
) -> DiffSFSR:
    """DiffSFSR initialised from a local Stable Diffusion folder (see module docstring)."""
    src_unet, vae = _sd_parts(sd_path)
    c = int(vae.config.latent_channels)
    if src_unet.config.in_channels != c:
        raise ValueError(
            f"{sd_path}: unet takes {src_unet.config.in_channels} channels but the VAE makes {c}-"
            "channel latents; sd-init widens a text-to-image UNet (in_channels == latent channels)"
        )
    if src_unet.config.class_embed_type is not None:
        raise ValueError(f"{sd_path}: unet already has class_embed_type={src_unet.config.class_embed_type!r}")
    unet_cfg = {k: v for k, v in dict(src_unet.config).items() if not k.startswith("_")}
    unet_cfg.update(
        in_channels=2 * c + 1, class_embed_type="projection", projection_class_embeddings_input_dim=2 * cond_hidden
    )
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    size = image_size or int(src_unet.config.sample_size) * factor
    schedule = _sd_schedule(Path(sd_path))
    from sfsr.model.diffsfsr import DiffSFSR

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DiffSFSR(
            unet_config=unet_cfg,
            vae_config=dict(vae.config),
            image_size=size,
            identity_dim=identity_dim,
            expression_dim=expression_dim,
            identity_tokens=identity_tokens,
            expression_tokens=expression_tokens,
            cond_hidden=cond_hidden,
            schedule=schedule,
            preset="sd-init",
            **extra,
        )
    state = {k: v for k, v in src_unet.state_dict().items() if not k.startswith("conv_in.")}
    missing, unexpected = model.unet.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    assert all(k.startswith(("conv_in.", "class_embedding.")) for k in missing), missing
    with torch.no_grad():
        w = model.unet.conv_in.weight  # (out, 2C + 1, k, k)
        w.zero_()
        w[:, :c] = src_unet.conv_in.weight  # new background + mask channels start at zero
        model.unet.conv_in.bias.copy_(src_unet.conv_in.bias)
    model.vae.load_state_dict(vae.state_dict())
    return model


def write_random_model(folder: str | Path, preset: str = "tiny", seed: int = 0) -> Path:
    """A random-weights model of `preset`, conditioned on the synth judges like cpu-demo (so a
    Generator builds its encoders), saved the way trained models are: for tests and benches."""
    make_model(
        preset,
        seed=seed,
        identity_encoder=SYNTH_IDENTITY_ENCODER,
        expression_encoder=SYNTH_EXPRESSION_ENCODER,
        trained_on="nothing (random weights, a test model)",
    ).save_pretrained(str(folder))
    return Path(folder)


def _sd_schedule(root: Path) -> dict[str, Any]:
    """The folder's scheduler settings when it has them (scheduler/scheduler_config.json)."""
    path = root / "scheduler" / "scheduler_config.json"
    sched = vars(Schedule(beta_schedule="scaled_linear", prediction_type="epsilon"))
    if path.is_file():
        raw = json.loads(path.read_text())
        for k in ("beta_schedule", "num_train_timesteps", "beta_start", "beta_end", "prediction_type"):
            if k in raw:
                sched[k] = raw[k]
    Schedule(**sched)  # validates
    return copy.deepcopy(sched)
