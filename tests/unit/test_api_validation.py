"""Request validation, paste-back and settings of the Serve app, without Ray or HTTP.

deployments/validation.py turns raw fields into typed requests or ApiErrors; these tests pin the
status code, error code and named field of every refusal the issue lists (types, bytes, pixels,
faces, words, missing fields), and that nothing else escapes for the foundation issue's bad
images. sfsr/faces/compose.py is checked geometrically: pasting an unchanged crop back changes
nothing visible, and nothing outside the face mask changes at all.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from deployments import validation as v
from deployments.settings import (
    AnalysisSettings,
    GeneratorSettings,
    IngressSettings,
    SceneSettings,
    from_dict,
    open_api_refusal,
)
from sfsr.faces import compose
from sfsr.faces.analyze import downscale_face
from sfsr.io.images import ImageLimits
from tests.fixtures.bad_images import bad_image_bytes

LIMITS = v.Limits(image=ImageLimits(max_bytes=2_000_000, max_pixels=4_000_000, min_side=32), expression_dim=7)


def png(h: int = 64, w: int = 64, seed: int = 0, flat: bool = False) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.full((h, w, 3), seed % 256, np.uint8) if flat else rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def refused(fn, *args) -> v.ApiError:
    with pytest.raises(v.ApiError) as info:
        fn(*args)
    return info.value


# --- bodies -----------------------------------------------------------------------------------


def test_content_types() -> None:
    assert v.check_content_type("application/json; charset=utf-8") == "json"
    assert v.check_content_type("multipart/form-data; boundary=xyz") == "multipart"
    for bad in (None, "text/plain", "application/x-www-form-urlencoded", "image/png"):
        assert refused(v.check_content_type, bad).status == 415


def test_content_length_is_checked_before_reading() -> None:
    v.check_content_length(None, 100)
    v.check_content_length("100", 100)
    err = refused(v.check_content_length, str(50 * 2**20), 32 * 2**20)
    assert err.status == 413 and "52428800" in err.message
    assert refused(v.check_content_length, "lots", 100).status == 400


def test_json_bodies() -> None:
    assert v.json_fields(b'{"steps": 3}') == {"steps": 3}
    assert refused(v.json_fields, b"{not json").status == 400
    assert refused(v.json_fields, b"[1, 2]").status == 422
    assert refused(v.json_fields, b"\xff\xfe").status == 400


def test_multipart_duplicates_are_refused() -> None:
    assert v.multipart_fields([("a", b"1"), ("b", "2")]) == {"a": b"1", "b": "2"}
    assert refused(v.multipart_fields, [("identity", b"1"), ("identity", b"2")]).field == "identity"


# --- fields -----------------------------------------------------------------------------------


def test_swap_parses_both_encodings_to_the_same_request() -> None:
    a, b = png(seed=1), png(seed=2)
    multipart = v.parse_swap({"identity": a, "target": b, "steps": "7", "target_face_index": "1"}, LIMITS)
    as_json = v.parse_swap(
        {
            "identity": base64.b64encode(a).decode(),
            "target": "data:image/png;base64," + base64.b64encode(b).decode(),
            "steps": 7,
            "target_face_index": 1,
        },
        LIMITS,
    )
    for r in (multipart, as_json):
        assert r.params.steps == 7 and r.params.seed is None
        assert r.params.guidance_identity == LIMITS.default_guidance_identity
        assert r.target.face_index == 1 and r.identity.face_index is None
    assert np.array_equal(multipart.identity.image, as_json.identity.image)
    assert np.array_equal(multipart.target.image, as_json.target.image)


def test_missing_images_are_named_before_anything_is_decoded() -> None:
    err = refused(v.parse_swap, {"target": b"garbage that would fail to decode"}, LIMITS)
    assert (err.status, err.code, err.field) == (422, "missing_field", "identity")
    assert refused(v.parse_reenact, {"expression": "joy"}, LIMITS).field == "source"
    assert refused(v.parse_generate, {}, LIMITS).field == "identity"


def test_unknown_fields_are_refused() -> None:
    err = refused(v.parse_swap, {"identity": png(), "target": png(), "gudiance_identity": "3"}, LIMITS)
    assert (err.status, err.code, err.field) == (422, "unknown_field", "gudiance_identity")


@pytest.mark.parametrize(
    "name,value,code",
    [
        ("steps", "0", "out_of_range"),
        ("steps", 101, "out_of_range"),
        ("steps", "2.5", "invalid_field"),
        ("steps", True, "invalid_field"),
        ("guidance_identity", "nan", "invalid_field"),
        ("guidance_expression", "inf", "invalid_field"),
        ("guidance_identity", -1, "out_of_range"),
        ("guidance_expression", 15.5, "out_of_range"),
        ("seed", -1, "out_of_range"),
        ("seed", 2**31, "out_of_range"),
        ("identity_face_index", "first", "invalid_field"),
        ("identity_aligned", "maybe", "invalid_field"),
    ],
)
def test_bad_numbers(name: str, value, code: str) -> None:
    err = refused(v.parse_swap, {"identity": png(), "target": png(), name: value}, LIMITS)
    assert (err.status, err.code, err.field) == (422, code, name)


def test_integers_written_without_a_fraction_are_integers() -> None:
    """JSON Schema's "integer" includes 80.0; the OpenAPI document says integer, so we take it."""
    for raw, steps in ((80.0, 80), ("3.0", 3), ("1e1", 10), (" 7 ", 7)):
        assert v.parse_swap({"identity": png(), "target": png(), "steps": raw}, LIMITS).params.steps == steps
    for raw, code in (("1e400", "invalid_field"), (1e308, "out_of_range"), ("2.5", "invalid_field")):
        assert refused(v.parse_swap, {"identity": png(), "target": png(), "seed": raw}, LIMITS).code == code


def test_bad_image_list_gives_4xx_with_the_reason() -> None:
    for name, (data, expected) in bad_image_bytes().items():
        fields = {"identity": data, "target": png()}
        if expected.reason is None or expected.reason == "empty":
            if expected.reason == "empty":  # an empty part means the field is missing
                assert refused(v.parse_swap, fields, LIMITS).code == "missing_field", name
            else:
                assert v.parse_swap(fields, LIMITS).identity.image.shape == expected.shape, name
            continue
        err = refused(v.parse_swap, fields, LIMITS)
        assert 400 <= err.status < 500 and err.code == f"image_{expected.reason}" and err.field == "identity", name
        assert {"not_an_image": 415, "unsupported_format": 415}.get(expected.reason, 422) == err.status, name


def test_text_file_and_oversized_images() -> None:
    err = refused(v.parse_swap, {"identity": b"hello, this is a text file\n" * 10, "target": png()}, LIMITS)
    assert (err.status, err.code) == (415, "image_not_an_image")
    big = png(800, 800) + b"\0" * 2_000_000  # over max_bytes
    assert refused(v.parse_swap, {"identity": png(), "target": big}, LIMITS).status == 413
    as_b64 = base64.b64encode(big).decode()  # refused from its length, before decoding
    assert refused(v.parse_swap, {"identity": png(), "target": as_b64}, LIMITS).code == "image_too_many_bytes"
    err = refused(v.parse_swap, {"identity": png(), "target": png(2100, 2000, flat=True)}, LIMITS)
    assert (err.status, err.code) == (422, "image_too_many_pixels")


def test_bad_base64_and_wrong_json_types() -> None:
    err = refused(v.parse_swap, {"identity": "not*base64!", "target": png()}, LIMITS)
    assert (err.status, err.code, err.field) == (422, "invalid_base64", "identity")
    assert refused(v.parse_swap, {"identity": 12, "target": png()}, LIMITS).code == "invalid_field"
    assert refused(v.parse_swap, {"identity": png(), "target": "data:image/png,abc"}, LIMITS).code == "invalid_base64"


def test_reenact_needs_exactly_one_of_driver_or_word() -> None:
    r = v.parse_reenact({"source": png(), "expression": "  Joy "}, LIMITS)
    assert r.expression == "joy" and r.driver is None
    r = v.parse_reenact({"source": png(), "driver": png(seed=3), "driver_aligned": "true"}, LIMITS)
    assert r.expression is None and r.driver.aligned
    assert refused(v.parse_reenact, {"source": png()}, LIMITS).code == "missing_field"
    both = refused(v.parse_reenact, {"source": png(), "driver": png(), "expression": "joy"}, LIMITS)
    assert both.code == "conflicting_fields"


def test_unknown_word_suggests_the_nearest() -> None:
    err = refused(v.parse_reenact, {"source": png(), "expression": "hapiness"}, LIMITS)
    assert (err.status, err.code, err.field) == (422, "unknown_expression", "expression")
    assert "happiness" in err.extra["suggestions"] and "happiness" in err.message


def test_generate_expression_sources() -> None:
    assert v.parse_generate({"identity": png(), "expression": "rage"}, LIMITS).expression == "rage"
    r = v.parse_generate({"identity": png(), "expression_vector": "0,0.1,0,0,0,0.5,0", "background": png()}, LIMITS)
    assert r.expression_vector == (0, 0.1, 0, 0, 0, 0.5, 0) and r.background is not None
    assert v.parse_generate({"identity": png(), "expression_vector": [0] * 7}, LIMITS).expression_vector == (0.0,) * 7
    assert v.parse_generate({"identity": png(), "expression_image": png()}, LIMITS).expression_image is not None
    err = refused(v.parse_generate, {"identity": png(), "expression_vector": [0] * 6}, LIMITS)
    assert (err.code, err.field) == ("vector_length", "expression_vector") and "7" in err.message
    err = refused(v.parse_generate, {"identity": png(), "expression_vector": [0, "x"]}, LIMITS)
    assert err.code == "invalid_field"
    assert refused(v.parse_generate, {"identity": png(), "expression_vector": [float("nan")] * 7}, LIMITS)
    none = v.Limits(image=LIMITS.image, expression_dim=None)
    err = refused(v.parse_generate, {"identity": png(), "expression_vector": [0] * 7}, none)
    assert err.code == "unsupported_field"
    assert refused(v.parse_generate, {"identity": png()}, LIMITS).code == "missing_field"
    err = refused(v.parse_generate, {"identity": png(), "expression": "joy", "expression_image": png()}, LIMITS)
    assert err.code == "conflicting_fields"


def test_expression_target_chooses_prototype_or_exemplar_of_a_word() -> None:
    r = v.parse_reenact({"source": png(), "expression": "joy"}, LIMITS)
    assert r.expression_target == v.ExpressionTarget("prototype", None)
    r = v.parse_reenact({"source": png(), "expression": "joy", "expression_target": "exemplar"}, LIMITS)
    assert r.expression_target == v.ExpressionTarget("exemplar", None)  # the seed picks one
    fields = {"identity": png(), "expression": "rage", "expression_target": "exemplar", "expression_exemplar": "2"}
    assert v.parse_generate(fields, LIMITS).expression_target == v.ExpressionTarget("exemplar", 2)
    as_json = {**fields, "expression_exemplar": 2}
    assert v.parse_generate(as_json, LIMITS).expression_target == v.ExpressionTarget("exemplar", 2)


@pytest.mark.parametrize(
    "route,fields,code,field",
    [
        # a driver photo, an expression image or a vector is its own target
        ("reenact", {"driver": "IMG", "expression_target": "exemplar"}, "conflicting_fields", "expression_target"),
        (
            "generate",
            {"expression_image": "IMG", "expression_target": "prototype"},
            "conflicting_fields",
            "expression_target",
        ),
        (
            "generate",
            {"expression_vector": [0] * 7, "expression_exemplar": 1},
            "conflicting_fields",
            "expression_exemplar",
        ),
        # an exemplar index only with expression_target=exemplar
        ("reenact", {"expression": "joy", "expression_exemplar": 0}, "missing_field", "expression_target"),
        (
            "generate",
            {"expression": "joy", "expression_target": "prototype", "expression_exemplar": 0},
            "missing_field",
            "expression_target",
        ),
        ("reenact", {"expression": "joy", "expression_target": "Exemplar"}, "invalid_field", "expression_target"),
        ("reenact", {"expression": "joy", "expression_target": ""}, "invalid_field", "expression_target"),
        ("generate", {"expression": "joy", "expression_target": None}, "invalid_field", "expression_target"),
        (
            "reenact",
            {"expression": "joy", "expression_target": "exemplar", "expression_exemplar": -1},
            "out_of_range",
            "expression_exemplar",
        ),
        (
            "reenact",
            {"expression": "joy", "expression_target": "exemplar", "expression_exemplar": "1.5"},
            "invalid_field",
            "expression_exemplar",
        ),
    ],
)
def test_expression_target_refusals_name_the_field(route: str, fields: dict, code: str, field: str) -> None:
    first = {"reenact": "source", "generate": "identity"}[route]
    body = {first: png(), **{k: png(seed=5) if val == "IMG" else val for k, val in fields.items()}}
    err = refused(v.parse_reenact if route == "reenact" else v.parse_generate, body, LIMITS)
    assert (err.status, err.code, err.field) == (422, code, field), err.message


@dataclass
class FakeFace:  # only what choose_face reads
    bbox: tuple


def test_choose_face() -> None:
    inp = v.ImageInput("target", np.zeros((100, 120, 3), np.uint8))
    err = refused(v.choose_face, [], inp)
    assert (err.status, err.code, err.field) == (422, "no_face", "target") and "120x100" in err.message
    two = [FakeFace((0, 0, 10, 10)), FakeFace((50, 50, 70, 70))]
    err = refused(v.choose_face, two, inp)
    assert err.code == "several_faces" and "target_face_index" in err.message and len(err.extra["faces"]) == 2
    assert v.choose_face(two, v.ImageInput("target", inp.image, face_index=1)) is two[1]
    err = refused(v.choose_face, two, v.ImageInput("target", inp.image, face_index=2))
    assert (err.code, err.field) == ("face_index_out_of_range", "target_face_index")
    assert v.choose_face(two[:1], inp) is two[0]


def test_error_body_names_the_request() -> None:
    body = v.ApiError(422, "no_face", "msg", "identity", faces=[]).body("rid1")
    assert body == {
        "error": {"code": "no_face", "message": "msg", "field": "identity", "request_id": "rid1", "faces": []}
    }


# --- paste back -------------------------------------------------------------------------------


def _photo() -> np.ndarray:
    yy, xx = np.mgrid[0:300, 0:400]
    return np.dstack([xx * 255 // 400, yy * 255 // 300, (xx + yy) % 256]).astype(np.uint8)  # smooth, (300, 400, 3)


def _rotated_face(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A crop of _photo() through a rotation + scale, like a real alignment, and its mask."""
    photo = _photo()
    m = cv2.getRotationMatrix2D((200, 150), 20, size / 120).astype(np.float32)  # 120 px face -> size
    m[:, 2] += np.array([size / 2 - 200, size / 2 - 150], np.float32)
    crop = cv2.warpAffine(photo, m, (size, size), flags=cv2.INTER_AREA)
    return crop, m, compose.face_mask(None, size)


def test_pasting_an_unchanged_crop_back_changes_nothing_visible() -> None:
    photo = _photo()
    crop, m, mask = _rotated_face(112)
    out = compose.paste_back(photo, crop, m, mask)
    diff = np.abs(out.astype(int) - photo.astype(int)).max(axis=2)
    assert diff.max() <= 12 and diff.mean() < 0.5  # resampling error only


def test_only_the_masked_region_changes_and_its_centre_takes_the_crop() -> None:
    photo = _photo()
    crop, m, mask = _rotated_face(64)
    red = np.zeros_like(crop)
    red[..., 0] = 255
    out = compose.paste_back(photo, red, m, mask)
    inv = cv2.invertAffineTransform(m)
    centre = np.round(inv @ np.array([32, 32, 1.0])).astype(int)  # crop centre in the photo
    assert tuple(out[centre[1], centre[0]]) == (255, 0, 0)
    outside = cv2.warpAffine(mask.astype(np.uint8), m, (400, 300), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP) == 0
    assert np.array_equal(out[outside], photo[outside])  # alpha never leaks past the mask
    assert (out != photo).any(axis=2).sum() > 0.5 * mask.sum() * (120 / 64) ** 2


def test_aligned_faces_and_downscaling_keep_the_geometry_consistent() -> None:
    image = _photo()[:, 50:350]  # (300, 300, 3)
    face = compose.aligned_face(np.ascontiguousarray(image), 32)
    assert face.crop.shape == (32, 32, 3) and face.mask.shape == (32, 32)
    again = cv2.warpAffine(image, face.align_matrix, (32, 32), flags=cv2.INTER_LINEAR)
    assert np.abs(again.astype(int) - face.crop.astype(int)).mean() < 2.0
    with pytest.raises(ValueError, match="square"):
        compose.aligned_face(_photo(), 32)
    big = compose.aligned_face(np.ascontiguousarray(image), 128)
    small = downscale_face(big, 32)
    assert np.allclose(small.align_matrix, face.align_matrix, atol=1e-4)
    assert np.abs(small.crop.astype(int) - face.crop.astype(int)).mean() < 3.0


def test_fit_output() -> None:
    img = np.zeros((3000, 1500, 3), np.uint8)
    assert compose.fit_output(img, 2048).shape == (2048, 1024, 3)
    assert compose.fit_output(img[:100], 2048) is not None and compose.fit_output(img[:100], 2048).shape[0] == 100


# --- settings ---------------------------------------------------------------------------------


def test_serve_config_user_configs_are_valid_settings() -> None:
    from deployments.settings import REPO_ROOT

    config = yaml.safe_load((REPO_ROOT / "deployments" / "serve_config.yaml").read_text())
    app = config["applications"][0]
    assert config["http_options"]["host"] == "127.0.0.1"
    classes = {
        "Ingress": IngressSettings,
        "FaceAnalysis": AnalysisSettings,
        "Generator": GeneratorSettings,
        "Scenes": SceneSettings,
    }
    seen = set()
    for dep in app["deployments"]:
        from_dict(classes[dep["name"]], dep.get("user_config"), dep["name"])
        seen.add(dep["name"])
        if dep["name"] not in ("Ingress", "Scenes"):  # Scenes: one 4 GB pipeline, scaled to zero when idle
            assert dep["autoscaling_config"]["max_replicas"] >= 2, dep["name"]
        assert dep["max_queued_requests"] > 0 and dep["backpressure_config"]["retry_after_s"] > 0
    gen = next(d for d in app["deployments"] if d["name"] == "Generator")
    assert gen["max_ongoing_requests"] >= gen["user_config"]["max_batch_size"]
    assert seen == set(classes)


def test_settings_refuse_unknown_keys_and_bad_values(tmp_path, monkeypatch) -> None:
    with pytest.raises(ValueError, match="max_batch"):
        from_dict(GeneratorSettings, {"max_batch": 4}, "Generator")
    with pytest.raises(ValueError):
        from_dict(IngressSettings, {"default_steps": 500}, "Ingress")
    monkeypatch.delenv("SFSR_API_TOKEN", raising=False)
    assert IngressSettings().token() is None
    monkeypatch.setenv("SFSR_API_TOKEN", " s3cret ")
    assert IngressSettings().token() == "s3cret"
    (tmp_path / "tok").write_text("fromfile\n")
    assert IngressSettings(api_token_file=str(tmp_path / "tok")).token() == "fromfile"
    with pytest.raises(ValueError, match="cannot read"):
        IngressSettings(api_token_file=str(tmp_path / "missing")).token()


def test_grafana_dashboard_shows_every_app_metric() -> None:
    import json
    import re

    from deployments.settings import REPO_ROOT

    source = "".join(p.read_text() for p in (REPO_ROOT / "deployments").glob("*.py"))
    metrics = re.findall(r'(Counter|Histogram|Gauge)\(\s*"(sfsr_\w+)"', source)  # any layout the formatter gives
    assert len(metrics) >= 5
    dash = json.loads((REPO_ROOT / "platform" / "grafana" / "sfsr-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p.get("targets", []))
    for kind, name in metrics:  # Ray exports ray_<name>, counters with _total, histograms as _bucket/_sum/_count
        exported = f"ray_{name}_total" if kind == "Counter" else f"ray_{name}"
        assert exported in exprs, f"{name} ({kind}) has no panel in sfsr-dashboard.json"
    assert "ray_serve_deployment_replica_healthy" in exprs and "ray_node_cpu_utilization" in exprs


def test_an_open_api_only_starts_on_loopback() -> None:
    assert open_api_refusal(None, "127.0.0.1", False) is None
    assert open_api_refusal(None, "::1", False) is None
    assert open_api_refusal("tok", "0.0.0.0", False) is None  # a token makes any host fine
    assert open_api_refusal(None, "0.0.0.0", True) is None  # the operator vouches for a gateway
    refusal = open_api_refusal(None, "0.0.0.0", False)
    assert refusal and "SFSR_API_TOKEN" in refusal and "0.0.0.0" in refusal
    assert open_api_refusal(None, None, False)  # unknown host: assume the worst


def test_generator_batches_group_compatible_jobs() -> None:
    from deployments.generator import GenJob, group_jobs, run_group

    crop = np.zeros((16, 16, 3), np.uint8)
    common = dict(steps=4, guidance_identity=2.0, guidance_expression=2.0)
    jobs = [
        GenJob("reenact", crop, seed=1, word="joy", **common),
        GenJob("swap", crop, seed=2, target=crop, **common),
        GenJob("reenact", crop, seed=3, word="rage", **common),
        GenJob("reenact", crop, seed=4, word="joy", **{**common, "steps": 8}),
        GenJob("reenact", crop, seed=5, driver=crop, **common),
    ]
    assert group_jobs(jobs) == [[0, 2], [1], [3], [4]]

    class Recorder:  # records how each model call is made; returns one blank image per sample
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict]] = []

        def _out(self, name: str, n: int, kwargs: dict) -> np.ndarray:
            self.calls.append((name, kwargs))
            return np.zeros((n, 16, 16, 3), np.uint8)

        def reenact(self, src, **kw):
            return self._out("reenact", len(src), kw)

        def generate(self, ids, **kw):
            return self._out("generate", len(ids), kw)

    rec = Recorder()
    assert run_group(rec, [jobs[0], jobs[2]]).shape == (2, 16, 16, 3)
    name, kw = rec.calls[-1]
    assert name == "reenact" and kw["words"] == ["joy", "rage"] and kw["seeds"] == [1, 3] and kw["steps"] == 4
    vec = [
        GenJob("generate", crop, seed=i, target=crop, mask=np.ones((16, 16), bool), vector=(0.0,) * 7, **common)
        for i in range(3)
    ]
    run_group(rec, vec)
    name, kw = rec.calls[-1]
    # Generator.generate wants a list with one (D,) vector per sample, masks stacked
    assert isinstance(kw["expression"], list) and kw["expression"][0].shape == (7,)
    assert kw["masks"].shape == (3, 16, 16) and kw["background_images"].shape == (3, 16, 16, 3)
    # a word's exemplar target makes a reenact job a vector job: generate with the source as identity
    # and background (what Generator.reenact is), one (D,) vector per sample
    src = [np.full((16, 16, 3), i, np.uint8) for i in range(2)]
    vec = [GenJob("reenact", s, seed=i, vector=(float(i),) * 7, **common) for i, s in enumerate(src)]
    assert group_jobs(vec + [jobs[0]]) == [[0, 1], [2]]
    run_group(rec, vec)
    name, kw = rec.calls[-1]
    assert name == "generate" and np.array_equal(kw["background_images"], np.stack(src))
    assert [e[0] for e in kw["expression"]] == [0.0, 1.0] and kw["seeds"] == [0, 1]


# --- init: what sampling starts from ------------------------------------------------------------


def test_init_defaults_to_the_models_and_refuses_unknown_values() -> None:
    base = {"source": png(), "expression": "joy"}
    assert v.parse_reenact(base, LIMITS).params.init == "noise"
    inverting = v.Limits(image=LIMITS.image, expression_dim=7, default_init="inversion")
    assert v.parse_reenact(base, inverting).params.init == "inversion"
    assert v.parse_reenact({**base, "init": "noise"}, inverting).params.init == "noise"
    assert (
        v.parse_swap({"identity": png(), "target": png(seed=1), "init": "inversion"}, LIMITS).params.init == "inversion"
    )
    err = refused(v.parse_reenact, {**base, "init": "sideways"}, LIMITS)
    assert (err.status, err.code, err.field) == (422, "invalid_field", "init")
    assert "noise" in err.message and "inversion" in err.message and "sideways" in err.message


def test_a_scene_made_from_text_has_no_face_to_invert() -> None:
    scene = {"identity": png(), "expression": "joy", "background_prompt": "a lake"}
    err = refused(v.parse_generate, {**scene, "init": "inversion"}, LIMITS)
    assert (err.status, err.code, err.field) == (422, "conflicting_fields", "init")
    # a model whose default is inversion still makes scenes from noise
    inverting = v.Limits(image=LIMITS.image, expression_dim=7, default_init="inversion")
    assert v.parse_generate(scene, inverting).params.init == "noise"
    assert v.parse_generate({"identity": png(), "expression": "joy"}, inverting).params.init == "inversion"


def test_jobs_that_start_differently_are_not_batched_together() -> None:
    from deployments.generator import GenJob, group_jobs

    crop = np.zeros((8, 8, 3), np.uint8)
    jobs = [
        GenJob("reenact", crop, 10, 2.0, 2.0, seed=i, init=init, word="joy")
        for i, init in enumerate(("noise", "inversion", "noise"))
    ]
    assert group_jobs(jobs) == [[0, 2], [1]]
