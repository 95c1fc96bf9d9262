"""POST /v1/travel's parsing and encoding (deployments/travel.py), without Ray."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from deployments import travel
from deployments import validation as v
from deployments.openapi import request_body
from deployments.settings import IngressSettings
from sfsr import c2pa_sign, watermark
from sfsr.faces.compose import aligned_face
from tests.fixtures.api_fuzz import body_is_schema_valid

LIMITS = v.Limits(expression_dim=7)


def _png(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_parse_words_images_and_vectors_in_both_encodings() -> None:
    multipart = {"identity": _png(1), "start": "Contentment", "end": "rage", "frames": "5", "frame_ms": "80"}
    req = travel.parse_travel(multipart, LIMITS)
    assert (req.start.word, req.end.word, req.frames, req.frame_ms) == ("contentment", "rage", 5, 80)
    assert req.identity.image.shape == (64, 64, 3) and req.background is None
    as_json = {
        "identity": base64.b64encode(_png(1)).decode(),
        "start_image": base64.b64encode(_png(2)).decode(),
        "end_vector": [0.1] * 7,
    }
    req = travel.parse_travel(as_json, LIMITS)
    assert req.start.image is not None and req.end.vector == (0.1,) * 7 and req.frames == travel.DEFAULT_FRAMES


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"start": "joy", "end": "rage"}, "missing_field", "identity"),
        ({"identity": b"x", "end": "rage"}, "missing_field", "start"),
        (
            {"identity": b"x", "start": "joy", "start_vector": "0,0,0,0,0,0,0", "end": "rage"},
            "conflicting_fields",
            "start_vector",
        ),
        ({"identity": b"x", "start": "joy", "end": "rage", "frames": "1"}, "out_of_range", "frames"),
        ({"identity": b"x", "start": "joy", "end": "rage", "frames": "33"}, "out_of_range", "frames"),
        ({"identity": b"x", "start": "joy", "end": "glee-ish"}, "unknown_expression", "end"),
        ({"identity": b"x", "start": "joy", "end_vector": "1,2"}, "vector_length", "end_vector"),
        ({"identity": b"x", "start": "joy", "end": "rage", "expression": "joy"}, "unknown_field", "expression"),
        (
            {"identity": b"x", "start_vector": [0] * 7, "start_target": "exemplar", "end": "rage"},
            "conflicting_fields",
            "start_target",
        ),
        ({"identity": b"x", "start": "joy", "end": "rage", "end_exemplar": "1"}, "missing_field", "end_target"),
        ({"identity": b"x", "start": "joy", "end": "rage", "end_target": "nearest"}, "invalid_field", "end_target"),
    ],
)
def test_bad_travel_requests_name_the_field(fields: dict, code: str, field: str) -> None:
    with pytest.raises(v.ApiError) as e:
        travel.parse_travel(fields, LIMITS)
    assert (e.value.code, e.value.field) == (code, field)


def test_each_word_end_may_take_an_exemplar_target() -> None:
    fields = {"identity": _png(1), "start": "joy", "start_target": "exemplar", "end": "rage", "end_exemplar": "2"}
    fields["end_target"] = "exemplar"
    req = travel.parse_travel(fields, LIMITS)
    assert req.start.target == v.ExpressionTarget("exemplar", None) and req.end.target == v.ExpressionTarget(
        "exemplar", 2
    )
    assert travel.parse_travel({**fields, "start_target": "prototype"}, LIMITS).start.target.kind == "prototype"
    # a chosen exemplar's vector replaces the word; otherwise the word goes to Generator.travel_vectors
    item = travel.end_item(req.end, None, (0.25,) * 7)
    assert item.dtype == np.float32 and item.tolist() == [0.25] * 7
    assert travel.end_item(req.start, None) == "joy"
    schema = request_body("travel")["requestBody"]["content"]["application/json"]["schema"]
    b64 = base64.b64encode(_png(1)).decode()
    for body, valid in (
        ({"identity": b64, "start": "joy", "end": "rage", "end_target": "exemplar", "end_exemplar": 2}, True),
        ({"identity": b64, "start": "joy", "end": "rage", "end_exemplar": 2}, False),
        ({"identity": b64, "start_vector": [0] * 7, "start_target": "prototype", "end": "rage"}, False),
    ):
        assert body_is_schema_valid(schema, body) is valid, body
        try:
            travel.parse_travel(body, LIMITS)
            accepted = True
        except v.ApiError:
            accepted = False
        assert accepted is valid, body


def test_the_schema_names_every_field_and_one_source_per_end() -> None:
    schema = request_body("travel")["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == set(v.ROUTE_FIELDS["travel"])
    assert schema["required"] == ["identity"]
    groups = [[r["required"][0] for r in g["oneOf"]] for g in schema["allOf"][:2]]
    assert groups == [["start", "start_image", "start_vector"], ["end", "end_image", "end_vector"]]
    assert schema["properties"]["frames"]["minimum"] == 2 and schema["properties"]["frames"]["maximum"] == 32


def test_frames_become_a_marked_signed_animation(tmp_path) -> None:
    settings = IngressSettings(c2pa_cert_dir=str(tmp_path / "c2pa"))
    c2pa_sign.create_chain(tmp_path / "c2pa")
    photo = np.asarray(Image.open(io.BytesIO(_png(3, 256))))
    face = aligned_face(photo, 32)
    crops = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(4)]
    meta = {
        "model": "m",
        "model_version": "sha256:0",
        "request_id": "r1",
        "seed": 1,
        "trained_on": "t",
        "licence": "l",
        "warning": None,
        "start": "joy",
        "end": "rage",
        "frames": 4,
    }
    animation, frames = travel.finish_frames(photo, crops, face, meta, 100, True, settings)
    apng = Image.open(io.BytesIO(animation))
    assert apng.n_frames == 4 and apng.info.get("loop") == 0
    assert "joy -> rage, 4 frames" in apng.text.values()
    report = c2pa_sign.read_c2pa(animation, (tmp_path / "c2pa" / c2pa_sign.ANCHORS_FILE).read_bytes())
    assert report.present and report.valid and report.trusted
    assert len(frames) == 4
    firsts = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in frames]
    assert all(watermark.detect(f).marked for f in firsts)
    assert not np.array_equal(firsts[0], firsts[-1])  # the face region changes from frame to frame
