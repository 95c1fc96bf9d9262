"""The synthetic faces' condition provider (see sfsr.conditions): the 32 px judges read identity
and expression factors, and each word maps to its own target (sfsr.synth.words). The cpu-demo model is
conditioned on these."""

from __future__ import annotations

from typing import Any

from sfsr.conditions import SYNTH_EXPRESSION_ENCODER, SYNTH_IDENTITY_ENCODER, ConditionEncoders
from sfsr.expressions import ExpressionTargets
from sfsr.expressions.targets import ExpressionSpace
from sfsr.synth import factors


def expression_targets(bank: Any | None = None) -> ExpressionTargets:
    """Targets in the synthetic-face space: a family at an intensity is
    sfsr.synth.factors.family_prototype, a word its own target (sfsr.synth.words)."""
    from sfsr.synth.words import SynthWordPrototypes

    space = ExpressionSpace(
        "synth",
        len(factors.EXPRESSION_FACTORS),
        tuple(factors.EXPRESSION_FACTORS),
        low=tuple(float(v) for v in factors.EXPRESSION_LOW),
        high=tuple(float(v) for v in factors.EXPRESSION_HIGH),
    )
    return ExpressionTargets(space, bank=bank, prototype_fn=SynthWordPrototypes())


def condition_encoders() -> ConditionEncoders:
    """The synth judges (32 px) and the synthetic-factor word targets (the cpu-demo model's)."""
    from sfsr.synth.judges import load_judges  # torch and the judge weights, only when asked

    judges = load_judges(size=32)
    return ConditionEncoders(
        SYNTH_IDENTITY_ENCODER,
        SYNTH_EXPRESSION_ENCODER,
        judges.identity_embedding_np,
        judges.expression_np,
        expression_targets(),
    )
