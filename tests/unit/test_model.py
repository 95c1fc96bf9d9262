"""sfsr.model: presets, save/load, condition dropout, sd-init widening, the training step."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

from sfsr.io.images import encode_png
from sfsr.model import DiffSFSR, make_model
from sfsr.model.training import (
    EMA,
    TrainConfig,
    batch_from_table_rows,
    face_region,
    identity_label_means,
    load_training_state,
    make_optimizer,
    swap_sources,
    train_step,
    training_state,
)
from tests.fixtures.batches import random_batch


def _inputs(model: DiffSFSR, b: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    c, s = model.latent_channels, model.latent_size
    return dict(
        sample=torch.randn(b, c, s, s, generator=g),
        timestep=torch.randint(0, 1000, (b,), generator=g),
        background=torch.randn(b, c, s, s, generator=g),
        mask=(torch.rand(b, 1, s, s, generator=g) > 0.5).float(),
        identity=torch.randn(b, model.config.identity_dim, generator=g),
        expression=torch.randn(b, model.config.expression_dim, generator=g),
    )


def _perturb(model: torch.nn.Module, seed: int = 1) -> None:
    """Random small values in every parameter, so zero-initialised paths carry signal too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def test_tiny_forward_backward():
    model = make_model("tiny")
    x = _inputs(model, 3)
    out = model(**x)
    assert out.shape == (3, 3, 16, 16)
    out.pow(2).mean().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["unet.conv_in.weight"].abs().sum() > 0
    assert grads["identity_stream.to_tokens.weight"].abs().sum() > 0
    assert grads["expression_stream.to_tokens.weight"].abs().sum() > 0
    assert grads["stream_logits"] is not None


def test_cpu_demo_and_base_shapes():
    demo = make_model("cpu-demo")
    assert demo.config.image_size == 32 and demo.config.patch_size == 2
    with torch.no_grad():
        assert demo(**_inputs(demo)).shape == (2, 3, 32, 32)
    base = make_model("base")
    assert base.vae is not None and base.latent_size == 32 and base.latent_channels == 4
    x = _inputs(base, 1)
    with torch.no_grad():
        assert base(**x).shape == (1, 4, 32, 32)
        z = base.encode(torch.zeros(1, 3, 64, 64))  # fully convolutional: 64 px -> 8 x 8 latent
        assert z.shape == (1, 4, 8, 8) and base.decode(z).shape == (1, 3, 64, 64)
    assert not any(p.requires_grad for p in base.vae.parameters())  # the VAE stays frozen


def test_save_load_round_trip(tmp_path):
    model = make_model("tiny", seed=3)
    _perturb(model)
    model.save_pretrained(tmp_path / "m")
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert files == ["config.json", "diffusion_pytorch_model.safetensors"]  # no pickle
    loaded = DiffSFSR.from_pretrained(tmp_path / "m")
    x = _inputs(model)
    with torch.no_grad():
        assert torch.equal(model(**x), loaded(**x))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["preset"] == "tiny"


def test_condition_dropout_really_drops():
    model = make_model("tiny")
    _perturb(model)
    x = _inputs(model)
    other_id = dict(x, identity=torch.randn_like(x["identity"]))
    other_ex = dict(x, expression=torch.randn_like(x["expression"]))
    yes, no = torch.ones(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        # dropped: the vector is ignored; kept: it changes the output
        assert torch.equal(model(**x, drop_identity=yes), model(**other_id, drop_identity=yes))
        assert not torch.allclose(model(**x, drop_identity=no), model(**other_id, drop_identity=no))
        assert torch.equal(model(**x, drop_expression=yes), model(**other_ex, drop_expression=yes))
        assert not torch.allclose(model(**x, drop_expression=no), model(**other_ex, drop_expression=no))
        # independent: dropping identity keeps the expression stream alive
        assert not torch.allclose(model(**x, drop_identity=yes), model(**other_ex, drop_identity=yes))


def test_errors_name_the_input():
    model = make_model("tiny")
    x = _inputs(model)
    with pytest.raises(ValueError, match="identity: got shape"):
        model(**dict(x, identity=torch.zeros(2, 5)))
    with pytest.raises(ValueError, match="background"):
        model(**dict(x, background=torch.zeros(2, 3, 8, 8)))
    with pytest.raises(ValueError, match="not one of"):
        make_model("huge")
    with pytest.raises(ValueError, match="sd_path"):
        make_model("sd-init")


def _tiny_sd_folder(root):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24,
        attention_head_dim=2,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
    )
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    return unet.eval()


def test_sd_init_widening_keeps_original_outputs(tmp_path):
    orig = _tiny_sd_folder(tmp_path / "sd")
    model = make_model("sd-init", sd_path=str(tmp_path / "sd"), identity_dim=10, expression_dim=3, cond_hidden=16)
    assert model.unet.config.in_channels == 9 and model.latent_size == 8 and model.config.image_size == 16
    assert torch.count_nonzero(model.unet.conv_in.weight[:, 4:]) == 0
    x = _inputs(model)
    with torch.no_grad():
        tokens, _ = model.conditioning(x["identity"], x["expression"])
        want = orig(x["sample"], x["timestep"], encoder_hidden_states=tokens).sample
        got = model(**x)  # background and mask are random: the zero weights ignore them
    assert torch.allclose(got, want, atol=1e-5)
    with torch.no_grad():
        z = model.encode(torch.zeros(1, 3, 16, 16))
    assert z.shape == (1, 4, 8, 8)


def test_face_region_dilates():
    m = torch.zeros(1, 1, 9, 9)
    m[..., 4, 4] = 1
    assert face_region(m, 0).sum() == 1 and face_region(m, 1).sum() == 9 and face_region(m, 2).sum() == 25


def _batch(model, b: int = 4, seed: int = 0):
    return random_batch(model, b, seed)


def test_train_step_learns_and_is_deterministic():
    cfg = TrainConfig(batch_size=4, warmup_steps=1, lr=1e-3)
    losses = []
    for _ in range(2):
        model = make_model("tiny", seed=0)
        ema = EMA(model, 0.9)
        opt, sched = make_optimizer(model, cfg)
        before = model.unet.conv_in.weight.detach().clone()
        logs = train_step(model, ema, _batch(model), cfg, 0, opt, sched)
        losses.append(logs["loss"])
        assert not torch.equal(before, model.unet.conv_in.weight)
        assert not torch.equal(ema.model.unet.conv_in.weight, before)
    assert losses[0] == losses[1] and np.isfinite(losses[0])
    # repeated steps on one batch lower its loss
    model = make_model("tiny", seed=0)
    opt, sched = make_optimizer(model, TrainConfig(warmup_steps=1, lr=3e-3))
    first = [train_step(model, None, _batch(model), TrainConfig(seed=5), 0, opt)["loss"] for _ in range(30)]
    assert first[-1] < first[0]


def test_train_step_dropout_probability_one_ignores_the_vector():
    model = make_model("tiny")
    cfg = TrainConfig(p_drop_identity=1.0, p_drop_expression=0.0)
    opt, _ = make_optimizer(model, cfg)
    train_step(model, None, _batch(model), cfg, 0, opt)
    # the identity MLP's first layer only saw the learned null vector, whose gradient flows to
    # `null`; the expression stream saw real vectors
    assert model.identity_stream.null.grad.abs().sum() > 0
    assert model.expression_stream.null.grad is None or model.expression_stream.null.grad.abs().sum() == 0


class _TinyJudge(torch.nn.Module):
    size = 16

    def __init__(self):
        super().__init__()
        self.p = torch.nn.Linear(3 * 16 * 16, 128)

    def identity_embedding(self, x):
        return torch.nn.functional.normalize(self.p(x.flatten(1)), dim=1)

    def expression(self, x):
        return x.mean(dim=(2, 3)).repeat(1, 3)[:, :7]


def test_train_step_with_recovery_losses():
    Judge = _TinyJudge
    model = make_model("tiny")
    cfg = TrainConfig(identity_loss_weight=0.5, expression_loss_weight=0.5, aux_batch=2, recovery="midpoint")
    opt, _ = make_optimizer(model, cfg)
    logs = train_step(model, None, _batch(model), cfg, 0, opt, judges=Judge())
    # the recovery losses are really computed (a random model's recovered faces are not the targets)
    # and enter the total with their weights
    assert logs["loss_identity"] > 1e-3 and logs["loss_expression"] > 1e-6
    assert logs["loss"] == pytest.approx(
        logs["loss_denoise"] + 0.5 * logs["loss_identity"] + 0.5 * logs["loss_expression"], rel=1e-5
    )


def test_swap_sources_take_another_persons_identity_half_a_batch_away():
    ident = torch.nn.functional.normalize(torch.randn(8, 16), dim=1)
    ident[5] = ident[1]  # sample 1's donor (1 + 8 // 2) is the same person: it keeps its own
    assert swap_sources(ident, 4, 0).tolist() == [0, 1, 2, 3]
    assert swap_sources(ident, 4, 3).tolist() == [4, 1, 6, 3]


def test_swap_trained_identity_loss_aims_at_the_donor(monkeypatch):
    import sfsr.model.training as T

    seen = []
    real = T.identity_loss
    monkeypatch.setattr(
        T, "identity_loss", lambda j, images, target: seen.append(target.clone()) or real(j, images, target)
    )
    model = make_model("tiny")
    batch = _batch(model)
    batch["identity"] = torch.nn.functional.normalize(torch.randn_like(batch["identity"]), dim=1)
    b = batch["identity"].shape[0]
    cfg = TrainConfig(identity_loss_weight=0.5, aux_batch=2, aux_swap=1.0, recovery="one_step")
    opt, _ = make_optimizer(model, cfg)
    train_step(model, None, batch, cfg, 0, opt, judges=_TinyJudge())
    assert torch.equal(seen[0], batch["identity"][[b // 2, 1 + b // 2]])
    cfg = TrainConfig(identity_loss_weight=0.5, aux_batch=2, aux_swap=0.0, recovery="one_step")
    train_step(model, None, batch, cfg, 1, opt, judges=_TinyJudge())
    assert torch.equal(seen[1], batch["identity"][:2])


def test_checkpoint_state_round_trip(tmp_path):
    model = make_model("tiny")
    cfg = TrainConfig()
    ema = EMA(model)
    opt, sched = make_optimizer(model, cfg)
    train_step(model, ema, _batch(model), cfg, 0, opt, sched)
    torch.save(training_state(model, ema, opt, sched, 1), tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # no arbitrary pickle needed
    m2 = make_model("tiny", seed=9)
    e2 = EMA(m2)
    o2, s2 = make_optimizer(m2, cfg)
    assert load_training_state(state, m2, e2, o2, s2) == 1
    assert torch.equal(m2.unet.conv_in.weight, model.unet.conv_in.weight)
    assert e2.updates == 1 and s2.last_epoch == sched.last_epoch


def test_batch_from_table_rows():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    masks = np.zeros((3, 24, 24), np.uint8)
    masks[:, 6:18, 6:18] = 255
    table = pa.table(
        {
            "image": [encode_png(i) for i in imgs],
            "face_mask": [encode_png(m) for m in masks],
            "identity": [rng.normal(size=128).astype(np.float32).tolist() for _ in range(3)],
            "expression": [rng.normal(size=7).astype(np.float32).tolist() for _ in range(3)],
            "labels": [
                {"identity_label": lab, "expression_word": None, "synth_params": None} for lab in ("a", "a", "b")
            ],
        }
    )
    b = batch_from_table_rows(table, 16)
    assert b["image"].shape == (3, 3, 16, 16) and b["mask"].shape == (3, 1, 16, 16)
    assert b["image"].min() >= -1 and b["image"].max() <= 1
    assert set(torch.unique(b["mask"]).tolist()) == {0.0, 1.0} and b["mask"][:, :, 8, 8].all()
    assert torch.allclose(b["identity"][2], torch.tensor(table["identity"][2].as_py()))
    same = batch_from_table_rows(table.to_pandas(), 24)
    assert torch.allclose(same["image"], torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1)
    means = identity_label_means(table)
    with_means = batch_from_table_rows(table, 16, identity_means=means)
    assert torch.allclose(with_means["identity"][0], with_means["identity"][1])  # both rows of "a"
    assert torch.allclose(with_means["identity"][0].norm(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="missing column"):
        batch_from_table_rows(table.drop_columns(["face_mask"]), 16)
