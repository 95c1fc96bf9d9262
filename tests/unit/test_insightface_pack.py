"""The insightface production path (sfsr.faces.insightface_*), driven through ONNX stand-ins.

tests/fixtures/onnx_standins.py writes small models with the real buffalo_l / antelopev2
signatures and documented arithmetic; these tests check that insightface itself treats them as
the real files, that packs of them verify and fail verification the way users will see, and
that the loader's detection, alignment, identity, pose and expression give the answers the
stand-ins' arithmetic implies - and the same answers as insightface's own model_zoo classes.
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from insightface.app.common import Face
from insightface.model_zoo import model_zoo

from sfsr.faces import insightface_pack as ifp
from sfsr.faces import pack
from sfsr.faces.align import template
from sfsr.faces.insightface_encoders import expression_geometry, mean_shape_68, pose_from_landmarks
from sfsr.faces.insightface_runtime import OnnxNet, graph_normalisation, select_providers
from sfsr.faces.insightface_scrfd import ScrfdDetector
from sfsr.io.images import resize_square_batch
from tests.fixtures import onnx_standins as standins

pytestmark = pytest.mark.filterwarnings("ignore::sfsr.faces.insightface_pack.UnpublishedWeightsWarning")

CPU = ["CPUExecutionProvider"]
CUDA = "CUDAExecutionProvider"


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("buffalo_l")
    standins.build_pack(folder, "buffalo_l")
    pack.init_manifest(folder, "buffalo_l")
    return folder


@pytest.fixture(scope="module")
def face_pack(pack_dir):
    return pack.open_pack(str(pack_dir), providers=CPU)


def scene() -> tuple[np.ndarray, dict[int, tuple[float, float]]]:
    """A 640 x 480 image (no letterbox scaling) with faces of side 32, 64, 128 on their strides'
    anchor grids; returns the image and side -> centre."""
    img = np.full((480, 640, 3), 20, np.uint8)
    centres = {32: (128.0, 128.0), 64: (320.0, 240.0), 128: (480.0, 320.0)}
    standins.draw_face(img, centres[32], 32)
    standins.draw_face(img, centres[64], 64, texture_seed=1)
    standins.draw_face(img, centres[128], 128, texture_seed=2)
    return img, centres


def by_size(dets) -> dict[int, object]:
    return {int(round(d.bbox[2] - d.bbox[0])): d for d in dets}


# ---- the stand-ins are the real files' doubles --------------------------------------------------


def test_standins_are_routed_by_insightface_like_the_real_files(pack_dir):
    # (class, taskname, input_mean, input_std): what insightface reports for the real buffalo_l files
    expected = {
        "det_10g.onnx": ("SCRFD", "detection", 127.5, 128.0),
        "w600k_r50.onnx": ("ArcFaceONNX", "recognition", 127.5, 127.5),
        "1k3d68.onnx": ("Landmark", "landmark_3d_68", 0.0, 1.0),
        "2d106det.onnx": ("Landmark", "landmark_2d_106", 0.0, 1.0),
        "genderage.onnx": ("Attribute", "genderage", 0.0, 1.0),
    }
    for fname, (cls, task, mean, std) in expected.items():
        model = model_zoo.get_model(str(pack_dir / fname), providers=CPU)
        assert (type(model).__name__, model.taskname, model.input_mean, model.input_std) == (cls, task, mean, std), (
            fname
        )
    sess = ort.InferenceSession(str(pack_dir / "det_10g.onnx"), providers=CPU)
    assert [i.name for i in sess.get_inputs()] == ["input.1"]
    assert sess.get_inputs()[0].shape == [1, 3, "?", "?"]
    assert [o.name for o in sess.get_outputs()] == ["448", "471", "494", "451", "474", "497", "454", "477", "500"]
    sess = ort.InferenceSession(str(pack_dir / "w600k_r50.onnx"), providers=CPU)
    assert (sess.get_inputs()[0].name, sess.get_inputs()[0].shape) == ("input.1", ["None", 3, 112, 112])
    assert (sess.get_outputs()[0].name, sess.get_outputs()[0].shape) == ("683", ["None", 512])


def test_standin_files_are_small_and_deterministic(tmp_path):
    a = standins.build_pack(tmp_path / "a", with_expression=True)
    b = standins.build_pack(tmp_path / "b", with_expression=True)
    for name, path in a.items():
        assert path.stat().st_size < 1_000_000, name
        assert filecmp.cmp(path, b[name], shallow=False), name


# ---- manifest, verification ---------------------------------------------------------------------


def test_init_manifest_uses_the_layout_and_verify_passes(pack_dir):
    manifest = pack.verify(str(pack_dir))
    doc = json.loads((Path(ifp.__file__).parent / "manifests" / "buffalo_l.json").read_text())
    assert {f.name: f.role for f in manifest.files} == doc["files"]
    assert manifest.kind == "insightface" and manifest.version == "buffalo_l"
    assert manifest.licence == "non-commercial research only (insightface model zoo)"
    assert manifest.input_size["identity"] == 112 and manifest.input_size["landmarks_3d68"] == 192
    assert manifest.normalisation["identity"].std == (127.5,) * 3
    assert manifest.normalisation["landmarks_3d68"].mean == (0.0,) * 3
    assert all(f.sha256 == pack.sha256_file(pack_dir / f.name) for f in manifest.files)


def test_both_layouts_are_registered_from_their_json():
    for name in ifp.LAYOUT_NAMES:
        doc = ifp.layout_document(name)
        layout = pack.get_layout(name)
        assert dict(layout.files) == doc["files"]
        assert layout.licence == doc["licence"] and layout.kind == "insightface"
        assert set(doc["published_sha256"]) <= set(doc["files"])


def test_one_changed_byte_fails_verification_naming_file_and_checksum(pack_dir, tmp_path):
    folder = tmp_path / "pack"
    shutil.copytree(pack_dir, folder)
    expected = pack.verify(str(folder)).file("identity").sha256
    target = folder / "w600k_r50.onnx"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(pack.PackError) as err:
        pack.verify(str(folder))
    assert err.value.file == "w600k_r50.onnx" and err.value.expected == expected
    assert "w600k_r50.onnx" in str(err.value) and expected in str(err.value)
    with pytest.raises(pack.PackError, match="w600k_r50.onnx"):
        pack.open_pack(str(folder), providers=CPU)


def test_missing_file_is_an_error_naming_it(pack_dir, tmp_path):
    folder = tmp_path / "pack"
    shutil.copytree(pack_dir, folder)
    (folder / "1k3d68.onnx").unlink()
    with pytest.raises(pack.PackError) as err:
        pack.open_pack(str(folder), providers=CPU)
    assert err.value.file == "1k3d68.onnx" and err.value.actual == "missing"
    assert "1k3d68.onnx" in str(err.value) and "missing" in str(err.value)


def test_files_that_differ_from_the_published_release_warn(pack_dir):
    with pytest.warns(ifp.UnpublishedWeightsWarning, match="det_10g.onnx"):
        pack.open_pack(str(pack_dir), providers=CPU)
    manifest = pack.verify(str(pack_dir))
    published = ifp.layout_document("buffalo_l")["published_sha256"]
    names = [n for n, _, _ in ifp.published_mismatches(manifest)]
    assert sorted(names) == sorted(published)  # every stand-in differs from the real file
    real_det = dataclasses.replace(manifest.file("detector"), sha256=published["det_10g.onnx"])
    patched = dataclasses.replace(
        manifest, files=tuple(real_det if f.role == "detector" else f for f in manifest.files)
    )
    assert "det_10g.onnx" not in [n for n, _, _ in ifp.published_mismatches(patched)]


# ---- detection and alignment --------------------------------------------------------------------


def test_detections_land_where_the_matched_filter_says(face_pack):
    img, centres = scene()
    dets = face_pack.detector.detect(img)
    assert len(dets) == 3
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    found = by_size(dets)
    for side, (cx, cy) in centres.items():
        d = found[side]
        np.testing.assert_allclose(d.bbox, [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2], atol=1e-3)
        # keypoints: the ArcFace template scaled into the box (the stand-in's fixed offsets)
        np.testing.assert_allclose(d.landmarks5, template(side) + [cx - side / 2, cy - side / 2], atol=1e-3)
        assert d.score > 0.9


def test_letterboxed_image_maps_boxes_back_to_source_pixels(face_pack):
    # 1280 x 960 is shrunk by 0.5 into 640 x 480 + padding: a 128 px face is the 64 px stride-16 filter's
    img = np.full((960, 1280, 3), 20, np.uint8)
    standins.draw_face(img, (640.0, 480.0), 128)
    dets = face_pack.detector.detect(img)
    assert len(dets) == 1
    np.testing.assert_allclose(dets[0].bbox, [576, 416, 704, 544], atol=1e-3)
    assert face_pack.detector.detect(np.full((960, 1280, 3), 20, np.uint8)) == []


def test_detector_agrees_with_insightface_scrfd(pack_dir, face_pack):
    img = np.full((960, 1280, 3), 20, np.uint8)
    standins.draw_face(img, (640.0, 480.0), 128, texture_seed=4)
    standins.draw_face(img, (192.0, 256.0), 64)
    reference = model_zoo.get_model(str(pack_dir / "det_10g.onnx"), providers=CPU)
    reference.prepare(-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)
    ref_boxes, ref_kps = reference.detect(np.ascontiguousarray(img[:, :, ::-1]))  # insightface reads BGR
    dets = face_pack.detector.detect(img)
    assert len(dets) == len(ref_boxes) == 2
    np.testing.assert_allclose(np.stack([d.bbox for d in dets]), ref_boxes[:, :4], atol=1e-3)
    np.testing.assert_allclose([d.score for d in dets], ref_boxes[:, 4], atol=1e-5)
    np.testing.assert_allclose(np.stack([d.landmarks5 for d in dets]), ref_kps, atol=1e-3)


def test_aligned_crops_have_the_requested_size_and_reproduce_the_face(face_pack):
    img, centres = scene()
    det = by_size(face_pack.detector.detect(img))[64]
    crop, matrix = face_pack.align(img, det)
    assert crop.shape == (face_pack.crop_size,) * 2 + (3,) == (256, 256, 3)
    crop112, _ = face_pack.align(img, det, 112)
    assert crop112.shape == (112, 112, 3) and crop112.dtype == np.uint8
    # the face square fills the crop: the template maps the box onto the whole crop
    cx, cy = centres[64]
    corners = np.array([[cx - 32, cy - 32], [cx + 32, cy + 32]], np.float32)
    mapped = corners @ matrix[:, :2].T + matrix[:, 2]
    np.testing.assert_allclose(mapped, [[0, 0], [256, 256]], atol=0.5)


def test_detector_rejects_a_model_without_keypoints(pack_dir, tmp_path):
    model = onnx.load(str(pack_dir / "det_10g.onnx"))
    for _ in range(3):
        model.graph.output.pop()  # drop the three keypoint outputs: a 6-output SCRFD
    onnx.save(model, str(tmp_path / "scrfd_nokps.onnx"))
    net = OnnxNet(tmp_path / "scrfd_nokps.onnx", CPU, ifp.DETECTOR_NORMALISATION, "detector")
    with pytest.raises(ValueError, match="keypoints"):
        ScrfdDetector(net)


def test_detector_input_is_validated(face_pack):
    with pytest.raises(ValueError, match="RGB uint8"):
        face_pack.detector.detect(np.zeros((480, 640), np.uint8))


def test_without_manifest_normalisation_insightface_graph_rule_applies(pack_dir, tmp_path):
    assert graph_normalisation(pack_dir / "w600k_r50.onnx", "identity") == pack.Normalisation(
        (127.5,) * 3, (127.5,) * 3
    )
    assert graph_normalisation(pack_dir / "1k3d68.onnx", "landmarks_3d68") == pack.Normalisation((0.0,) * 3, (1.0,) * 3)
    model = onnx.load(str(pack_dir / "w600k_r50.onnx"))
    model.graph.node[1].name, model.graph.node[3].name = "_minusscalar0", "_mulscalar0"  # an MXNet export
    onnx.save(model, str(tmp_path / "mx.onnx"))
    assert graph_normalisation(tmp_path / "mx.onnx", "identity") == pack.Normalisation((0.0,) * 3, (1.0,) * 3)
    folder = tmp_path / "pack"
    shutil.copytree(pack_dir, folder)
    manifest = pack.verify(str(folder))
    bare = dataclasses.replace(manifest, normalisation={})
    (folder / pack.MANIFEST_NAME).write_text(bare.to_json())
    fp = pack.open_pack(str(folder), providers=CPU)
    assert float(fp.identity.net.std[0, 0, 0, 0]) == 127.5 and float(fp.detector.net.std[0, 0, 0, 0]) == 128.0
    assert float(fp.pose.landmarks.net.std[0, 0, 0, 0]) == 1.0


# ---- identity -----------------------------------------------------------------------------------


def test_identity_vectors_are_unit_norm_and_equal_for_equal_crops(face_pack):
    img = np.full((480, 640, 3), 20, np.uint8)
    for cx, seed in ((128.0, 7), (320.0, 7), (512.0, 8)):  # two copies of one face, one other face
        standins.draw_face(img, (cx, 240.0), 64, texture_seed=seed)
    dets = sorted(face_pack.detector.detect(img), key=lambda d: d.bbox[0])
    assert len(dets) == 3
    crops = np.stack([face_pack.align(img, d, 112)[0] for d in dets])
    emb = face_pack.identity(crops)
    assert emb.shape == (3, 512) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(crops[0], crops[1])
    np.testing.assert_allclose(emb[0], emb[1], atol=1e-6)
    assert emb[0] @ emb[2] < 0.95  # a different texture is a different direction
    # batch size does not change a vector
    np.testing.assert_allclose(face_pack.identity(crops[2:3])[0], emb[2], atol=1e-5)
    # a 256 px table crop is resized to the recogniser's 112 and gives (nearly) the same vector
    big = face_pack.align(img, dets[2], 256)[0]
    assert face_pack.identity(big[None])[0] @ emb[2] > 0.99


def test_identity_matches_insightface_arcface(pack_dir, face_pack):
    img, _ = scene()
    det = by_size(face_pack.detector.detect(img))[128]
    crop = face_pack.align(img, det, 112)[0]
    reference = model_zoo.get_model(str(pack_dir / "w600k_r50.onnx"), providers=CPU)
    ref = reference.get_feat(np.ascontiguousarray(crop[:, :, ::-1]))[0]  # insightface reads BGR
    np.testing.assert_allclose(face_pack.identity(crop[None])[0], ref / np.linalg.norm(ref), atol=1e-5)


def test_identity_encoder_rejects_bad_crops(face_pack):
    with pytest.raises(ValueError, match=r"\(B, S, S, 3\) uint8"):
        face_pack.identity(np.zeros((2, 112, 112, 3), np.float32))
    assert face_pack.identity.input_size == 112 and face_pack.identity.output.dim == 512


# ---- pose and expression ------------------------------------------------------------------------


def test_pose_matches_insightface_landmark(pack_dir, face_pack):
    img = np.full((480, 640, 3), 20, np.uint8)
    standins.draw_face(img, (320.0, 240.0), 128, asymmetry=0.2, mouth_open=0.6)
    det = face_pack.detector.detect(img)[0]
    reference = model_zoo.get_model(str(pack_dir / "1k3d68.onnx"), providers=CPU)
    face = Face(bbox=det.bbox.copy())
    ref_points = reference.get(np.ascontiguousarray(img[:, :, ::-1]), face)
    pitch, yaw, roll = face["pose"]
    pose = face_pack.pose.estimate(img, det)
    np.testing.assert_allclose([pose.yaw, pose.pitch, pose.roll], [yaw, pitch, roll], atol=1e-3)
    np.testing.assert_allclose(face_pack.pose.landmarks68(img, det), ref_points, atol=1e-2)


def test_pose_follows_the_standin_turn(face_pack):
    poses = []
    for asym in (0.0, 0.1, 0.2):
        img = np.full((480, 640, 3), 20, np.uint8)
        standins.draw_face(img, (320.0, 240.0), 128, asymmetry=asym)
        poses.append(face_pack.pose.estimate(img, face_pack.detector.detect(img)[0]))
    # stand-in: yaw = 1.2 rad x (right-half minus left-half mean luminance of the face region);
    # draw_face darkens the left half of a grey-230 face by `asym`. The 2 degree slack covers the
    # dark eyes and the half-pixel offset between box centre and crop centre.
    for asym, pose in zip((0.0, 0.1, 0.2), poses):
        expected = np.degrees(1.2 * asym * 230 / 255)
        assert abs(pose.yaw - expected) < 2.0, (asym, pose)
        assert abs(pose.pitch) < 1.0 and abs(pose.roll) < 1.0
    assert poses[0].yaw < poses[1].yaw < poses[2].yaw


def test_pose_from_landmarks_recovers_a_known_rotation_like_insightface():
    from insightface.utils import transform as reference  # slow import: tests only

    mean = mean_shape_68()
    pitch, yaw, roll = np.radians([10.0, -20.0, 5.0])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    ry = np.array([[np.cos(yaw), 0, np.sin(yaw)], [0, 1, 0], [-np.sin(yaw), 0, np.cos(yaw)]])
    rz = np.array([[np.cos(roll), -np.sin(roll), 0], [np.sin(roll), np.cos(roll), 0], [0, 0, 1]])
    points = 90.0 * mean @ (rz @ ry @ rx).T + [320.0, 240.0, 0.0]
    pose, _, scale, _ = pose_from_landmarks(points, mean)
    np.testing.assert_allclose([pose.pitch, pose.yaw, pose.roll], [10.0, -20.0, 5.0], atol=1e-6)
    assert abs(scale - 90.0) < 1e-6
    _, rot, _ = reference.P2sRt(reference.estimate_affine_matrix_3d23d(mean, points))
    np.testing.assert_allclose(reference.matrix2angle(rot), [pose.pitch, pose.yaw, pose.roll], atol=1e-9)


def test_expression_geometry_ignores_pose_and_scale():
    mean = mean_shape_68()
    base = expression_geometry(mean, mean)
    a = np.radians(25.0)
    rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])  # a head turn
    moved = 80.0 * mean @ rot.T + [300.0, 200.0, 5.0]
    np.testing.assert_allclose(expression_geometry(moved, mean), base, atol=1e-5)
    opened = mean.copy()
    opened[[65, 66, 67], 1] += 0.1
    geo = expression_geometry(opened, mean)
    assert geo[0] > base[0] + 0.05  # mouth_open
    np.testing.assert_allclose(geo[1:], base[1:], atol=0.02)  # a dropped jaw is not a smile, brow or blink
    smile = mean.copy()
    smile[[48, 54], 1] -= 0.05  # corners up
    smile[48, 0] -= 0.03
    smile[54, 0] += 0.03  # and apart
    geo = expression_geometry(smile, mean)
    assert geo[2] > base[2] + 0.05 and geo[1] > base[1] + 0.05  # corner lift, width
    raised = mean.copy()
    raised[17:27, 1] -= 0.05  # brows up (y points down)
    assert expression_geometry(raised, mean)[3] > base[3] + 0.05


def test_expression_encoder_reads_the_mouth_and_agrees_with_the_source_image_path(face_pack):
    enc = face_pack.expression
    assert enc.output.components[0] == "mouth_open" and enc.output.dim == 7
    img = np.full((480, 640, 3), 20, np.uint8)  # 640 wide: no letterbox scaling, centres on the 32 grid
    for cx, mouth in ((96.0, 0.0), (320.0, 0.5), (544.0, 1.0)):
        standins.draw_face(img, (cx, 256.0), 128, mouth_open=mouth)
    dets = sorted(face_pack.detector.detect(img), key=lambda d: d.bbox[0])
    assert len(dets) == 3
    crops = np.stack([face_pack.align(img, d)[0] for d in dets])  # 256 px table crops
    expr = enc(crops)
    assert expr.shape == (3, 7) and expr.dtype == np.float32
    assert expr[0, 0] < expr[1, 0] < expr[2, 0]  # mouth_open grows with the drawn mouth
    # the crop path frames the face the way the detection-box path does (stand-in: exactly)
    for det, row in zip(dets, expr):
        from_source = expression_geometry(face_pack.pose.landmarks68(img, det), face_pack.pose.landmarks.mean_shape)
        np.testing.assert_allclose(row, from_source, atol=0.005)
    np.testing.assert_allclose(enc(crops[1:2])[0], expr[1], atol=1e-5)


def test_user_expression_regressor_comes_first(tmp_path):
    folder = tmp_path / "pack"
    standins.build_pack(folder, "buffalo_l", with_expression=True)
    manifest = pack.init_manifest(folder, "buffalo_l")
    extra = pack.PackFile(
        standins.EXPRESSION_FILE,
        pack.sha256_file(folder / standins.EXPRESSION_FILE),
        "expression",
        "test stand-in",
        (folder / standins.EXPRESSION_FILE).stat().st_size,
    )
    manifest = dataclasses.replace(manifest, files=manifest.files + (extra,))
    (folder / pack.MANIFEST_NAME).write_text(manifest.to_json())
    with pytest.raises(pack.PackError, match="no normalisation for role 'expression'"):
        pack.open_pack(str(folder), providers=CPU)  # a user model's normalisation cannot be guessed
    manifest = dataclasses.replace(
        manifest, normalisation={**manifest.normalisation, "expression": pack.Normalisation((127.5,) * 3, (127.5,) * 3)}
    )
    (folder / pack.MANIFEST_NAME).write_text(manifest.to_json())
    fp = pack.open_pack(str(folder), providers=CPU)
    enc = fp.expression
    assert enc.output.dim == 4 + 7 and enc.output.components[4] == "mouth_open"
    assert enc.input_size == standins.EXPRESSION_SIZE
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)  # 3 crops, a batch-1 model
    out = enc(crops)
    small = resize_square_batch(crops, standins.EXPRESSION_SIZE).astype(np.float64)
    lum = ((small - 127.5) / 127.5).mean(-1)  # (3, 64, 64)
    h = standins.EXPRESSION_SIZE // 2
    quads = np.stack(
        [
            lum[:, :h, :h].mean((1, 2)),
            lum[:, :h, h:].mean((1, 2)),
            lum[:, h:, :h].mean((1, 2)),
            lum[:, h:, h:].mean((1, 2)),
        ],
        1,
    )
    np.testing.assert_allclose(out[:, :4], quads, atol=1e-5)
    assert "+" in enc.name and enc.version.count("+") == 1


# ---- providers ----------------------------------------------------------------------------------


def test_provider_selection_prefers_cuda_when_available():
    assert select_providers(None, [CUDA, "CPUExecutionProvider"]) == [CUDA, "CPUExecutionProvider"]
    assert select_providers(None, ["TensorrtExecutionProvider", CUDA, "CPUExecutionProvider"]) == [
        CUDA,
        "CPUExecutionProvider",
    ]
    assert select_providers(None, ["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert select_providers(["CPUExecutionProvider"], [CUDA, "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.warns(RuntimeWarning, match="TensorrtExecutionProvider"):
        chosen = select_providers(["TensorrtExecutionProvider", CUDA], [CUDA, "CPUExecutionProvider"])
    assert chosen == [CUDA, "CPUExecutionProvider"]
    with pytest.raises(ValueError, match="onnxruntime-gpu"):
        select_providers([CUDA], ["CPUExecutionProvider"])


def test_loader_opens_every_session_with_the_selected_providers(pack_dir, monkeypatch):
    seen = []
    real_session = ort.InferenceSession

    def recording_session(path, sess_options=None, providers=None, **kw):
        seen.append(list(providers))
        return real_session(path, sess_options=sess_options, providers=CPU)  # no CUDA on this machine

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", recording_session)
    pack.open_pack(str(pack_dir))
    assert len(seen) == 3 and all(p == [CUDA, "CPUExecutionProvider"] for p in seen)
    seen.clear()
    fp = pack.open_pack(str(pack_dir), providers=CPU)
    assert all(p == CPU for p in seen)
    assert fp.identity.net.providers == ("CPUExecutionProvider",)


# ---- antelopev2 ---------------------------------------------------------------------------------


def test_antelopev2_standins_load_and_detect(tmp_path):
    standins.build_pack(tmp_path, "antelopev2")
    manifest = pack.init_manifest(tmp_path, "antelopev2")
    assert manifest.file("identity").name == "glintr100.onnx"
    fp = pack.open_pack(str(tmp_path), providers=CPU)
    img, centres = scene()
    dets = by_size(fp.detector.detect(img))
    assert sorted(dets) == [32, 64, 128]
    emb = fp.identity(np.stack([fp.align(img, dets[64], 112)[0]]))
    assert fp.identity.name == "insightface/glintr100" and abs(np.linalg.norm(emb) - 1) < 1e-5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the pose path emits no numpy / insightface warnings
        fp.pose.estimate(img, dets[64])
