"""The paper's losses on photos (issue 13, item 3): the builtin FER network read differentiably,
ArcFace from the user's weights, targets read from the true faces, gradients reaching the UNet."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sfsr.diffusion.arcface import IResNet, load_arcface
from sfsr.faces.analyze import analyze_image
from sfsr.faces.pack import open_pack
from sfsr.model.presets import make_model
from sfsr.model.recognisers import PhotoRecognisers, builtin_fer_reader
from sfsr.model.training import TrainConfig, _aux_losses, face_region
from tests.fixtures import photos


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    """Aligned 256 px crops of three real photos (two people), (3, 256, 256, 3) uint8."""
    pack = open_pack("builtin")
    names = ("obama.jpg", "obama2.jpg", "biden.jpg")
    return np.stack([analyze_image(pack, photos.load(n), 256)[0].crop for n in names])


def _tensor(crops: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 127.5 - 1  # (B, 3, S, S) in [-1, 1]
    return torch.nn.functional.interpolate(x, size=(size, size), mode="area")


@pytest.fixture(scope="module")
def arcface_file(tmp_path_factory) -> str:
    """Stand-in ArcFace weights: a random r18-shaped IResNet with a 64-d embedding."""
    torch.manual_seed(0)
    net = IResNet((1, 1, 1, 1), embedding=64).eval()
    path = tmp_path_factory.mktemp("arcface") / "r.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return str(path)


def test_the_torch_fer_reader_reads_what_the_builtin_pack_reads(crops):
    pack = open_pack("builtin")
    want = pack.expression(crops)[:, :7]  # numpy path: cv2 grey, crop, resize, fer network
    got = builtin_fer_reader()(_tensor(crops, 256)).detach().numpy()
    # the numpy path rounds the grey face to uint8 and resizes with cv2's INTER_AREA on a
    # fractional factor; measured max difference 0.06 on these photos, argmax identical
    assert np.abs(got - want).max() < 0.1, (got, want)
    assert np.argmax(got, axis=1).tolist() == np.argmax(want, axis=1).tolist()


def test_the_fer_reader_is_differentiable_in_the_image(crops):
    x = _tensor(crops[:1], 64).requires_grad_(True)
    builtin_fer_reader()(x)[0, 3].backward()  # "happy"
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def _photo_batch(crops: np.ndarray, size: int) -> dict[str, torch.Tensor]:
    b = len(crops)
    mask = torch.zeros(b, 1, size, size)
    mask[:, :, size // 5 : size - 2, size // 6 : size - size // 6] = 1  # the face region of an aligned crop
    return {
        "image": _tensor(crops, size),
        "mask": mask,
        "identity": torch.nn.functional.normalize(torch.randn(b, 128, generator=torch.Generator().manual_seed(1))),
        "expression": torch.rand(b, 13, generator=torch.Generator().manual_seed(2)),
    }


def _aux(model, recognisers, batch, cfg):
    region = face_region(batch["mask"], model.config.mask_dilate)
    with torch.no_grad():
        x0 = model.encode(batch["image"])
        background, mregion = model.prepare_background(batch["image"], region)
    alphas = torch.linspace(0.9999, 0.01, model.schedule.num_train_timesteps)
    g = torch.Generator().manual_seed(5)
    return _aux_losses(model, model, recognisers, batch, x0, background, mregion, alphas, cfg, g)


def test_photo_losses_reach_the_unet_and_weightless_ones_are_not_computed(crops, arcface_file):
    model = make_model("tiny", seed=0, identity_dim=128, expression_dim=13)
    batch = _photo_batch(crops, model.config.image_size)
    rec = PhotoRecognisers(load_arcface(arcface_file), builtin_fer_reader())
    cfg = TrainConfig(identity_loss_weight=1.0, expression_loss_weight=1.0, aux_t_max=400)
    out = _aux(model, rec, batch, cfg)
    assert float(out["loss_identity"]) > 1e-4 and float(out["loss_expression"]) > 1e-6
    model.zero_grad()
    (out["loss_identity"] + out["loss_expression"]).backward()
    grads = [p.grad for p in model.unet.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0

    # expression only: no ArcFace needed, the identity loss is not computed
    only_expr = PhotoRecognisers(None, builtin_fer_reader())
    out = _aux(model, only_expr, batch, TrainConfig(expression_loss_weight=1.0, aux_t_max=400))
    assert float(out["loss_identity"]) == 0 and float(out["loss_expression"]) > 1e-6
    with pytest.raises(ValueError, match="--identity-recogniser"):
        _aux(model, only_expr, batch, TrainConfig(identity_loss_weight=1.0))


def test_a_swap_aims_the_identity_loss_at_the_donor(crops, arcface_file):
    # the same recovered faces, scored against their own ArcFace reading vs another person's
    model = make_model("tiny", seed=0, identity_dim=128, expression_dim=13)
    batch = _photo_batch(crops, model.config.image_size)
    batch["identity"] = torch.nn.functional.normalize(torch.randn(3, 128, generator=torch.Generator().manual_seed(3)))
    rec = PhotoRecognisers(load_arcface(arcface_file), None)
    own = _aux(model, rec, batch, TrainConfig(identity_loss_weight=1.0, aux_swap=0.0, aux_t_max=400))
    swapped = _aux(model, rec, batch, TrainConfig(identity_loss_weight=1.0, aux_swap=1.0, aux_t_max=400))
    assert float(own["loss_identity"]) != pytest.approx(float(swapped["loss_identity"]), abs=1e-6)
