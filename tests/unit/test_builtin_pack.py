"""The builtin pack on real photos: identity ordering, frontal pose, expression direction, and
the FER port against reference outputs. Photos come from PyPI packages (tests/fixtures/photos.py).

Run with -s to see the measured numbers (cosines, angles, probabilities, milliseconds).
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from sfsr.faces import builtin_fer
from sfsr.faces.align import template, transform_points
from sfsr.faces.analyze import FaceRecord, analyze_image, encode_crops, face_mask
from sfsr.faces.pack import FacePack, open_pack, verify
from tests.fixtures import photos

SINGLES = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "astronaut.png")
FRONTAL = ("obama.jpg", "astronaut.png")  # looking at the camera (checked by eye)
# (smiling, neutral): the same person, and two different people
SMILE_PAIRS = (("obama.jpg", "obama3.jpg"), ("astronaut.png", "biden.jpg"))


@pytest.fixture(scope="module")
def pack() -> FacePack:
    return open_pack("builtin")


@pytest.fixture(scope="module")
def faces(pack) -> dict[str, tuple[FaceRecord, np.ndarray, np.ndarray, float]]:
    """name -> (record, identity, expression, ms for analyse + encode of that face)."""
    out = {}
    for name in SINGLES:
        img = photos.load(name)
        t0 = time.perf_counter()
        recs = analyze_image(pack, img)
        ident, expr = encode_crops(pack, [r.crop for r in recs])
        ms = (time.perf_counter() - t0) * 1000
        assert len(recs) == 1, f"{name}: expected one face, found {len(recs)}"
        out[name] = (recs[0], ident[0], expr[0], ms)
    return out


def test_builtin_files_verify():
    m = verify("builtin")
    assert {f.role for f in m.files} == {"landmarks68", "landmarks5", "identity", "expression"}
    assert "NON-COMMERCIAL" in m.licence


def test_identity_same_person_beats_every_different_person(faces):
    same, diff = [], []
    for a, b in itertools.combinations(SINGLES, 2):
        cos = float(faces[a][1] @ faces[b][1])
        (same if photos.PEOPLE[a] == photos.PEOPLE[b] else diff).append((cos, a, b))
        print(f"identity cosine {a:>13} {b:>13}: {cos:.3f}")
    assert len(same) == 3 and len(diff) == 7
    assert min(same)[0] > max(diff)[0], f"worst same-person {min(same)} vs best different-person {max(diff)}"
    for name in SINGLES:
        assert np.linalg.norm(faces[name][1]) == pytest.approx(1.0, abs=1e-5)


def test_frontal_faces_have_small_yaw(faces):
    for name in SINGLES:
        p = faces[name][0].pose
        print(f"pose {name:>13}: yaw {p.yaw:6.1f} pitch {p.pitch:6.1f} roll {p.roll:6.1f}")
    for name in FRONTAL:
        assert abs(faces[name][0].pose.yaw) < 15
    assert faces["obama2.jpg"][0].pose.yaw < -20  # turned to the image's left (by eye)


def test_mirrored_photo_negates_yaw(pack, faces):
    rec = analyze_image(pack, np.ascontiguousarray(photos.load("obama2.jpg")[:, ::-1]))[0]
    assert rec.pose.yaw == pytest.approx(-faces["obama2.jpg"][0].pose.yaw, abs=4.0)


def test_smiling_face_reads_happier_than_neutral(pack, faces):
    comps = pack.expression.output.components
    happy, lift = comps.index("happy"), comps.index("mouth_corner_lift")
    for smiling, neutral in SMILE_PAIRS:
        s, n = faces[smiling][2], faces[neutral][2]
        print(
            f"expression {smiling} vs {neutral}: happy {s[happy]:.2f} vs {n[happy]:.2f}, "
            f"corner lift {s[lift]:.3f} vs {n[lift]:.3f}"
        )
        assert s[happy] > 0.9 and n[happy] < 0.3
        assert s[lift] > n[lift] + 0.05


def test_expression_vector_layout(pack, faces):
    spec = pack.expression.output
    assert spec.dim == 13 and len(spec.components) == 13 and spec.components[:7] == builtin_fer.LABELS
    for name in SINGLES:
        e = faces[name][2]
        assert e.shape == (13,) and e.dtype == np.float32
        assert e[:7].sum() == pytest.approx(1.0, abs=1e-4) and (e[:7] >= 0).all()


def test_landmarks_align_to_template_and_mask_covers_face(faces):
    for name in SINGLES:
        rec = faces[name][0]
        x1, y1, x2, y2 = rec.bbox
        assert ((rec.landmarks5 >= [x1, y1]) & (rec.landmarks5 <= [x2, y2])).all()
        s = rec.crop.shape[0]
        resid = np.linalg.norm(transform_points(rec.landmarks5, rec.align_matrix) - template(s), axis=1)
        assert resid.max() < 0.08 * s, f"{name}: five points {resid.max():.1f} px off the template"
        tpl = template(s).round().astype(int)
        assert rec.mask[tpl[:, 1], tpl[:, 0]].all()  # eyes, nose and mouth are inside the mask
        assert not rec.mask[[0, 0, -1], [0, -1, 0]].any()  # crop corners are background
        assert 0.3 < rec.mask.mean() < 0.75


def test_template_ellipse_mask_without_dense_landmarks():
    m = face_mask(None, 256)
    tpl = template(256).round().astype(int)
    assert m[tpl[:, 1], tpl[:, 0]].all() and not m[0, 0] and 0.3 < m.mean() < 0.75


def test_multi_face_composite_finds_both_people(pack, faces):
    img = photos.composite_side_by_side("obama.jpg", "biden.jpg")
    recs = analyze_image(pack, img)
    assert len(recs) == 2
    ident, _ = encode_crops(pack, [r.crop for r in recs])
    left, right = np.argsort([r.bbox[0] for r in recs])
    assert float(ident[left] @ faces["obama.jpg"][1]) > 0.9
    assert float(ident[right] @ faces["biden.jpg"][1]) > 0.9
    assert [r.face_index for r in recs] == [0, 1] and recs[0].score >= recs[1].score


def test_rgba_png_through_the_decoder_matches_the_jpeg(pack, faces):
    from sfsr.io.images import decode_image

    png = (photos.photos_dir() / "32bit.png").read_bytes()  # the obama2 photo as 32-bit RGBA
    recs = analyze_image(pack, decode_image(png, source="32bit.png"))
    assert len(recs) == 1
    ident, _ = encode_crops(pack, [recs[0].crop])
    assert float(ident[0] @ faces["obama2.jpg"][1]) > 0.95


def test_no_face_image_gives_no_records(pack):
    assert analyze_image(pack, photos.composite_no_face()) == []


def test_encoding_is_batch_and_size_independent(pack, faces):
    crops = np.stack([faces[n][0].crop for n in SINGLES[:3]])
    ident, expr = encode_crops(pack, crops)
    for i, name in enumerate(SINGLES[:3]):
        np.testing.assert_allclose(ident[i], faces[name][1], atol=1e-5)
        np.testing.assert_allclose(expr[i], faces[name][2], atol=1e-5)
    small = np.stack([faces[n][0].crop[::2, ::2] for n in SINGLES[:3]])  # 128 px crops get resized
    ident_s, _ = encode_crops(pack, small)
    assert (np.sum(ident_s * ident, axis=1) > 0.95).all()
    i0, e0 = encode_crops(pack, [])
    assert i0.shape == (0, 128) and e0.shape == (0, 13)


def test_bad_inputs_are_refused_with_the_shape(pack):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        analyze_image(pack, np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="square crops"):
        encode_crops(pack, np.zeros((1, 64, 32, 3), np.uint8))


# Outputs of fer's emotion_model_quantized.tflite (run with ai-edge-litert 2.3.0) on the blocky
# random images below; the quantised weights explain differences up to ~0.02.
LITERT_REFERENCE = np.array(
    [
        [0.0196, 0.0000, 0.3045, 0.2865, 0.3800, 0.0024, 0.0069],
        [0.0817, 0.0000, 0.0188, 0.6154, 0.2635, 0.0015, 0.0191],
        [0.0712, 0.0000, 0.0062, 0.3984, 0.5161, 0.0006, 0.0074],
        [0.0109, 0.0000, 0.0488, 0.4720, 0.4596, 0.0007, 0.0081],
    ]
)


def test_fer_port_matches_reference_outputs(pack):
    x = np.random.default_rng(1234).integers(0, 256, (4, 64, 64), dtype=np.uint8)
    x = np.repeat(np.repeat(x[:, ::4, ::4], 4, 1), 4, 2)  # (4, 64, 64) 4x4 blocks
    import torch

    with torch.inference_mode():
        probs = pack.expression.net(builtin_fer.preprocess(x)).numpy()
    print(f"FER port vs LiteRT reference: max |diff| {np.abs(probs - LITERT_REFERENCE).max():.4f}")
    np.testing.assert_allclose(probs, LITERT_REFERENCE, atol=0.03)


def test_per_face_timing_is_reported(faces):
    ms = {n: faces[n][3] for n in SINGLES}
    print(
        "per-face analyse+encode ms (first call includes warm-up): " + ", ".join(f"{n} {v:.0f}" for n, v in ms.items())
    )
    assert all(v > 0 for v in ms.values())
