"""OpenAPI request bodies of the POST routes, for /docs and /openapi.json.

The handlers parse their bodies themselves (both encodings reduce to one field mapping, see
deployments/validation.py), so FastAPI cannot infer the schemas; they are written out here from
the same field lists (validation.ROUTE_FIELDS), once per encoding.
"""

from __future__ import annotations

from typing import Any

from deployments.validation import MAX_PROMPT_CHARS, MAX_SEED, MIN_HEAD_BOX, ROUTE_FIELDS

IMAGE_HELP = {
    "identity": "photo of the person whose identity to use",
    "target": "photo whose face is replaced (its pose, expression and background are kept)",
    "source": "photo whose expression is changed",
    "driver": "photo whose expression to copy",
    "expression_image": "photo whose expression to use",
    "background": "photo whose background and head placement to use (default: the identity photo)",
}
SCALAR_HELP: dict[str, tuple[dict[str, Any], str]] = {
    "expression": ({"type": "string"}, "one of the 135 words of GET /v1/expressions"),
    "expression_vector": (
        {"type": "array", "items": {"type": "number"}},
        "expression vector of the model's expression space (length: GET /v1/info expression_dim)",
    ),
    "steps": ({"type": "integer", "minimum": 1}, "denoising steps (server default when omitted)"),
    "guidance_identity": ({"type": "number", "minimum": 0}, "identity guidance scale"),
    "guidance_expression": ({"type": "number", "minimum": 0}, "expression guidance scale"),
    "seed": ({"type": "integer", "minimum": 0}, "sampling seed (default: derived from the request id)"),
    "background_prompt": (
        {"type": "string", "maxLength": MAX_PROMPT_CHARS},
        "a background made from this text by the server's text-to-image model (Scenes "
        "user_config.text_to_image; 422 text_to_image_not_configured without one); not with background; "
        "blank counts as absent",
    ),
    "background_seed": (
        {"type": "integer", "minimum": 0, "maximum": MAX_SEED},
        "seed of the text-to-image background (default: the request's seed); needs background_prompt",
    ),
    "head_box": (
        {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}, "minItems": 4, "maxItems": 4},
        "where the head goes in the prompted background: x1, y1, x2, y2 as fractions of its width and height "
        f"(x2 - x1 and y2 - y1 at least {MIN_HEAD_BOX}; the face is fitted inside, centred; default: a detected "
        "face, else centred, upper third, a third of the width); needs background_prompt",
    ),
}
# Fields a JSON object may not combine, and fields that need another (JSON Schema 2020-12).
EXCLUSIVE = {"generate": [("background", "background_prompt")]}
DEPENDENT = {"generate": {"background_seed": ["background_prompt"], "head_box": ["background_prompt"]}}


def _field_schema(name: str, encoding: str) -> dict[str, Any]:
    for image, help_text in IMAGE_HELP.items():
        if name == image:
            if encoding == "multipart":
                return {"type": "string", "format": "binary", "description": f"{help_text}; JPEG, PNG or WebP"}
            return {
                "type": "string",
                "format": "byte",
                "description": f"{help_text}; base64 of a JPEG, PNG or WebP file (a data: URL works too)",
            }
        if name == f"{image}_face_index":
            return {
                "type": "integer",
                "minimum": 0,
                "description": f"which face of {image} to use when it has several (0 = most confident)",
            }
        if name == f"{image}_aligned":
            return {"type": "boolean", "description": f"{image} already is a square aligned face crop: skip detection"}
    schema, help_text = SCALAR_HELP[name]
    if name in ("expression_vector", "head_box") and encoding == "multipart":
        schema = {"type": "string"}
        help_text += "; a JSON list or comma-separated numbers"
    return {**schema, "description": help_text}


REQUIRED = {"swap": ["identity", "target"], "reenact": ["source"], "generate": ["identity"]}


def request_body(route: str) -> dict[str, Any]:
    """openapi_extra for a POST route: the same fields as multipart and as JSON."""
    names = sorted(ROUTE_FIELDS[route], key=lambda n: (n not in IMAGE_HELP and n != "expression", n))
    content = {}
    for media, encoding in (("multipart/form-data", "multipart"), ("application/json", "json")):
        schema: dict[str, Any] = {
            "type": "object",
            "required": REQUIRED[route],
            "properties": {n: _field_schema(n, encoding) for n in names},
            "additionalProperties": False,
        }
        if route in EXCLUSIVE:
            schema["allOf"] = [{"not": {"required": list(pair)}} for pair in EXCLUSIVE[route]]
        if route in DEPENDENT:
            schema["dependentRequired"] = DEPENDENT[route]
        content[media] = {"schema": schema}
    return {
        "requestBody": {"required": True, "content": content},
        "responses": {
            "200": {
                "description": "the generated image: PNG with provenance text and an invisible watermark "
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
                    "image/png": {},
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
            "401": {"description": "missing or wrong bearer token (only when a token is configured)"},
            "413": {"description": "request or image too large"},
            "415": {"description": "not multipart/JSON, or an image format we do not take"},
            "422": {
                "description": "a field is missing or invalid, no face or several faces, unknown word, "
                "conflicting fields (e.g. background with background_prompt), or background_prompt without a "
                "configured text-to-image model (code text_to_image_not_configured)"
            },
            "429": {"description": "overloaded; retry after the Retry-After header's seconds"},
            "503": {"description": "overloaded or a model replica is restarting; retry after Retry-After"},
        },
    }
