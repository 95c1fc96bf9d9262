"""What turns images and words into a model's condition vectors, found by the names in its config.

A model's config names its identity and expression encoders (`identity_encoder`,
`expression_encoder`). `encoders_for` finds the provider that builds them and imports it only
then, so nothing here (and nothing that imports this: sfsr.model, sfsr.generate) imports a face
pack or sfsr.synth it does not use. A provider is a module with:

    condition_encoders() -> ConditionEncoders          # encoders + word targets, ready to call
    expression_targets(bank=None) -> ExpressionTargets  # words -> vectors in its expression space
                                                        # (sfsr.expressions.targets_for_space)

Today one provider is registered, the synthetic-face judges of sfsr.synth (sfsr/synth/conditioning.py),
which condition the committed cpu-demo model. A model with other encoder names needs its
encoders passed in (Generator(..., encoders=ConditionEncoders(...))).
"""

from __future__ import annotations

import importlib
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


def encoders_for(identity_name: str, expression_name: str) -> ConditionEncoders:
    """The encoders a model conditioned on these encoder names needs, built by their provider."""
    module = PROVIDERS.get((identity_name, expression_name))
    if module is None:
        known = ", ".join(f"{i} + {e}" for i, e in PROVIDERS)
        raise ValueError(
            f"model was trained with identity encoder {identity_name!r} and expression encoder {expression_name!r}; "
            f"sfsr builds only these itself: {known}. Pass encoders=ConditionEncoders(...) wrapping that face "
            "pack's encoders"
        )
    return importlib.import_module(module).condition_encoders()
