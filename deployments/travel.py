"""Expression travel over HTTP: POST /v1/travel -> N frames from one expression to another.

One identity, one background and one seed for every frame; only the expression moves, linearly
from `start` to `end` (each a word, a face photo or a vector; Generator.travel_vectors). The
ingress sends one generate job per frame, which the generator's batcher runs together, pastes
every frame back into the background photo and marks each (watermark, provenance text). The
answer is an animated PNG (APNG: every browser plays it in an <img>), or with
`Accept: application/json` the animation and each frame as data: URLs, for a slider.

Pure parsing and encoding, no Ray: tests/unit/test_travel.py.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from deployments import compose
from deployments import validation as v
from deployments.settings import IngressSettings
from sfsr import c2pa_sign, watermark

FRAMES = (2, 32)  # both ends included; sfsr.generate.MAX_TRAVEL_FRAMES is the upper bound too
DEFAULT_FRAMES = 8
FRAME_MS = (20, 2000)  # how long each frame shows in the animation
DEFAULT_FRAME_MS = 150


@dataclass(frozen=True)
class End:
    """One end of a travel: exactly one of a word, a face image or a vector."""

    field: str  # start or end
    word: str | None = None
    image: v.ImageInput | None = None
    vector: tuple[float, ...] | None = None
    target: v.ExpressionTarget = v.ExpressionTarget()  # of the word: <field>_target, <field>_exemplar


@dataclass(frozen=True)
class TravelRequest:
    identity: v.ImageInput
    start: End
    end: End
    params: v.Params
    frames: int
    frame_ms: int
    background: v.ImageInput | None = None  # None: the identity photo


def _end(fields: v.Fields, limits: v.Limits, name: str) -> End:
    word = v.expression_word(fields, name)
    vector = v.expression_vector(fields, limits, f"{name}_vector")
    has_image = v._present(fields, f"{name}_image")
    given = [n for n, x in ((name, word), (f"{name}_vector", vector), (f"{name}_image", has_image)) if x]
    if len(given) != 1:
        raise v.ApiError(
            422,
            "missing_field" if not given else "conflicting_fields",
            f"travel needs exactly one of {name} (a word), {name}_image or {name}_vector; got {given or 'none'}",
            given[1] if len(given) > 1 else name,
        )
    target = v.expression_target(fields, word, name)
    image = v.image_input(fields, f"{name}_image", limits, False)
    return End(name, word=word, image=image, vector=vector, target=target)


def parse_travel(fields: v.Fields, limits: v.Limits) -> TravelRequest:
    v.check_known_fields(fields, "travel")
    p = v.params(fields, limits)
    frames = v.integer_field(fields, "frames", DEFAULT_FRAMES, *FRAMES)
    frame_ms = v.integer_field(fields, "frame_ms", DEFAULT_FRAME_MS, *FRAME_MS)
    v.require_images(fields, "identity")
    start, end = _end(fields, limits, "start"), _end(fields, limits, "end")
    return TravelRequest(
        v.image_input(fields, "identity", limits, True),  # type: ignore[arg-type]
        start,
        end,
        p,
        frames,
        frame_ms,
        background=v.image_input(fields, "background", limits, False),
    )


def end_item(end: End, crop: np.ndarray | None, exemplar: tuple[float, ...] | None = None) -> Any:
    """What Generator.travel_vectors takes for this end: the word (or the vector of the word's
    exemplar face, when one was chosen), the aligned face crop or the vector."""
    if exemplar is not None:
        return np.asarray(exemplar, np.float32)
    if end.word is not None:
        return end.word
    if end.vector is not None:
        return np.asarray(end.vector, np.float32)
    if crop is None:
        raise ValueError(f"travel {end.field}: an image end needs its aligned face crop")
    return crop


def encode_animation(frames: list[np.ndarray], frame_ms: int, text: dict[str, str]) -> bytes:
    """Frames (H, W, 3) uint8 of one size -> an animated PNG that loops, with `text` as tEXt chunks."""
    if not frames or len({f.shape for f in frames}) != 1:
        raise ValueError(f"encode_animation: need frames of one shape, got {[f.shape for f in frames]}")
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    images = [Image.fromarray(f) for f in frames]
    buf = io.BytesIO()
    images[0].save(buf, format="PNG", save_all=True, append_images=images[1:], duration=frame_ms, loop=0, pnginfo=info)
    return buf.getvalue()


def finish_frames(
    photo: np.ndarray,
    crops: list[np.ndarray],
    face: Any,
    meta: dict[str, Any],
    frame_ms: int,
    frames_too: bool,
    settings: IngressSettings,
) -> tuple[bytes, list[bytes]]:
    """Each generated crop pasted back into `photo` and watermarked; the animated PNG (provenance
    text, signed), and each frame as its own marked, signed PNG when `frames_too`."""
    text = watermark.provenance(
        meta["model"],
        meta["model_version"],
        meta["request_id"],
        route="travel",
        seed=str(meta["seed"]),
        trained_on=str(meta["trained_on"]),
        licence=str(meta["licence"]),
        travel=f"{meta['start']} -> {meta['end']}, {meta['frames']} frames",
        **({"warning": meta["warning"]} if meta["warning"] else {}),
    )
    marked = []
    for crop in crops:
        image = compose.paste_back(photo, crop, face.align_matrix, face.mask, settings.feather)
        marked.append(watermark.embed(compose.fit_output(image, settings.max_output_side)))
    claim = c2pa_sign.Claim(meta["model"], meta["model_version"], meta["request_id"])
    credentials = settings.c2pa_credentials()
    animation = c2pa_sign.sign_png(encode_animation(marked, frame_ms, text), claim, credentials)
    if not frames_too:
        return animation, []
    return animation, [c2pa_sign.sign_png(watermark.encode_png(m, text), claim, credentials) for m in marked]
