"""The photo presets (issue 13): photo64 in pixels on the builtin face pack's conditions, and
latent256 through a pretrained AutoencoderKL read from a folder (tiny random VAEs written here)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from sfsr.model import DiffSFSR, make_model, presets
from sfsr.model.presets import (
    BUILTIN_EXPRESSION_ENCODER,
    BUILTIN_IDENTITY_ENCODER,
    SYNTH_EXPRESSION_ENCODER,
    SYNTH_IDENTITY_ENCODER,
    _unet,
)
from sfsr.model.training import TrainConfig, make_optimizer, train_step
from tests.fixtures.batches import random_batch


def _batch(model, b: int = 2, seed: int = 0):
    return random_batch(model, b, seed)


def _one_step(model: DiffSFSR, b: int = 2) -> dict[str, float]:
    """One train_step; asserts it moved the denoiser and left the VAE (if any) alone."""
    cfg = TrainConfig(batch_size=b, warmup_steps=1)
    opt, sched = make_optimizer(model, cfg)
    before = model.unet.conv_in.weight.detach().clone()
    vae_before = {k: v.clone() for k, v in model.vae.state_dict().items()} if model.vae is not None else {}
    logs = train_step(model, None, _batch(model, b), cfg, 0, opt, sched)
    assert torch.isfinite(torch.tensor(logs["loss"])) and logs["grad_norm"] > 0
    assert not torch.equal(before, model.unet.conv_in.weight)
    for k, v in vae_before.items():
        assert torch.equal(v, model.vae.state_dict()[k]), k  # frozen
    return logs


# -- photo64 ------------------------------------------------------------------------------------


def test_photo64_is_conditioned_on_the_builtin_pack_and_cpu_demo_on_the_synth_judges() -> None:
    photo, demo = make_model("photo64"), make_model("cpu-demo")
    c = photo.config
    assert (c.image_size, c.identity_dim, c.expression_dim, c.patch_size, photo.vae) == (64, 128, 13, 4, None)
    assert c.identity_encoder == BUILTIN_IDENTITY_ENCODER == "builtin/dlib-resnet-v1@1"
    assert c.expression_encoder == BUILTIN_EXPRESSION_ENCODER == "builtin/fer2013-minixception+geometry68@1"
    assert (demo.config.identity_encoder, demo.config.expression_encoder) == (
        SYNTH_IDENTITY_ENCODER,
        SYNTH_EXPRESSION_ENCODER,
    )
    n = sum(p.numel() for p in photo.parameters())
    assert n < sum(p.numel() for p in demo.parameters())  # narrower than cpu-demo: it trains on 2 cores


def test_builtin_encoder_names_match_the_pack() -> None:
    """The names photo64 records are the ones jobs.ingest writes for the builtin pack."""
    pytest.importorskip("dlib")
    from sfsr.conditions import EncoderRef
    from sfsr.faces import builtin

    def default(cls: type, name: str):
        return next(f.default for f in dataclasses.fields(cls) if f.name == name)

    for cls, name, dim in (
        (builtin.DlibIdentity, BUILTIN_IDENTITY_ENCODER, 128),
        (builtin.FerGeometryExpression, BUILTIN_EXPRESSION_ENCODER, 13),
    ):
        assert str(EncoderRef("builtin", default(cls, "name"), default(cls, "version"))) == name
        assert default(cls, "output").dim == dim


def test_photo64_forward_and_one_train_step() -> None:
    model = make_model("photo64", seed=1)
    b = _batch(model)
    background, mask = model.prepare_background(b["image"], b["mask"])
    out = model(b["image"], torch.tensor([10, 500]), background, mask, b["identity"], b["expression"])
    assert out.shape == (2, 3, 64, 64)
    out.pow(2).mean().backward()
    assert model.identity_stream.to_tokens.weight.grad.abs().sum() > 0
    assert model.expression_stream.to_tokens.weight.grad.abs().sum() > 0
    model.zero_grad()
    _one_step(model)


def test_pixel_presets_refuse_a_vae(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"--vae.*'photo64' works in pixel space"):
        make_model("photo64", vae_path=str(tmp_path))


# -- latent256 ----------------------------------------------------------------------------------


def _tiny_vae(levels: int = 4, seed: int = 0) -> AutoencoderKL:
    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=(4,) * levels,  # levels - 1 downsamplings: 4 levels are SD's 8x
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
    ).eval()


@pytest.fixture(params=["vae-folder", "sd-folder"])
def vae_dir(request, tmp_path) -> tuple[str, str, AutoencoderKL]:
    """(what to pass as vae_path, the folder the VAE should be read from, the VAE written there)."""
    vae = _tiny_vae()
    if request.param == "vae-folder":
        root = tmp_path / "vae-only"
        vae.save_pretrained(root)
        return str(root), str(root), vae
    root = tmp_path / "sd"  # a Stable Diffusion folder: model_index.json at the top, parts below
    vae.save_pretrained(root / "vae")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return str(root), str(root / "vae"), vae


def _small_unet() -> dict:
    """A small UNet for 4-channel 32 x 32 latents: train_step on latent256's own 104 M-parameter
    UNet takes seconds on a CPU; the VAE path under test is the same."""
    return dict(cond_hidden=32, unet_config=_unet(32, (16, 32), (False, True), 32, 2, 1, 8, 32, 4))


def test_latent256_reads_the_vae_and_encodes_256_px_to_32x32x4(vae_dir) -> None:
    path, used, vae = vae_dir
    model = make_model("latent256", vae_path=path)
    assert (model.latent_channels, model.latent_size, model.config.identity_dim) == (4, 32, 512)
    assert model.config.vae_config["_name_or_path"] == used  # which folder was read, kept in the model
    for k, v in vae.state_dict().items():
        assert torch.equal(model.vae.state_dict()[k], v), k
    assert not any(p.requires_grad for p in model.vae.parameters())
    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = model.encode(images)
        assert z.shape == (2, 4, 32, 32)
        assert torch.allclose(z, vae.encode(images).latent_dist.mean * vae.config.scaling_factor, atol=1e-6)
        assert model.decode(z).shape == (2, 3, 256, 256)
    assert make_model("latent256", vae_path=path, identity_dim=128).config.identity_dim == 128  # overridable


def test_latent256_train_step_and_save_load(vae_dir, tmp_path) -> None:
    path, used, _ = vae_dir
    model = make_model("latent256", vae_path=path, **_small_unet())
    _one_step(model, b=2)
    model.save_pretrained(tmp_path / "saved")
    again = DiffSFSR.from_pretrained(tmp_path / "saved")
    assert again.config.vae_config["_name_or_path"] == used
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        assert torch.equal(again.encode(x), model.encode(x))  # the VAE's weights travel with the model


def test_base_and_latent256_share_the_vae_path(vae_dir) -> None:
    path, used, vae = vae_dir
    base = make_model("base", vae_path=path, **_small_unet())
    assert base.config.vae_config["_name_or_path"] == used
    assert torch.equal(base.vae.encoder.conv_in.weight, vae.encoder.conv_in.weight)


def test_latent256_without_a_vae_is_refused_naming_the_setting() -> None:
    with pytest.raises(ValueError, match=r"'latent256'.*none was given.*vae_path=.*--vae"):
        make_model("latent256")


def test_the_train_job_refuses_before_any_worker_starts() -> None:
    from jobs.train import parse_args, run

    job, _ = parse_args(["--table", "no/such/table", "--preset", "latent256"])
    with pytest.raises(ValueError, match="--vae"):  # before the table is read or Ray is touched
        run(job)
    job, _ = parse_args(["--table", "t", "--preset", "latent256", "--init-from", "m", "--vae", "v"])
    with pytest.raises(ValueError, match="--vae v: the --init-from model m holds its own VAE"):
        run(job)


def test_a_folder_that_is_not_a_vae_fails_clearly(tmp_path) -> None:
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel", "in_channels": 4}))
    with pytest.raises(ValueError, match=r"unet/config.json describes UNet2DConditionModel, not an AutoencoderKL"):
        make_model("latent256", vae_path=str(unet))
    with pytest.raises(ValueError, match=r"empty/config.json cannot be read"):
        (tmp_path / "empty").mkdir()
        make_model("latent256", vae_path=str(tmp_path / "empty"))
    no_weights = tmp_path / "no-weights"
    _tiny_vae().save_pretrained(no_weights)
    (no_weights / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"loading .*no-weights failed"):
        make_model("latent256", vae_path=str(no_weights))
    shallow = tmp_path / "shallow"  # 2x down: 128 x 128 latents, not the 32 x 32 the UNet is built for
    _tiny_vae(levels=2).save_pretrained(shallow)
    with pytest.raises(ValueError, match=r"2x down .*'latent256' needs 4 channels, 8x down \(32 x 32 latents\)"):
        make_model("latent256", vae_path=str(shallow))


def test_an_s3_stable_diffusion_folder_fetches_only_its_vae(tmp_path, monkeypatch) -> None:
    """s3:// goes through sfsr.io.cache.local_folder; a local folder stands in for the bucket."""
    _tiny_vae().save_pretrained(tmp_path / "bucket" / "sd" / "vae")
    (tmp_path / "bucket" / "sd" / "unet").mkdir()  # what must not be fetched

    def local(uri: str) -> Path:
        return tmp_path / "bucket" / uri.removeprefix("s3://b/")

    fetched: list[str] = []
    monkeypatch.setattr(presets.storage, "exists", lambda uri: local(uri).exists())
    monkeypatch.setattr(presets, "local_folder", lambda uri: fetched.append(uri) or local(uri))
    vae, source = presets.load_vae("s3://b/sd")
    assert fetched == ["s3://b/sd/vae"] and source == "s3://b/sd/vae"
    assert vae.config.latent_channels == 4
