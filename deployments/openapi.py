"""The OpenAPI document's hand-written parts: POST request bodies and every route's responses.

The handlers parse their bodies themselves (both encodings reduce to one field mapping, see
deployments/validation.py), so FastAPI cannot infer the schemas; they are written out here from
the same field lists (validation.ROUTE_FIELDS), once per encoding, with the constraints validation
enforces: required images are non-empty, base64 is well formed, numbers are in range, a word is
one of the vocabulary, exactly one expression source. What a schema cannot say is left to a 422
with its own error code (CONTENT_REFUSALS): whether the bytes decode as an image, the faces found
in it, and the loaded model's expression vector length.

Every status a route can answer is declared with its content type: the ingress's JSON errors, and
the plain-text 408/503 Serve's HTTP proxy answers itself (request timeout, overload).
tests/integration/test_serve.py runs a schema fuzzer (schemathesis) against the live app to keep
this exact.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi.responses import Response

from deployments.settings import IngressSettings
from deployments.travel import DEFAULT_FRAME_MS, DEFAULT_FRAMES, FRAME_MS, FRAMES
from deployments.validation import (
    EXEMPLAR_RANGE,
    FACE_INDEX_RANGE,
    MAX_PROMPT_CHARS,
    MAX_SEED,
    MAX_VECTOR_ABS,
    MIN_HEAD_BOX,
    ROUTE_FIELDS,
    TARGET_KINDS,
    target_fields,
)
from sfsr.expressions import WORDS
from sfsr.io.images import REASONS
from sfsr.model_card import INITS

IMAGE_HELP = {
    "identity": "photo of the person whose identity to use",
    "target": "photo whose face is replaced (its pose, expression and background are kept)",
    "source": "photo whose expression is changed",
    "driver": "photo whose expression to copy",
    "expression_image": "photo whose expression to use",
    "background": "photo whose background and head placement to use (default: the identity photo)",
    "start_image": "travel: photo whose expression the first frame has",
    "end_image": "travel: photo whose expression the last frame has",
}
_DEFAULTS = IngressSettings()  # the schema states the default limits (GET /v1/info has the configured ones)
SCALAR_HELP: dict[str, tuple[dict[str, Any], str]] = {
    "expression": (
        {"type": "string", "enum": [w.word for w in WORDS]},
        "one of the 135 words of GET /v1/expressions (case and spaces are ignored)",
    ),
    "expression_vector": (
        {
            "type": "array",
            "minItems": 1,
            "items": {"type": "number", "minimum": -MAX_VECTOR_ABS, "maximum": MAX_VECTOR_ABS},
        },
        "expression vector of the model's expression space (length: GET /v1/info model.expression_dim)",
    ),
    "start": (
        {"type": "string", "enum": [w.word for w in WORDS]},
        "travel: the first frame's expression, one of the 135 words of GET /v1/expressions",
    ),
    "end": (
        {"type": "string", "enum": [w.word for w in WORDS]},
        "travel: the last frame's expression, one of the 135 words of GET /v1/expressions",
    ),
    "start_vector": (
        {
            "type": "array",
            "minItems": 1,
            "items": {"type": "number", "minimum": -MAX_VECTOR_ABS, "maximum": MAX_VECTOR_ABS},
        },
        "travel: the first frame's expression vector (length: GET /v1/info model.expression_dim)",
    ),
    "end_vector": (
        {
            "type": "array",
            "minItems": 1,
            "items": {"type": "number", "minimum": -MAX_VECTOR_ABS, "maximum": MAX_VECTOR_ABS},
        },
        "travel: the last frame's expression vector (length: GET /v1/info model.expression_dim)",
    ),
    "frames": (
        {"type": "integer", "minimum": FRAMES[0], "maximum": FRAMES[1]},
        f"travel: frames, both ends included (default {DEFAULT_FRAMES})",
    ),
    "frame_ms": (
        {"type": "integer", "minimum": FRAME_MS[0], "maximum": FRAME_MS[1]},
        f"travel: milliseconds each frame shows in the animation (default {DEFAULT_FRAME_MS})",
    ),
    "steps": (
        {"type": "integer", "minimum": 1, "maximum": _DEFAULTS.max_steps},
        "denoising steps (server default when omitted; at most GET /v1/info limits.max_steps)",
    ),
    "guidance_identity": (
        {"type": "number", "minimum": 0, "maximum": _DEFAULTS.max_guidance},
        "identity guidance scale (at most GET /v1/info limits.max_guidance)",
    ),
    "guidance_expression": (
        {"type": "number", "minimum": 0, "maximum": _DEFAULTS.max_guidance},
        "expression guidance scale (at most GET /v1/info limits.max_guidance)",
    ),
    "seed": (
        {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
        "sampling seed (default: derived from the request id)",
    ),
    "init": (
        {"type": "string", "enum": list(INITS)},
        "what sampling starts from: noise, or inversion (the face being replaced, run backwards through "
        "the sampler under its own identity and expression, so what the request does not change stays "
        "closer to it; costs about a third more). Default: GET /v1/info limits.default_init. Not with "
        "background_prompt (a scene made from text has no face to invert)",
    ),
    "background_prompt": (
        {"type": "string", "maxLength": MAX_PROMPT_CHARS},
        "a background made from this text by the server's text-to-image model (Scenes "
        "user_config.text_to_image; 422 text_to_image_not_configured without one); not with background "
        "(blank: no prompt)",
    ),
    "background_seed": (
        {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
        "seed of the text-to-image background (default: the request's seed); needs background_prompt",
    ),
    "head_box": (
        {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 4, "maxItems": 4},
        "where the head goes in the prompted background: x1, y1, x2, y2 as fractions of its width and height "
        f"(x2 - x1 and y2 - y1 at least {MIN_HEAD_BOX}, else 422 invalid_head_box; the face is fitted "
        "inside, centred; default: a detected face, else centred, upper third, a third of the width); "
        "needs background_prompt",
    ),
}


def _target_help(word_field: str, what: str) -> dict[str, tuple[dict[str, Any], str]]:
    """<word_field>_target and <word_field>_exemplar: where the word's target comes from."""
    target, exemplar = target_fields(word_field)
    return {
        target: (
            {"type": "string", "enum": list(TARGET_KINDS)},
            f"{what}where the word's target comes from: its prototype (default), or one of its exemplar faces in "
            "the model's expression bank (GET /v1/expressions/{word} lists them; 422 no_expression_bank when "
            f"the model has none); only with {word_field}",
        ),
        exemplar: (
            {"type": "integer", "minimum": EXEMPLAR_RANGE[0], "maximum": EXEMPLAR_RANGE[1]},
            f"{what}which exemplar face of the word (default: the request's seed picks one; 422 "
            f"exemplar_out_of_range past the word's count); only with {target}=exemplar",
        ),
    }


SCALAR_HELP |= _target_help("expression", "") | _target_help("start", "travel: ") | _target_help("end", "travel: ")
# base64 as validation.image_bytes takes it: standard alphabet, padded, optionally as a data: URL
BASE64_IMAGE = r"^(data:[^,]*;base64[^,]*,)?([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{4}|[A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)$"
# a multipart expression_vector: a JSON list or comma-separated numbers (within +-999, no spaces)
_NUMBER = r"-?(0|[1-9][0-9]{0,2})(\.[0-9]+)?"
VECTOR_TEXT = rf"^(\[{_NUMBER}(,{_NUMBER})*\]|{_NUMBER}(,{_NUMBER})*)$"
# a multipart head_box: a JSON list or 4 comma-separated numbers in [0, 1] (no spaces)
_UNIT = r"(0(\.[0-9]+)?|1(\.0+)?)"
BOX_TEXT = rf"^(\[{_UNIT}(,{_UNIT}){{3}}\]|{_UNIT}(,{_UNIT}){{3}})$"
# A prompted background (background_prompt) is not sent with a background photo, and its seed and
# head placement need it (validation.scene_fields): a prompt without a photo, or neither a prompt
# nor its options. Written as oneOf of present/absent properties, because schemathesis' coverage
# phase fails on `not` beside a multipart file ("Unsupported type: 'Binary'").
SCENE_RULES = {
    "generate": [
        {
            "oneOf": [
                {"required": ["background_prompt"], "properties": {"background": False}},
                {"properties": {"background_prompt": False, "background_seed": False, "head_box": False}},
            ]
        }
    ]
}


def target_rules(word_field: str) -> list[dict[str, Any]]:
    """<word_field>_target and _exemplar choose a word's target: both need the word, and an
    exemplar index needs <word_field>_target=exemplar (validation.expression_target). oneOf of
    present/absent properties, as SCENE_RULES."""
    target, exemplar = target_fields(word_field)
    return [
        {
            "oneOf": [
                {"required": [word_field]},
                {"properties": {word_field: False, target: False, exemplar: False}},
            ]
        },
        {
            "oneOf": [
                {"required": [exemplar, target], "properties": {target: {"const": "exemplar"}}},
                {"properties": {exemplar: False}},
            ]
        },
    ]


# Exactly one expression source, where a route needs one (validation.parse_reenact, parse_generate).
ONE_OF = {
    "reenact": ["driver", "expression"],
    "generate": ["expression", "expression_image", "expression_vector"],
}
# Routes with two such choices: exactly one of each group (deployments/travel.py).
ONE_OF_EACH = {"travel": [["start", "start_image", "start_vector"], ["end", "end_image", "end_vector"]]}
# Everything a route's body must satisfy besides its fields' own schemas: its allOf.
RULES = {
    "reenact": target_rules("expression"),
    "generate": SCENE_RULES["generate"] + target_rules("expression"),
    "travel": [{"oneOf": [{"required": [n]} for n in group]} for group in ONE_OF_EACH["travel"]]
    + target_rules("start")
    + target_rules("end"),
}
REQUIRED = {"swap": ["identity", "target"], "reenact": ["source"], "generate": ["identity"], "travel": ["identity"]}

# Error codes of 4xx answers to requests the schema allows: what no schema can say. An empty image
# is not among them: the schema itself refuses that.
CONTENT_REFUSALS = frozenset(
    {f"image_{reason}" for reason in REASONS - {"empty"}}
    | {
        "no_face",
        "several_faces",
        "face_index_out_of_range",
        "not_square",
        "vector_length",  # the loaded model's expression_dim
        "unsupported_field",  # a model without an expression space takes no vector
        "request_too_large",  # the configured byte limits
        "invalid_head_box",  # x1 < x2, y1 < y2 and the least size, which items' ranges cannot say
        "text_to_image_not_configured",  # background_prompt on a server without a text-to-image folder
        "no_expression_bank",  # expression_target=exemplar with a model that ships no expression bank
        "no_exemplars",  # ... or whose bank keeps no exemplar of the word
        "exemplar_out_of_range",  # expression_exemplar past the word's count in the loaded model's bank
    }
)


class PNGResponse(Response):
    media_type = "image/png"


def _field_schema(name: str, encoding: str) -> dict[str, Any]:
    for image, help_text in IMAGE_HELP.items():
        if name == image:
            if encoding == "multipart":
                return {
                    "type": "string",
                    "format": "binary",
                    "minLength": 1,
                    "description": f"{help_text}; JPEG, PNG or WebP",
                }
            return {
                "type": "string",
                "pattern": BASE64_IMAGE,
                "description": f"{help_text}; base64 of a JPEG, PNG or WebP file (a data: URL works too)",
            }
        if name == f"{image}_face_index":
            return {
                "type": "integer",
                "minimum": FACE_INDEX_RANGE[0],
                "maximum": FACE_INDEX_RANGE[1],
                "description": f"which face of {image} to use when it has several (0 = most confident)",
            }
        if name == f"{image}_aligned":
            return {"type": "boolean", "description": f"{image} already is a square aligned face crop: skip detection"}
    schema, help_text = SCALAR_HELP[name]
    if name in ("expression_vector", "start_vector", "end_vector", "head_box") and encoding == "multipart":
        schema = {"type": "string", "pattern": BOX_TEXT if name == "head_box" else VECTOR_TEXT}
        help_text += "; a JSON list or comma-separated numbers"
    return {**copy.deepcopy(schema), "description": help_text}


# --- responses --------------------------------------------------------------------------------

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable machine-readable reason"},
                "message": {"type": "string", "description": "what was wrong and what to do"},
                "field": {"type": "string", "description": "the request field at fault"},
                "request_id": {"type": "string"},
                "suggestions": {"type": "array", "items": {"type": "string"}, "description": "nearest words"},
                "faces": {
                    "type": "array",
                    "items": {"type": "array", "items": {"type": "number"}},
                    "description": "boxes (x1, y1, x2, y2) of the faces found",
                },
            },
        }
    },
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}


def _error(description: str, plain_text: bool = False, retry_after: bool = False) -> dict[str, Any]:
    content: dict[str, Any] = {"application/json": {"schema": copy.deepcopy(ERROR_SCHEMA)}}
    if plain_text:  # Serve's HTTP proxy answers these itself, as text
        content["text/plain"] = {"schema": {"type": "string"}}
    out: dict[str, Any] = {"description": description, "content": content}
    if retry_after:
        out["headers"] = copy.deepcopy(_RETRY_AFTER)
    return out


def responses(*statuses: int, token: bool = True) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route: the given error statuses, plus what any route may answer (401
    when a token is configured, 500, and the proxy's 408 and 503)."""
    table = {
        400: lambda: _error("the body cannot be parsed (invalid JSON or multipart, bad Content-Length)"),
        401: lambda: _error("missing or wrong bearer token (only when a token is configured)"),
        404: lambda: _error("no such resource"),
        408: lambda: {  # Serve's proxy, past http_options.request_timeout_s
            "description": "the request took longer than Serve's request_timeout_s",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        413: lambda: _error("request or image too large"),
        415: lambda: _error("not multipart/JSON, or an image format we do not take"),
        422: lambda: _error(
            "a field is missing or invalid, the image cannot be used (no face, several faces, not square), "
            "the loaded model does not take the expression vector, or has no such exemplar face"
        ),
        500: lambda: _error("a bug: the server log has the details under the request id"),
        503: lambda: _error(
            "overloaded, or a model replica is restarting: retry after Retry-After seconds "
            "(text/plain when Serve's proxy itself is at capacity)",
            plain_text=True,
            retry_after=True,
        ),
    }
    wanted = set(statuses) | {408, 500, 503} | ({401} if token else set())
    return {status: table[status]() for status in sorted(wanted)}


def request_body(route: str) -> dict[str, Any]:
    """openapi_extra for a POST route: the same fields as multipart and as JSON, and its 200."""
    names = sorted(ROUTE_FIELDS[route], key=lambda n: (n not in IMAGE_HELP and n != "expression", n))
    content = {}
    for media, encoding in (("multipart/form-data", "multipart"), ("application/json", "json")):
        schema: dict[str, Any] = {
            "type": "object",
            "required": REQUIRED[route],
            "properties": {n: _field_schema(n, encoding) for n in names},
            "additionalProperties": False,
        }
        if route in ONE_OF:
            schema["oneOf"] = [{"required": [n]} for n in ONE_OF[route]]
        if route in RULES:
            schema["allOf"] = copy.deepcopy(RULES[route])
        content[media] = {"schema": schema}
    body: dict[str, Any] = {
        "requestBody": {"required": True, "content": content},
        "responses": {
            "200": {
                "description": "the generated image: PNG with provenance text, an invisible watermark and a "
                "signed C2PA manifest "
                "(or JSON with the PNG as a data: URL and its metadata when the request sends "
                "Accept: application/json)",
                "headers": {
                    "X-Sfsr-Model": {"description": "model name and weights version", "schema": {"type": "string"}},
                    "X-Sfsr-Warning": {
                        "description": "present when the model was trained on synthetic faces: "
                        "outputs on photos are not photo-real, and what to use instead "
                        "(also the JSON field `warning` and the PNG text sfsr:warning)",
                        "schema": {"type": "string"},
                    },
                },
                "content": {
                    "image/png": {"schema": {"type": "string", "format": "binary"}},
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["image", "metadata", "warning"],
                            "properties": {
                                "image": {"type": "string", "description": "data:image/png;base64,..."},
                                "metadata": {
                                    "type": "object",
                                    "description": "request id, model, version, trained_on, "
                                    "licence, seed, steps, guidance, face box, watermark",
                                },
                                "warning": {
                                    "type": ["string", "null"],
                                    "description": "set when the model was trained "
                                    "on synthetic faces (see the X-Sfsr-Warning header)",
                                },
                            },
                        }
                    },
                },
            },
            **{str(status): answer for status, answer in responses(400, 413, 415, 422).items()},
        },
    }
    if route == "travel":  # an animation, and with JSON each frame too
        ok = body["responses"]["200"]
        ok["description"] = (
            "the expression travel: an animated PNG (APNG, every frame watermarked, provenance text, a signed "
            "C2PA manifest), or with Accept: application/json the animation and each frame as data: URLs"
        )
        ok["content"]["application/json"]["schema"] = {
            "type": "object",
            "required": ["animation", "frames", "metadata", "warning"],
            "properties": {
                "animation": {"type": "string", "description": "data:image/png;base64,... (APNG)"},
                "frames": {"type": "array", "items": {"type": "string"}, "description": "each frame, a PNG data: URL"},
                "metadata": {"type": "object", "description": "request id, model, version, seed, steps, ends, frames"},
                "warning": {"type": ["string", "null"], "description": "see the X-Sfsr-Warning header"},
            },
        }
    return body


def png_responses(description: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a GET route answering a PNG, or 404 for one that does not exist."""
    return {
        200: {
            "description": description,
            "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
        },
        **responses(404),
    }


def health_responses() -> dict[int | str, dict[str, Any]]:
    """`responses=` of GET /v1/healthz (no token): 503 while the model cannot answer."""
    out = responses(token=False)
    out[503]["content"]["application/json"]["schema"] = {
        "type": "object",
        "required": ["status", "reason"],
        "properties": {"status": {"const": "unavailable"}, "reason": {"type": "string"}},
    }
    return out
