"""The OpenAPI document against the validation it describes, without Ray or HTTP.

For a table of request bodies, the documented schema (deployments/openapi.py, checked with
jsonschema as a fuzzer would) and deployments/validation.py must agree: what one accepts the other
accepts. The live check, a schema fuzzer against the deployed app, is in
tests/integration/test_serve.py.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from deployments import validation as v
from deployments.ingress import api
from deployments.validation import ROUTE_FIELDS
from sfsr.io.images import ImageLimits
from tests.fixtures.api_fuzz import body_is_schema_valid

LIMITS = v.Limits(image=ImageLimits(max_bytes=2_000_000, max_pixels=4_000_000, min_side=32), expression_dim=7)
PARSE = {"swap": v.parse_swap, "reenact": v.parse_reenact, "generate": v.parse_generate}


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


PNG = _png()
B64 = base64.b64encode(PNG).decode()
SPEC = api.openapi()


def body_schema(route: str, media: str) -> dict[str, Any]:
    return SPEC["paths"][f"/v1/{route}"]["post"]["requestBody"]["content"][media]["schema"]


def accepted(route: str, fields: dict[str, Any]) -> bool:
    try:
        PARSE[route](fields, LIMITS)
    except v.ApiError:
        return False
    return True


JSON_CASES = [
    ("swap", {"identity": B64, "target": "data:image/png;base64," + B64}, True),
    ("swap", {"identity": B64, "target": B64, "steps": 80.0, "seed": 2**31 - 1, "identity_face_index": 1000}, True),
    ("swap", {"identity": "", "target": B64}, False),
    ("swap", {"identity": B64}, False),
    ("swap", {"identity": B64, "target": "abc"}, False),  # not base64 (length)
    ("swap", {"identity": B64, "target": "data:image/png," + B64}, False),  # a data: URL without ;base64
    ("swap", {"identity": B64, "target": B64, "steps": 0}, False),
    ("swap", {"identity": B64, "target": B64, "steps": 101}, False),
    ("swap", {"identity": B64, "target": B64, "steps": 2.5}, False),
    ("swap", {"identity": B64, "target": B64, "seed": 2**31}, False),
    ("swap", {"identity": B64, "target": B64, "guidance_identity": 15.5}, False),
    ("swap", {"identity": B64, "target": B64, "target_face_index": 1001}, False),
    ("swap", {"identity": B64, "target": B64, "bogus": 1}, False),
    ("reenact", {"source": B64, "expression": "delight"}, True),
    ("reenact", {"source": B64, "driver": B64, "driver_aligned": False}, True),
    ("reenact", {"source": B64, "driver": B64, "expression": "joy"}, False),
    ("reenact", {"source": B64}, False),
    ("reenact", {"source": B64, "expression": "hapiness"}, False),
    ("generate", {"identity": B64, "expression_vector": [0, 0.5, 0, 0, 0, -999.5, 1000]}, True),
    ("generate", {"identity": B64, "expression_image": B64, "background": B64}, True),
    ("generate", {"identity": B64, "expression_vector": [0] * 6 + [1001]}, False),
    ("generate", {"identity": B64, "expression_vector": []}, False),
    ("generate", {"identity": B64, "expression": "joy", "expression_image": B64}, False),
    ("generate", {"identity": B64}, False),
    # expression_target / expression_exemplar: with a word only; an index only with "exemplar"
    ("reenact", {"source": B64, "expression": "joy", "expression_target": "exemplar"}, True),
    ("reenact", {"source": B64, "expression": "joy", "expression_target": "prototype"}, True),
    (
        "generate",
        {"identity": B64, "expression": "joy", "expression_target": "exemplar", "expression_exemplar": 1000},
        True,
    ),
    (
        "generate",
        {"identity": B64, "expression": "joy", "expression_target": "exemplar", "expression_exemplar": 1001},
        False,
    ),
    (
        "generate",
        {"identity": B64, "expression": "joy", "expression_target": "exemplar", "expression_exemplar": -1},
        False,
    ),
    ("generate", {"identity": B64, "expression": "joy", "expression_exemplar": 0}, False),
    (
        "generate",
        {"identity": B64, "expression": "joy", "expression_target": "prototype", "expression_exemplar": 0},
        False,
    ),
    ("reenact", {"source": B64, "expression": "joy", "expression_target": "nearest"}, False),
    ("reenact", {"source": B64, "driver": B64, "expression_target": "prototype"}, False),
    ("generate", {"identity": B64, "expression_vector": [0] * 7, "expression_target": "exemplar"}, False),
    ("generate", {"identity": B64, "expression_image": B64, "expression_exemplar": 0}, False),
]


@pytest.mark.parametrize("route,body,valid", JSON_CASES)
def test_json_schema_and_validation_agree(route: str, body: dict[str, Any], valid: bool) -> None:
    assert body_is_schema_valid(body_schema(route, "application/json"), body) is valid
    assert accepted(route, body) is valid


MULTIPART_CASES = [
    ("swap", {"identity": PNG, "target": PNG, "steps": 3, "identity_aligned": True}, True),
    ("swap", {"identity": b"", "target": PNG}, False),
    ("generate", {"identity": PNG, "expression_vector": "0,0.5,0,0,0,0,-1"}, True),
    ("generate", {"identity": PNG, "expression_vector": "[0,0.5,0,0,0,0,-1]"}, True),
    ("generate", {"identity": PNG, "expression_vector": "0,,1"}, False),
    ("generate", {"identity": PNG, "expression_vector": "[0,1"}, False),
    ("reenact", {"source": PNG, "expression": "joy", "expression_target": "exemplar", "expression_exemplar": 2}, True),
    ("reenact", {"source": PNG, "driver": PNG, "expression_target": "exemplar"}, False),
]


@pytest.mark.parametrize("route,body,valid", MULTIPART_CASES)
def test_multipart_schema_and_validation_agree(route: str, body: dict[str, Any], valid: bool) -> None:
    assert body_is_schema_valid(body_schema(route, "multipart/form-data"), body) is valid
    # what a multipart parser hands validation: text for every non-file part
    form = {
        k: val if isinstance(val, bytes) else str(val).lower() if isinstance(val, bool) else str(val)
        for k, val in body.items()
    }
    assert accepted(route, form) is valid


def test_every_field_is_documented_in_both_encodings() -> None:
    for route, names in ROUTE_FIELDS.items():
        for media in ("application/json", "multipart/form-data"):
            assert set(body_schema(route, media)["properties"]) == names, (route, media)


def test_every_route_declares_its_errors_and_types() -> None:
    for path, ops in SPEC["paths"].items():
        for method, op in ops.items():
            answers = op["responses"]
            assert {"500", "503"} <= set(answers), (method, path)
            assert ("401" in answers) is (path != "/v1/healthz"), (method, path)
    for path in ("/v1/examples/{identity}.png", "/v1/expressions/{word}/exemplars/{index}.png"):
        png_route = SPEC["paths"][path]["get"]["responses"]
        assert set(png_route["200"]["content"]) == {"image/png"} and "404" in png_route
    assert "404" in SPEC["paths"]["/v1/expressions/{word}"]["get"]["responses"]
    assert {"400", "413", "415", "422"} <= set(SPEC["paths"]["/v1/swap"]["post"]["responses"])
