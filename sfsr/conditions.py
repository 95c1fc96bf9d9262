"""What turns images and words into a model's condition vectors, found by the names in its config.

A model's config names its identity and expression encoders (`identity_encoder`,
`expression_encoder`). `encoders_for` finds the provider that builds them and imports it only
then, so nothing here (and nothing that imports this: sfsr.model, sfsr.generate) imports a face
pack or sfsr.synth it does not use. A provider is a module with:

    condition_encoders() -> ConditionEncoders          # encoders + word targets, ready to call
    expression_targets(bank=None) -> ExpressionTargets  # words -> vectors in its expression space
                                                        # (sfsr.expressions.targets_for_space)

Registered: the synthetic-face judges of sfsr.synth (sfsr/synth/conditioning.py), which condition
the committed cpu-demo model. Every other name is a face-pack encoder, written `PACK/ENCODER@VERSION`
(jobs.ingest records it in the face table and jobs.train copies it into the model's config, e.g.
`builtin/dlib-resnet-v1@1`): the pack is opened by name (`builtin`, or a folder under
$SFSR_PACKS_DIR, see sfsr.faces.pack.resolve), and its encoder must have that name and version;
a missing pack or a different version is refused naming both. Names without `PACK/` (tables
ingested before packs were recorded) are looked up in the builtin pack.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sfsr.expressions import ExpressionTargets

SYNTH_IDENTITY_ENCODER = "synth-judge-identity-32px"
SYNTH_EXPRESSION_ENCODER = "synth-judge-factors-32px"

# (identity encoder, expression encoder) -> provider module
PROVIDERS: dict[tuple[str, str], str] = {(SYNTH_IDENTITY_ENCODER, SYNTH_EXPRESSION_ENCODER): "sfsr.synth.conditioning"}


@dataclass
class ConditionEncoders:
    """What turns images and words into a model's condition vectors."""

    identity_name: str
    expression_name: str
    identity: Any  # callable: uint8 (B, S, S, 3) -> float32 (B, Di)
    expression: Any  # callable: uint8 (B, S, S, 3) -> float32 (B, De)
    targets: ExpressionTargets  # word -> expression vector in the same space


class ConditionsError(ValueError):
    """A model's encoders cannot be built here: the message names the pack, encoder and remedy."""


@dataclass(frozen=True)
class EncoderRef:
    """`PACK/ENCODER@VERSION`, the name of a face-pack encoder in tables and model configs."""

    pack: str
    encoder: str
    version: str

    def __str__(self) -> str:
        return f"{self.pack}/{self.encoder}@{self.version}"

    @classmethod
    def parse(cls, text: str) -> EncoderRef:
        pack, sep, rest = text.rpartition("/")
        encoder, at, version = rest.partition("@")
        if not at or not encoder or not version or (sep and not pack):
            raise ConditionsError(
                f"encoder name {text!r}: expected PACK/ENCODER@VERSION (e.g. builtin/dlib-resnet-v1@1) "
                "or one of the registered names " + ", ".join(sorted({n for pair in PROVIDERS for n in pair}))
            )
        return cls(pack or "builtin", encoder, version)


def encoder_ref(pack_name: str, encoder: Any) -> str:
    """The name a face table and a model config record for `encoder` (with .name, .version) of a pack."""
    return str(EncoderRef(pack_name, encoder.name, encoder.version))


def encoders_for(identity_name: str, expression_name: str) -> ConditionEncoders:
    """The encoders a model conditioned on these encoder names needs, built by their provider."""
    module = PROVIDERS.get((identity_name, expression_name))
    if module is not None:
        return importlib.import_module(module).condition_encoders()
    return pack_encoders(EncoderRef.parse(identity_name), EncoderRef.parse(expression_name))


def pack_encoders(identity: EncoderRef, expression: EncoderRef) -> ConditionEncoders:
    """Open the packs the two encoders come from, check each encoder's name and version, and
    wrap them with word targets in the expression encoder's space."""
    from functools import partial

    from sfsr.expressions.targets import FER_CLASSES, ExpressionTargets, space_from_output_spec
    from sfsr.faces.analyze import encode_with
    from sfsr.faces.pack import PackError, open_pack

    packs: dict[str, Any] = {}
    for ref, role in ((identity, "identity"), (expression, "expression")):
        if ref.pack not in packs:
            try:
                packs[ref.pack] = open_pack(ref.pack)
            except PackError as err:
                raise ConditionsError(
                    f"the model's {role} encoder {ref} comes from face pack {ref.pack!r}, which cannot be opened "
                    f"here: {err}. Install it (sfsr packs init FOLDER, under $SFSR_PACKS_DIR) or serve the model "
                    "where it is"
                ) from err
        have = getattr(packs[ref.pack], role)
        if (have.name, have.version) != (ref.encoder, ref.version):
            raise ConditionsError(
                f"the model's {role} encoder is {ref}, but face pack {ref.pack!r} here has {role} encoder "
                f"{have.name}@{have.version}: condition vectors of another encoder or version mean nothing to this "
                "model; use the pack it was trained with"
            )
    id_enc, ex_enc = packs[identity.pack].identity, packs[expression.pack].expression
    space = space_from_output_spec(f"{expression.pack}/{expression.encoder}", ex_enc.output)
    fer = space.components[: len(FER_CLASSES)] == FER_CLASSES
    targets = ExpressionTargets.for_builtin(space) if fer else ExpressionTargets(space)
    return ConditionEncoders(
        str(identity), str(expression), partial(encode_with, id_enc), partial(encode_with, ex_enc), targets
    )


def _same_encoder(a: str, b: str) -> bool:
    """Equal names, or the same pack encoder written with and without its (builtin) pack."""
    if a == b:
        return True
    try:
        return EncoderRef.parse(a) == EncoderRef.parse(b)
    except ConditionsError:
        return False


def table_mismatch(model_config: Mapping[str, Any], table: Any) -> str | None:
    """Why a face table (sfsr.io.schema.TableInfo) does not fit a model (its config), or None:
    vectors from other encoders or of other sizes, or crops smaller than the model's resolution
    (they would be upscaled: another framing than the one the model learned)."""
    problems = []
    for role in ("identity", "expression"):
        want, have = model_config.get(f"{role}_encoder"), getattr(table, f"{role}_model", None)
        if want and have and not _same_encoder(want, have):
            problems.append(f"its {role} vectors come from {have}, the model is conditioned on {want}")
        want_dim, have_dim = model_config.get(f"{role}_dim"), getattr(table, f"{role}_dim", None)
        if want_dim and have_dim and want_dim != have_dim:
            problems.append(f"its {role} vectors have {have_dim} values, the model takes {want_dim}")
    framing, made = model_config.get("framing"), getattr(table, "framing", None)
    if framing and made and framing != made:
        problems.append(f"its crops were framed {made}, the model's {framing}")
    size, crop = model_config.get("image_size"), getattr(table, "crop_size", None)
    if size and crop and crop < size:
        problems.append(f"its crops are {crop} px, smaller than the model's {size} px")
    return "; ".join(problems) or None
