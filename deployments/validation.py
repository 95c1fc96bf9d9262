"""Request validation for the /v1 routes: raw fields in, typed requests or an ApiError out.

Pure functions (no Ray, no HTTP framework), so every rule is unit-tested in milliseconds
(tests/unit/test_api_validation.py). Both request encodings reduce to one `Fields` mapping first:
- multipart/form-data: file parts are bytes, text parts are str;
- application/json: an object whose image fields are base64 strings (plain or data: URLs).

Cheapest checks run first: unknown or missing fields and numbers, then the words, then image
decoding (sfsr.io.images.decode_image, which itself checks bytes, format and pixel count before
decoding). Every failure is an ApiError naming the field, what was wrong and what to do; the
ingress turns it into a JSON 4xx answer.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from sfsr.expressions import UnknownExpressionError, lookup
from sfsr.io.images import ImageError, ImageLimits, decode_image
from sfsr.model_card import INITS

Fields = Mapping[str, Any]  # field name -> bytes (file part), str, or a JSON value

# ImageError.reason -> HTTP status. Too large is 413; not an image format we take is 415;
# everything else about the content (truncated, too small, animated...) is 422.
_IMAGE_STATUS = {"too_many_bytes": 413, "not_an_image": 415, "unsupported_format": 415}
_PARAMS = ("steps", "guidance_identity", "guidance_expression", "seed", "init")
_SCENE = ("background_prompt", "background_seed", "head_box")  # a background made from text


def target_fields(word_field: str) -> tuple[str, str]:
    """The fields that choose where the target of the word in `word_field` comes from."""
    return f"{word_field}_target", f"{word_field}_exemplar"


_TARGET = target_fields("expression")
_TRAVEL = (
    "start",
    "end",
    "start_vector",
    "end_vector",
    "frames",
    "frame_ms",
    *target_fields("start"),
    *target_fields("end"),
)
TARGET_KINDS = ("prototype", "exemplar")  # expression_target values; the first is the default
EXEMPLAR_RANGE = (0, 1000)  # expression_exemplar (the loaded model's bank says how many a word has)
MAX_SEED = 2**31 - 1
FACE_INDEX_RANGE = (0, 1000)  # <field>_face_index
MAX_VECTOR_ABS = 1000.0  # expression_vector values lie within +-this
MAX_PROMPT_CHARS = 500  # CLIP reads 77 tokens (about 300 characters); the rest would be cut off
MIN_HEAD_BOX = 0.1  # a head_box side, as a fraction of the scene's (smaller heads cannot be framed)


class ApiError(Exception):
    """A request we refuse: HTTP `status`, stable `code`, a message that says what to do."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field, self.extra = status, code, message, field, extra

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            err["field"] = self.field
        if request_id:
            err["request_id"] = request_id
        err.update(self.extra)
        return {"error": err}


@dataclass(frozen=True)
class Limits:
    """What the validators accept (from IngressSettings and the loaded model)."""

    image: ImageLimits = ImageLimits()
    default_steps: int = 20
    max_steps: int = 100
    max_guidance: float = 15.0
    default_guidance_identity: float = 2.0
    default_guidance_expression: float = 2.0
    default_init: str = INITS[0]
    expression_dim: int | None = None  # length of an expression vector; None: vectors refused


@dataclass(frozen=True)
class ImageInput:
    """One decoded upload and how to find the face in it."""

    field: str
    image: np.ndarray = field(repr=False)  # (H, W, 3) uint8 RGB
    face_index: int | None = None  # which detected face, when there are several
    aligned: bool = False  # the image already is an aligned face crop: skip detection


@dataclass(frozen=True)
class Params:
    steps: int
    guidance_identity: float
    guidance_expression: float
    seed: int | None  # None: derived from the request id
    init: str = INITS[0]  # what sampling starts from (sfsr.model_card.INITS)


@dataclass(frozen=True)
class SwapRequest:
    identity: ImageInput
    target: ImageInput
    params: Params


@dataclass(frozen=True)
class ExpressionTarget:
    """Where a word's target vector comes from: its prototype, or one of its exemplar faces in the
    model's expression bank (`index` None: the request's seed picks one; deployments/expressions.py)."""

    kind: str = TARGET_KINDS[0]
    index: int | None = None


@dataclass(frozen=True)
class ReenactRequest:
    source: ImageInput
    params: Params
    driver: ImageInput | None = None
    expression: str | None = None  # a vocabulary word (normalised)
    expression_target: ExpressionTarget = ExpressionTarget()


@dataclass(frozen=True)
class GenerateRequest:
    identity: ImageInput
    params: Params
    expression: str | None = None
    expression_image: ImageInput | None = None
    expression_vector: tuple[float, ...] | None = None
    expression_target: ExpressionTarget = ExpressionTarget()  # of the word `expression`
    background: ImageInput | None = None  # None: keep the identity photo's background
    background_prompt: str | None = None  # a background made from this text (deployments/scenes.py)
    background_seed: int | None = None  # None: the request's seed
    head_box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 fractions of the scene


# --- raw bodies -> Fields ---------------------------------------------------------------------


def check_content_type(content_type: str | None) -> str:
    """'json' or 'multipart' from a Content-Type header, else a 415 ApiError."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind == "application/json":
        return "json"
    if kind == "multipart/form-data":
        return "multipart"
    raise ApiError(
        415,
        "unsupported_media_type",
        f"Content-Type {kind or '(none)'} is not accepted; send multipart/form-data (file uploads) "
        "or application/json (images as base64 strings)",
    )


def check_content_length(header: str | None, max_bytes: int) -> None:
    """413 before reading a body whose declared length is over the limit."""
    if header is None:
        return
    try:
        length = int(header)
    except ValueError:
        raise ApiError(400, "bad_content_length", f"Content-Length {header!r} is not a number") from None
    if length > max_bytes:
        raise ApiError(
            413,
            "request_too_large",
            f"the request body is {length} bytes, the limit is {max_bytes} "
            f"({max_bytes / 2**20:.0f} MiB); send smaller images (JPEG quality 90 is plenty)",
        )


def json_fields(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_json", f"the JSON body must be an object of fields, got {type(value).__name__}")
    return value


def multipart_fields(items: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """(name, bytes | str) pairs of a parsed form -> Fields; a name given twice is refused."""
    out: dict[str, Any] = {}
    for name, value in items:
        if name in out:
            raise ApiError(422, "duplicate_field", f"field {name!r} was sent more than once; send it once", name)
        out[name] = value
    return out


# --- scalar fields ----------------------------------------------------------------------------


def _integer(raw: Any) -> int:
    """An integer field: 3, "3", or a number with no fraction (3.0, "3.0", "3e2"), as JSON Schema's
    "integer" counts them; "2.5" raises ValueError."""
    text = str(raw).strip()
    try:
        return int(text)
    except ValueError:
        value = float(text)
        if not value.is_integer():
            raise ValueError(f"{text!r} has a fraction") from None
        return int(value)


def _number(fields: Fields, name: str, kind: type, default: Any, lo: float, hi: float) -> Any:
    raw = fields.get(name)
    if raw is None or raw == "":
        return default
    if isinstance(raw, bool) or isinstance(raw, (bytes, dict, list)):
        raise ApiError(422, "invalid_field", f"{name} must be a number, got {type(raw).__name__}", name)
    try:
        value = kind(raw) if kind is float else _integer(raw)
    except (TypeError, ValueError, OverflowError):
        raise ApiError(
            422,
            "invalid_field",
            f"{name} must be {'an integer' if kind is int else 'a number'}, got {str(raw)[:40]!r}",
            name,
        ) from None
    if kind is float and not math.isfinite(value):
        raise ApiError(422, "invalid_field", f"{name} must be finite, got {raw!r}", name)
    if not lo <= value <= hi:
        raise ApiError(422, "out_of_range", f"{name}={value} is outside [{lo}, {hi}]", name)
    return value


def integer_field(fields: Fields, name: str, default: int, lo: int, hi: int) -> int:
    """An optional integer field within [lo, hi] (`default` when absent)."""
    return _number(fields, name, int, default, lo, hi)


def _bool(fields: Fields, name: str) -> bool:
    raw = fields.get(name)
    if raw is None or raw == "":
        return False
    if isinstance(raw, bool):
        return raw
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ApiError(422, "invalid_field", f"{name} must be true or false, got {text[:20]!r}", name)


def _text(fields: Fields, name: str) -> str | None:
    raw = fields.get(name)
    if raw is None:
        return None
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(422, "invalid_field", f"{name} must be UTF-8 text", name) from None
    if not isinstance(raw, str):
        raise ApiError(422, "invalid_field", f"{name} must be a string, got {type(raw).__name__}", name)
    return raw.strip() or None


def params(fields: Fields, limits: Limits) -> Params:
    return Params(
        steps=_number(fields, "steps", int, limits.default_steps, 1, limits.max_steps),
        guidance_identity=_number(
            fields, "guidance_identity", float, limits.default_guidance_identity, 0.0, limits.max_guidance
        ),
        guidance_expression=_number(
            fields, "guidance_expression", float, limits.default_guidance_expression, 0.0, limits.max_guidance
        ),
        seed=_number(fields, "seed", int, None, 0, MAX_SEED),
        init=_choice(fields, "init", INITS, limits.default_init),
    )


def _choice(fields: Fields, name: str, choices: Sequence[str], default: str) -> str:
    value = _text(fields, name)
    if value is None:
        return default
    if value not in choices:
        raise ApiError(422, "invalid_field", f"{name} must be one of {list(choices)}, got {value[:40]!r}", name)
    return value


def expression_word(fields: Fields, name: str = "expression") -> str | None:
    word = _text(fields, name)
    if word is None:
        return None
    try:
        return lookup(word).word
    except UnknownExpressionError as e:
        raise ApiError(422, "unknown_expression", str(e), name, suggestions=list(e.suggestions)) from None


def expression_target(fields: Fields, word: str | None, word_field: str = "expression") -> ExpressionTarget:
    """<word_field>_target and <word_field>_exemplar (expression_target, start_target, ...): they
    choose the target of a word, so they come with the word only, and an exemplar index only with
    <word_field>_target=exemplar (as the schema says: deployments/openapi.py target_rules). Whether
    the model has that exemplar is the generator's to say (deployments/expressions.py)."""
    target, exemplar = target_fields(word_field)
    index = _number(fields, exemplar, int, None, *EXEMPLAR_RANGE)
    sent = [n for n in (target, exemplar) if n in fields]
    if sent and word is None:
        raise ApiError(
            422,
            "conflicting_fields",
            f"{' and '.join(sent)} choose where the target of a word ({word_field}) comes from; an image or a "
            f"vector is its own target: drop {' and '.join(sent)}",
            sent[0],
        )
    raw = fields.get(target, TARGET_KINDS[0])
    kind = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    if kind not in TARGET_KINDS:
        raise ApiError(
            422,
            "invalid_field",
            f"{target} must be one of {list(TARGET_KINDS)} (default {TARGET_KINDS[0]!r}), got {str(kind)[:40]!r}",
            target,
        )
    if exemplar in fields and kind != "exemplar":
        raise ApiError(
            422,
            "missing_field",
            f"{exemplar} picks one of the word's exemplar faces: send {target}=exemplar with it "
            "(or drop it for the word's prototype target)",
            target,
        )
    return ExpressionTarget(kind, index)


def _number_list(fields: Fields, name: str) -> list[Any] | None:
    """A JSON list, or (multipart) its text or comma-separated numbers -> a list of numbers."""
    raw = fields.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, (str, bytes)):  # multipart: a JSON list or comma-separated numbers
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            raw = json.loads(text) if text.strip().startswith("[") else [float(v) for v in text.split(",")]
        except (ValueError, json.JSONDecodeError):
            raise ApiError(
                422,
                "invalid_field",
                f"{name} must be a JSON list of numbers or comma-separated numbers, got {text[:40]!r}",
                name,
            ) from None
    if not isinstance(raw, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw):
        raise ApiError(422, "invalid_field", f"{name} must be a list of numbers", name)
    return raw


def expression_vector(fields: Fields, limits: Limits, name: str = "expression_vector") -> tuple[float, ...] | None:
    raw = _number_list(fields, name)
    if raw is None:
        return None
    if limits.expression_dim is None:
        raise ApiError(
            422,
            "unsupported_field",
            f"the loaded model does not take {name}; use expression (a word) or expression_image",
            name,
        )
    if len(raw) != limits.expression_dim:
        raise ApiError(
            422,
            "vector_length",
            f"{name} has {len(raw)} values; the loaded model's expression space "
            f"has {limits.expression_dim} (GET /v1/info lists it)",
            name,
        )
    values = tuple(float(v) for v in raw)
    if not all(math.isfinite(v) and abs(v) <= MAX_VECTOR_ABS for v in values):
        raise ApiError(422, "invalid_field", f"{name} values must be finite numbers within +-{MAX_VECTOR_ABS:g}", name)
    return values


# --- images -----------------------------------------------------------------------------------


def image_bytes(raw: Any, name: str, limits: ImageLimits) -> bytes:
    """A file part's bytes, or base64 text (a data: URL too) decoded to bytes."""
    if isinstance(raw, (bytes, bytearray)):
        return bytes(raw)
    if not isinstance(raw, str):
        raise ApiError(
            422,
            "invalid_field",
            f"{name} must be an image file (multipart) or a base64 string (JSON), got {type(raw).__name__}",
            name,
        )
    text = raw.strip()
    if text.startswith("data:"):
        head, _, text = text.partition(",")
        if ";base64" not in head:
            raise ApiError(422, "invalid_base64", f"{name}: a data: URL must be base64-encoded", name)
    # base64 grows data by 4/3: refuse before decoding what would exceed the image limit
    if len(text) * 3 // 4 > limits.max_bytes + 3:
        raise ApiError(
            413,
            "image_too_many_bytes",
            f"{name}: about {len(text) * 3 // 4} bytes, the limit is {limits.max_bytes}; send a smaller image",
            name,
        )
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(
            422,
            "invalid_base64",
            f"{name} is not valid base64; encode the image file's bytes with standard base64 (RFC 4648)",
            name,
        ) from None


def decode_field(raw: Any, name: str, limits: ImageLimits) -> np.ndarray:
    data = image_bytes(raw, name, limits)
    try:
        return decode_image(data, source=name, limits=limits)
    except ImageError as e:
        raise ApiError(_IMAGE_STATUS.get(e.reason, 422), f"image_{e.reason}", str(e), name) from None


def _present(fields: Fields, name: str) -> bool:
    return fields.get(name) not in (None, "", b"")


def require_images(fields: Fields, *names: str) -> None:
    """Missing required images are reported before any image is decoded (cheap checks first)."""
    for name in names:
        if not _present(fields, name):
            raise ApiError(
                422, "missing_field", f"{name} is required: an image file (multipart) or a base64 string (JSON)", name
            )


def image_input(fields: Fields, name: str, limits: Limits, required: bool) -> ImageInput | None:
    if not _present(fields, name):
        if required:
            require_images(fields, name)
        return None
    raw = fields[name]
    face_index = _number(fields, f"{name}_face_index", int, None, *FACE_INDEX_RANGE)
    aligned = _bool(fields, f"{name}_aligned")
    return ImageInput(name, decode_field(raw, name, limits.image), face_index, aligned)


def _image_field_names(*names: str) -> set[str]:
    return {f"{n}{suffix}" for n in names for suffix in ("", "_face_index", "_aligned")}


ROUTE_FIELDS: dict[str, frozenset[str]] = {
    "swap": frozenset(_image_field_names("identity", "target") | set(_PARAMS)),
    "reenact": frozenset(_image_field_names("source", "driver") | {"expression"} | set(_TARGET) | set(_PARAMS)),
    "generate": frozenset(
        _image_field_names("identity", "expression_image", "background")
        | {"expression", "expression_vector"}
        | set(_TARGET)
        | set(_PARAMS)
        | set(_SCENE)
    ),
    "travel": frozenset(
        _image_field_names("identity", "background", "start_image", "end_image") | set(_TRAVEL) | set(_PARAMS)
    ),
}


def check_known_fields(fields: Fields, route: str) -> None:
    unknown = sorted(set(fields) - ROUTE_FIELDS[route])
    if unknown:
        raise ApiError(
            422, "unknown_field", f"{route} does not take {unknown}; it takes {sorted(ROUTE_FIELDS[route])}", unknown[0]
        )


def parse_swap(fields: Fields, limits: Limits) -> SwapRequest:
    check_known_fields(fields, "swap")
    p = params(fields, limits)
    require_images(fields, "identity", "target")
    return SwapRequest(image_input(fields, "identity", limits, True), image_input(fields, "target", limits, True), p)


def parse_reenact(fields: Fields, limits: Limits) -> ReenactRequest:
    check_known_fields(fields, "reenact")
    p = params(fields, limits)
    require_images(fields, "source")
    has_driver = _present(fields, "driver")
    word = expression_word(fields)
    if has_driver == (word is not None):
        raise ApiError(
            422,
            "missing_field" if not has_driver else "conflicting_fields",
            "reenact needs exactly one of driver (an image whose expression to copy) or expression "
            "(a word from GET /v1/expressions)",
            "driver" if has_driver else "expression",
        )
    target = expression_target(fields, word)
    return ReenactRequest(
        image_input(fields, "source", limits, True),
        p,
        driver=image_input(fields, "driver", limits, False),
        expression=word,
        expression_target=target,
    )


def background_prompt(fields: Fields, name: str = "background_prompt") -> str | None:
    text = _text(fields, name)
    if text is not None and len(fields[name]) > MAX_PROMPT_CHARS:  # as sent, before stripping
        raise ApiError(
            422,
            "out_of_range",
            f"{name} has {len(fields[name])} characters, the limit is {MAX_PROMPT_CHARS}; describe the scene "
            "more briefly (the text encoder reads about 75 words)",
            name,
        )
    return text


def head_box(fields: Fields, name: str = "head_box") -> tuple[float, float, float, float] | None:
    raw = _number_list(fields, name)
    if raw is None:
        return None
    box = tuple(float(v) for v in raw)
    if len(box) != 4 or not all(0.0 <= v <= 1.0 for v in box):
        raise ApiError(422, "invalid_field", f"{name} must be 4 numbers in [0, 1], got {list(box)[:6]}", name)
    if box[2] - box[0] < MIN_HEAD_BOX or box[3] - box[1] < MIN_HEAD_BOX:  # what the schema cannot say
        raise ApiError(
            422,
            "invalid_head_box",
            f"{name} must be 4 numbers x1, y1, x2, y2 in [0, 1] (fractions of the background's width and "
            f"height) with x2 - x1 and y2 - y1 at least {MIN_HEAD_BOX}, got {list(box)[:6]}",
            name,
        )
    return box  # type: ignore[return-value]


def scene_fields(fields: Fields) -> tuple[str | None, int | None, tuple[float, float, float, float] | None]:
    """(background_prompt, background_seed, head_box): the background made from text, if asked."""
    prompt = background_prompt(fields)
    seed = _number(fields, "background_seed", int, None, 0, MAX_SEED)
    box = head_box(fields)
    # by the fields sent, as the OpenAPI schema says (a blank prompt is sent, but makes no scene)
    sent = "background_prompt" in fields
    if sent and "background" in fields:
        raise ApiError(
            422,
            "conflicting_fields",
            "send either background (a photo) or background_prompt (a text the server turns into a "
            "background), not both",
            "background_prompt",
        )
    if not sent and ("background_seed" in fields or "head_box" in fields):
        used = "background_seed" if "background_seed" in fields else "head_box"
        raise ApiError(
            422,
            "missing_field",
            f"{used} applies to a background made from text; send background_prompt too, or drop {used}",
            "background_prompt",
        )
    return prompt, seed, box


def parse_generate(fields: Fields, limits: Limits) -> GenerateRequest:
    check_known_fields(fields, "generate")
    p = params(fields, limits)
    require_images(fields, "identity")
    word = expression_word(fields)
    vector = expression_vector(fields, limits)
    has_image = _present(fields, "expression_image")
    prompt, scene_seed, box = scene_fields(fields)
    given = [n for n, v in (("expression", word), ("expression_vector", vector), ("expression_image", has_image)) if v]
    if len(given) != 1:
        raise ApiError(
            422,
            "missing_field" if not given else "conflicting_fields",
            f"generate needs exactly one of expression (a word), expression_image or expression_vector; "
            f"got {given or 'none'}",
            given[1] if len(given) > 1 else "expression",
        )
    target = expression_target(fields, word)
    if prompt and p.init == "inversion":
        # inversion starts from the background's own face; a scene made from text has none
        if _text(fields, "init") is not None:
            raise ApiError(
                422,
                "conflicting_fields",
                "init=inversion starts from the background's own face, and a background made from "
                "background_prompt has none; send init=noise or leave init out",
                "init",
            )
        p = replace(p, init="noise")
    return GenerateRequest(
        image_input(fields, "identity", limits, True),
        p,
        expression=word,
        expression_image=image_input(fields, "expression_image", limits, False),
        expression_vector=vector,
        expression_target=target,
        background=image_input(fields, "background", limits, False),
        background_prompt=prompt,
        background_seed=scene_seed,
        head_box=box,
    )


def choose_face(faces: Sequence[Any], inp: ImageInput) -> Any:
    """The face the request means: the only one, or the one `<field>_face_index` picks."""
    h, w = inp.image.shape[:2]
    boxes = [[round(float(v), 1) for v in f.bbox] for f in faces]
    if not faces:
        raise ApiError(
            422,
            "no_face",
            f"{inp.field}: no face found in the {w}x{h} image; send a photo with one "
            f"clearly visible, roughly frontal face at least 80 px wide (or an aligned face crop with "
            f"{inp.field}_aligned=true)",
            inp.field,
            faces=[],
        )
    if inp.face_index is None:
        if len(faces) > 1:
            raise ApiError(
                422,
                "several_faces",
                f"{inp.field}: {len(faces)} faces found; choose one with "
                f"{inp.field}_face_index (0 to {len(faces) - 1}, 0 = the most confident; boxes "
                "x1, y1, x2, y2 in the faces list)",
                inp.field,
                faces=boxes,
            )
        return faces[0]
    if inp.face_index >= len(faces):
        raise ApiError(
            422,
            "face_index_out_of_range",
            f"{inp.field}_face_index={inp.face_index} but only "
            f"{len(faces)} face(s) were found (indices 0 to {len(faces) - 1})",
            f"{inp.field}_face_index",
            faces=boxes,
        )
    return faces[inp.face_index]
