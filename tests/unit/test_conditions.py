"""sfsr.conditions: a model's encoders are built from the names in its config, the synth judges
and face packs alike, and a pack that is missing or of another version is refused by name."""

from __future__ import annotations

import numpy as np
import pytest

from sfsr.conditions import ConditionsError, EncoderRef, encoder_ref, encoders_for
from sfsr.faces.pack import open_pack
from sfsr.generate import Generator
from sfsr.model.presets import make_model
from tests.fixtures import photos

BUILTIN_ID = "builtin/dlib-resnet-v1@1"
BUILTIN_EX = "builtin/fer2013-minixception+geometry68@1"


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Two real photos, centre-cropped square and resized to 64 px: (2, 64, 64, 3) uint8."""
    from sfsr.io.images import resize_square

    out = []
    for name in ("obama.jpg", "biden.jpg"):
        img = photos.load(name)
        side = min(img.shape[:2])
        y, x = (img.shape[0] - side) // 2, (img.shape[1] - side) // 2
        out.append(resize_square(img[y : y + side, x : x + side], 64))
    return np.stack(out)


def test_names_round_trip_and_a_bare_name_means_the_builtin_pack():
    ref = EncoderRef.parse("buffalo_l/w600k_r50@1")
    assert (ref.pack, ref.encoder, ref.version) == ("buffalo_l", "w600k_r50", "1")
    assert str(ref) == "buffalo_l/w600k_r50@1"
    assert EncoderRef.parse("dlib-resnet-v1@1") == EncoderRef("builtin", "dlib-resnet-v1", "1")
    for bad in ("dlib-resnet-v1", "builtin/@1", "/x@1", "pack/enc@"):
        with pytest.raises(ConditionsError, match="PACK/ENCODER@VERSION"):
            EncoderRef.parse(bad)


def test_the_builtin_pack_names_its_encoders_the_way_models_record_them():
    pack = open_pack("builtin")
    assert encoder_ref(pack.name, pack.identity) == BUILTIN_ID
    assert encoder_ref(pack.name, pack.expression) == BUILTIN_EX


def test_builtin_encoders_read_photos_and_words(faces):
    enc = encoders_for(BUILTIN_ID, BUILTIN_EX)
    ident, expr = enc.identity(faces), enc.expression(faces)
    assert ident.shape == (2, 128) and expr.shape == (2, 13)
    assert np.allclose(np.linalg.norm(ident, axis=1), 1, atol=1e-4)
    assert float(ident[0] @ ident[1]) < 0.95  # two people, two descriptors
    joy, fear = enc.targets.target("joy"), enc.targets.target("terror")
    assert joy.shape == (13,) and np.argmax(joy[:7]) != np.argmax(fear[:7])


def test_a_pack_that_is_not_installed_is_refused_naming_pack_and_encoder(tmp_path, monkeypatch):
    monkeypatch.setenv("SFSR_PACKS_DIR", str(tmp_path))
    with pytest.raises(ConditionsError, match=r"identity encoder buffalo_l/w600k_r50@1 .*face pack 'buffalo_l'"):
        encoders_for("buffalo_l/w600k_r50@1", BUILTIN_EX)


def test_another_version_of_an_encoder_is_refused_naming_both():
    with pytest.raises(ConditionsError, match=r"builtin/dlib-resnet-v1@2.*dlib-resnet-v1@1"):
        encoders_for("builtin/dlib-resnet-v1@2", BUILTIN_EX)


def test_a_model_conditioned_on_the_builtin_pack_loads_and_swaps_photos(tmp_path, faces):
    folder = tmp_path / "builtin-model"
    make_model(
        "tiny", seed=0, identity_dim=128, expression_dim=13, identity_encoder=BUILTIN_ID, expression_encoder=BUILTIN_EX
    ).save_pretrained(str(folder))
    gen = Generator.from_pretrained(str(folder))
    assert gen.encoders.identity_name == BUILTIN_ID
    out = gen.swap(faces[:1], faces[1:], seeds=[1], steps=2)
    size = gen.model.config.image_size
    assert out.shape == (1, size, size, 3) and out.dtype == np.uint8
    assert gen.info["warning"] is None  # no synthetic-model warning for a photo model


def test_a_table_that_does_not_fit_a_model_is_named_with_every_difference():
    from types import SimpleNamespace

    from sfsr.conditions import table_mismatch

    model = {"identity_encoder": BUILTIN_ID, "expression_encoder": BUILTIN_EX, "identity_dim": 128,
             "expression_dim": 13, "image_size": 64}  # fmt: skip
    same = SimpleNamespace(identity_model="dlib-resnet-v1@1", expression_model=BUILTIN_EX, identity_dim=128,
                           expression_dim=13, crop_size=256)  # fmt: skip
    assert table_mismatch(model, same) is None  # a bare builtin name is the builtin pack's encoder
    synth = SimpleNamespace(identity_model="synth-judge-identity-32px", expression_model="synth-judge-factors-32px",
                            identity_dim=64, expression_dim=7, crop_size=32)  # fmt: skip
    why = table_mismatch(model, synth)
    assert "identity vectors come from synth-judge-identity-32px" in why and "7 values" in why
    assert "crops are 32 px, smaller than the model's 64 px" in why
    framed = SimpleNamespace(**{**vars(same), "framing": "synth-render"})
    assert "framed synth-render" in table_mismatch({**model, "framing": "arcface-112[0,1,2,3,4]/align128"}, framed)
