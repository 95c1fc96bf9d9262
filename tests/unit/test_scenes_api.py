"""background_prompt on POST /v1/generate without Ray: validation, the OpenAPI body, the Scenes
settings and the 422 a server without a text-to-image folder answers."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from deployments import validation as v
from deployments.openapi import request_body
from deployments.scenes import SETTING, Scene, not_configured
from deployments.settings import SceneSettings, from_dict
from tests.unit.test_api_validation import LIMITS, png, refused


def test_a_prompt_with_seed_and_head_box_parses_from_both_encodings() -> None:
    multipart = {
        "identity": png(),
        "expression": "joy",
        "background_prompt": " a beach at sunset ",
        "background_seed": "42",
        "head_box": "0.3, 0.1, 0.7, 0.5",
    }
    json_body = {**multipart, "background_seed": 42, "head_box": [0.3, 0.1, 0.7, 0.5]}
    for fields in (multipart, json_body):
        r = v.parse_generate(fields, LIMITS)
        assert (r.background_prompt, r.background_seed, r.head_box) == ("a beach at sunset", 42, (0.3, 0.1, 0.7, 0.5))
        assert r.background is None
    plain = v.parse_generate({"identity": png(), "expression": "joy"}, LIMITS)
    assert (plain.background_prompt, plain.background_seed, plain.head_box) == (None, None, None)


def test_a_background_photo_and_a_prompt_are_refused_naming_both() -> None:
    err = refused(
        v.parse_generate,
        {"identity": png(), "expression": "joy", "background": png(), "background_prompt": "a lake"},
        LIMITS,
    )
    assert (err.status, err.code) == (422, "conflicting_fields")
    assert "background" in err.message and "background_prompt" in err.message


@pytest.mark.parametrize(
    ("extra", "code", "field"),
    [
        ({"background_prompt": "x" * (v.MAX_PROMPT_CHARS + 1)}, "out_of_range", "background_prompt"),
        ({"background_prompt": 7}, "invalid_field", "background_prompt"),
        ({"background_prompt": "a lake", "head_box": [0.5, 0.1, 0.4, 0.5]}, "invalid_head_box", "head_box"),
        ({"background_prompt": "a lake", "head_box": [0.1, 0.1, 0.4]}, "invalid_field", "head_box"),
        ({"background_prompt": "a lake", "head_box": [0.1, 0.1, 0.4, 1.5]}, "invalid_field", "head_box"),
        ({"background_prompt": "a lake", "head_box": [0.5, 0.5, 0.55, 0.9]}, "invalid_head_box", "head_box"),
        ({"background_prompt": " ", "background": png()}, "conflicting_fields", "background_prompt"),
        ({"background_seed": ""}, "missing_field", "background_prompt"),
        ({"background_prompt": "a lake", "head_box": "a,b,c,d"}, "invalid_field", "head_box"),
        ({"background_prompt": "a lake", "background_seed": -1}, "out_of_range", "background_seed"),
        ({"background_seed": 3}, "missing_field", "background_prompt"),
        ({"head_box": [0.1, 0.1, 0.4, 0.5]}, "missing_field", "background_prompt"),
    ],
)
def test_bad_scene_fields_are_refused_by_name(extra: dict, code: str, field: str) -> None:
    err = refused(v.parse_generate, {"identity": png(), "expression": "joy", **extra}, LIMITS)
    assert (err.status, err.code, err.field) == (422, code, field)


def test_a_prompt_of_exactly_the_limit_is_taken() -> None:
    r = v.parse_generate(
        {"identity": png(), "expression": "joy", "background_prompt": "y" * v.MAX_PROMPT_CHARS}, LIMITS
    )
    assert len(r.background_prompt) == v.MAX_PROMPT_CHARS


def test_openapi_declares_the_scene_fields_exactly() -> None:
    content = request_body("generate")["requestBody"]["content"]
    for media, box_type in (("application/json", "array"), ("multipart/form-data", "string")):
        schema = content[media]["schema"]
        props = schema["properties"]
        assert set(props) == v.ROUTE_FIELDS["generate"]
        assert props["background_prompt"]["maxLength"] == v.MAX_PROMPT_CHARS
        assert props["background_seed"]["maximum"] == v.MAX_SEED
        assert props["head_box"]["type"] == box_type
        # one rule ties the scene fields together (the others are the expression target's), checked by example below
        scene_rules = [r for r in schema["allOf"] if "background_prompt" in json.dumps(r)]
        assert len(scene_rules) == 1 and len(scene_rules[0]["oneOf"]) == 2
    assert content["application/json"]["schema"]["properties"]["head_box"]["minItems"] == 4
    # the schema's rules and the validator's agree, on the fields sent (jsonschema checks the schema)
    jsonschema = pytest.importorskip("jsonschema")
    schema = content["application/json"]["schema"]
    pattern = re.compile(content["multipart/form-data"]["schema"]["properties"]["head_box"]["pattern"])
    assert pattern.match("0.1,0.5,0.4,0.9") and pattern.match("[0,0,1,1.0]") and not pattern.match("0.1,0.5,1.4,0.9")
    b64 = base64.b64encode(png()).decode()
    cases = [
        ({"background_prompt": "a lake"}, True),
        ({"background_prompt": "a lake", "background_seed": 3, "head_box": [0.1, 0.1, 0.5, 0.5]}, True),
        ({"background_prompt": "", "background_seed": 3}, True),
        ({"background_prompt": "a lake", "background": b64}, False),
        ({"background_seed": 3}, False),
        ({"head_box": [0.1, 0.1, 0.5, 0.5]}, False),
        ({"background_prompt": "x" * (v.MAX_PROMPT_CHARS + 1)}, False),
    ]
    for extra, valid in cases:
        body = {"identity": b64, "expression": "joy", **extra}
        assert jsonschema.Draft202012Validator(schema).is_valid(body) == valid, extra
        try:
            v.parse_generate(body, LIMITS)
            accepted = True
        except v.ApiError:
            accepted = False
        assert accepted == valid, extra
    assert "allOf" not in request_body("swap")["requestBody"]["content"]["application/json"]["schema"]


def test_without_a_text_to_image_folder_a_prompt_gets_422_naming_the_setting() -> None:
    err = not_configured()
    assert (err.status, err.code, err.field) == (422, "text_to_image_not_configured", "background_prompt")
    assert SETTING in err.message and "serve_config.yaml" in err.message
    assert SceneSettings().text_to_image is None and SceneSettings().folder is None


def test_scene_settings_and_provenance() -> None:
    s = from_dict(SceneSettings, {"text_to_image": "models/sd15", "width": 640, "height": 384}, "Scenes")
    assert s.folder.endswith("/models/sd15") and s.folder.startswith("/")
    assert from_dict(SceneSettings, {"text_to_image": "s3://b/sd15"}, "Scenes").folder == "s3://b/sd15"
    for bad in ({"width": 500}, {"height": 4096}, {"steps": 0}, {"device": "tpu"}, {"text_to_imag": "x"}):
        with pytest.raises(ValueError, match="Scene"):
            from_dict(SceneSettings, bad, "Scenes user_config")
    scene = Scene(np.zeros((8, 8, 3), np.uint8), "a lake", 3, "sd15", 25, 7.5, 1.0)
    assert scene.provenance() == {
        "background": "text-to-image",
        "background_prompt": "a lake",
        "background_seed": "3",
        "text_to_image": "sd15",
    }
