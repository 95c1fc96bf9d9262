"""sfsr.diffusion: schedule, losses, x0 recovery, samplers, ArcFace loader (no Ray, seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler

from sfsr.diffusion import arcface
from sfsr.diffusion.losses import denoising_loss, expression_loss, identity_loss
from sfsr.diffusion.recovery import IMPROVED, MIDPOINT, ONE_STEP, Recovery, recover_x0, substep_timesteps
from sfsr.diffusion.sampling import generators_for, guided_output, sample
from sfsr.diffusion.schedule import (
    PREDICTION_TYPES,
    Schedule,
    add_noise,
    alphas_cumprod,
    eps_from_x0,
    gather,
    split_prediction,
    target,
    x0_from_eps,
)


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_schedule_matches_diffusers(kind):
    s = Schedule(beta_schedule=kind)
    ref = DDIMScheduler(**s.scheduler_kwargs()).alphas_cumprod.double()
    assert torch.allclose(alphas_cumprod(s), ref, rtol=0, atol=1e-7)


@pytest.mark.parametrize("ptype", PREDICTION_TYPES)
def test_split_inverts_target(ptype):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    a = torch.tensor([0.999, 0.7, 0.3, 0.01], dtype=torch.float64)
    x_t = add_noise(x0, eps, a)
    got_x0, got_eps = split_prediction(target(x0, eps, a, ptype), x_t, a, ptype)
    assert torch.allclose(got_x0, x0, atol=1e-4) and torch.allclose(got_eps, eps, atol=1e-3)


def test_eps_and_x0_conversions_invert_the_forward_process():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    a = torch.tensor([0.999, 0.7, 0.3, 0.01], dtype=torch.float64)
    x_t = add_noise(x0, eps, a)
    assert torch.allclose(eps_from_x0(x_t, x0, a), eps, atol=1e-3)
    assert torch.allclose(x0_from_eps(x_t, eps, a), x0, atol=1e-3)
    # a = 1 (t = 0 of the cosine schedule in float32): finite, not a division by zero
    assert torch.isfinite(eps_from_x0(x0, x0, torch.ones(4, dtype=torch.float64))).all()


def _oracle(x0: torch.Tensor, table: torch.Tensor, ptype: str):
    """A 'network' that knows x0: at any (x, t) it outputs the exact prediction for it."""

    def denoise(x, t):
        a = gather(table, t).to(x.dtype).reshape(-1, 1, 1, 1)
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return target(x0, eps, gather(table, t), ptype)

    return denoise


@pytest.mark.parametrize("ptype", PREDICTION_TYPES)
@pytest.mark.parametrize("rec", [ONE_STEP, MIDPOINT, IMPROVED, Recovery(steps=4, spacing="logsnr", combine="mean")])
def test_recovery_exact_for_true_noise(ptype, rec):
    table = alphas_cumprod(Schedule())
    g = torch.Generator().manual_seed(1)
    x0 = torch.rand(5, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(5, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 10, 300, 700, 990])
    x_t = add_noise(x0, eps, gather(table, t))
    mask = (torch.rand(5, 1, 8, 8, generator=g) > 0.5).double()
    out = recover_x0(_oracle(x0, table, ptype), x_t, t, table, ptype, rec, background=x0, mask=mask)
    assert torch.allclose(out, x0, atol=1e-6)


def test_recovery_counts_and_places_evaluations():
    table = alphas_cumprod(Schedule())
    calls = []
    x0 = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    oracle = _oracle(x0, table, "epsilon")

    def counting(x, t):
        calls.append(t.clone())
        return oracle(x, t)

    t = torch.tensor([800, 400])
    recover_x0(counting, add_noise(x0, torch.randn_like(x0), gather(table, t)), t, table, "epsilon", MIDPOINT)
    assert len(calls) == 2 and calls[1].tolist() == [400, 200]  # plain midpoint: index t / 2
    lam = torch.log(table / (1 - table))
    ts = substep_timesteps(t, table, 2, "logsnr")
    # log-SNR placement: the midpoint's log-SNR is halfway between lambda(t) and lambda(0)
    for b in range(2):
        want = (lam[t[b]] + lam[0]) / 2
        assert abs(lam[ts[1][b]] - want) <= (lam[ts[1][b] - 1] - lam[ts[1][b] + 1]).abs()
    # `first` replaces the first evaluation (training re-uses the denoising loss's output)
    calls.clear()
    x_t = add_noise(x0, torch.randn_like(x0), gather(table, t))
    recover_x0(counting, x_t, t, table, "epsilon", MIDPOINT, first=oracle(x_t, t))
    assert len(calls) == 1


def test_denoising_loss_face_weighting_and_zero():
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 8, 8, generator=g)
    a = torch.tensor([0.5, 0.5], dtype=torch.float64)
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 2:6, 2:6] = 1
    tgt = target(x0, eps, a, "epsilon")
    assert torch.all(denoising_loss(tgt, x0, eps, a, "epsilon", mask) == 0)
    bump_face, bump_bg = tgt + mask, tgt + (1 - mask)  # error 1 on every face / background pixel
    kw = dict(face_weight=1.0, background_weight=0.1, min_snr_gamma=None)
    lf = denoising_loss(bump_face, x0, eps, a, "epsilon", mask, **kw)
    lb = denoising_loss(bump_bg, x0, eps, a, "epsilon", mask, **kw)
    w_sum = 16 * 1.0 + 48 * 0.1  # per channel
    assert torch.allclose(lf, torch.full((2,), 16 / w_sum)) and torch.allclose(lb, torch.full((2,), 4.8 / w_sum))


def test_min_snr_weight():
    x0 = torch.zeros(2, 1, 2, 2)
    eps = torch.zeros(2, 1, 2, 2)
    a = torch.tensor([0.9, 0.1], dtype=torch.float64)  # SNR 9 and 1/9
    pred = torch.ones(2, 1, 2, 2)
    raw = denoising_loss(pred, x0, eps, a, "epsilon", min_snr_gamma=None)
    w = denoising_loss(pred, x0, eps, a, "epsilon", min_snr_gamma=5.0) / raw
    assert torch.allclose(w, torch.tensor([5 / 9, 1.0]), atol=1e-6)  # min(SNR, 5) / SNR


class _FakeRecogniser(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, 8)
        self.size = 4

    def identity_embedding(self, x):
        return torch.nn.functional.normalize(self.proj(x.flatten(1)), dim=1)

    def expression(self, x):
        return x.mean(dim=(2, 3))  # (B, 3)


def test_identity_and_expression_losses():
    rec = _FakeRecogniser()
    x = torch.rand(3, 3, 4, 4) * 2 - 1
    assert torch.allclose(identity_loss(rec, x, rec.identity_embedding(x)), torch.zeros(3), atol=1e-6)
    assert torch.allclose(identity_loss(rec, x, -rec.identity_embedding(x)), torch.full((3,), 2.0), atol=1e-6)
    e = x.mean(dim=(2, 3))
    assert torch.allclose(expression_loss(rec, x, e), torch.zeros(3), atol=1e-7)
    assert torch.allclose(expression_loss(rec, x, e + 0.5, scale=torch.full((3,), 0.5)), torch.ones(3))
    x.requires_grad_(True)
    identity_loss(rec, x, torch.randn(3, 8)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable in the image


def _cond_net(scale_id: float, scale_ex: float):
    """Output depends on which conditions are kept: 1 + a*keep_id + b*keep_ex (times x)."""

    def net(x, t, drop_id, drop_ex):
        k = (1 + scale_id * (~drop_id).float() + scale_ex * (~drop_ex).float()).reshape(-1, 1, 1, 1)
        return x * k

    return net


def test_guidance_scales():
    x, t = torch.randn(2, 3, 4, 4), torch.tensor([5, 5])
    net = _cond_net(0.3, 0.7)
    uncond = net(x, t, torch.ones(2, dtype=torch.bool), torch.ones(2, dtype=torch.bool))
    full = net(x, t, torch.zeros(2, dtype=torch.bool), torch.zeros(2, dtype=torch.bool))
    for mode in ("compositional", "nested"):
        assert torch.equal(guided_output(net, x, t, 0.0, 0.0, mode), uncond)
    assert torch.allclose(guided_output(net, x, t, 1.0, 1.0, "nested"), full)
    # compositional: e_u + 2 (e_id - e_u) + 3 (e_ex - e_u) = x (1 + 2 * 0.3 + 3 * 0.7)
    assert torch.allclose(guided_output(net, x, t, 2.0, 3.0), x * (1 + 0.6 + 2.1))


def _smooth_net():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def net(x, t, drop_id, drop_ex):
        k = 0.5 + 0.2 * (~drop_id).float() - 0.1 * (~drop_ex).float()
        return conv(x) * 0.1 + x * k.reshape(-1, 1, 1, 1)

    return net


def test_sampling_paste_back_keeps_background_exactly():
    net = _smooth_net()
    bg = torch.rand(3, 3, 8, 8) * 2 - 1
    mask = torch.zeros(3, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    for sampler in ("ddim", "dpmsolver"):
        with torch.no_grad():
            out = sample(
                net,
                Schedule(),
                (3, 8, 8),
                generators_for([1, 2, 3]),
                background=bg,
                mask=mask,
                steps=6,
                sampler=sampler,
            )
        assert torch.equal(out * (1 - mask), bg * (1 - mask))
        assert not torch.allclose(out * mask, bg * mask)  # the face region was generated


def test_sampling_deterministic_and_batch_independent():
    net = _smooth_net()
    kw = dict(steps=5, guidance_identity=1.5, guidance_expression=2.0)
    with torch.no_grad():
        a = sample(net, Schedule(), (3, 8, 8), generators_for([7, 8, 9]), **kw)
        b = sample(net, Schedule(), (3, 8, 8), generators_for([7, 8, 9]), **kw)
        c = sample(net, Schedule(), (3, 8, 8), generators_for([8]), **kw)
        d = sample(net, Schedule(), (3, 8, 8), generators_for([10]), **kw)
    assert torch.equal(a, b)
    assert torch.allclose(a[1:2], c, atol=1e-5)  # same seed alone or in a batch
    assert not torch.allclose(c, d)


def _random_iresnet_state(layers=(1, 1, 1, 1), emb=64):
    torch.manual_seed(3)
    net = arcface.IResNet(layers, embedding=emb)
    for m in net.modules():  # non-trivial BN statistics so eval mode matters
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return net, net.state_dict()


def test_arcface_loads_safetensors_and_torch_files(tmp_path):
    from safetensors.torch import save_file

    net, state = _random_iresnet_state()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "w.safetensors"))
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "w.pt")  # DDP-style keys
    a = arcface.load_arcface(tmp_path / "w.safetensors")
    b = arcface.load_arcface(tmp_path / "w.pt")
    x = torch.rand(2, 3, 56, 56) * 2 - 1  # any size: resized to 112
    ea, eb = a.identity_embedding(x), b.identity_embedding(x)
    ref = torch.nn.functional.normalize(
        net.eval()(torch.nn.functional.interpolate(x, size=112, mode="bilinear")), dim=1
    )
    assert ea.shape == (2, 64) and torch.allclose(ea.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(ea, eb) and torch.allclose(ea, ref, atol=1e-5)
    assert arcface.layers_from_state(state) == (1, 1, 1, 1)


class _Evil:
    """Any non-tensor object: torch.load(weights_only=True) must refuse to build it."""


def test_arcface_rejects_pickled_objects_and_wrong_weights(tmp_path):
    torch.save({"x": _Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="not a plain state dict"):
        arcface.load_arcface(tmp_path / "evil.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an IResNet"):
        arcface.load_arcface(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        arcface.load_arcface(tmp_path / "missing.safetensors")


def test_arcface_np_free_gradients():
    net, _ = _random_iresnet_state()
    enc = arcface.ArcFaceEncoder(net)
    x = (torch.rand(1, 3, 112, 112) * 2 - 1).requires_grad_(True)
    identity_loss(enc, x, torch.randn(1, 64)).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert all(not p.requires_grad for p in enc.parameters()) and not enc.training
    assert np.isfinite(x.grad.numpy()).all()


def test_improved_is_the_mean_of_one_step_and_midpoint_with_paste():
    torch.manual_seed(4)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    table = alphas_cumprod(Schedule())

    def net(x, t):
        return conv(x) * 0.3

    x_t, t = torch.randn(2, 3, 6, 6), torch.tensor([500, 800])
    bg, mask = torch.rand(2, 3, 6, 6), (torch.rand(2, 1, 6, 6) > 0.5).float()
    kw = dict(background=bg, mask=mask)
    with torch.no_grad():
        one = recover_x0(net, x_t, t, table, "v_prediction", Recovery(1, paste_background=True), **kw)
        mid = recover_x0(net, x_t, t, table, "v_prediction", Recovery(2, paste_background=True), **kw)
        imp = recover_x0(net, x_t, t, table, "v_prediction", IMPROVED, **kw)
    assert torch.allclose(imp, (one + mid) / 2, atol=1e-6)
    assert torch.equal(imp * (1 - mask), bg * (1 - mask))  # known background, exactly
    assert not torch.allclose(one, mid)
