"""The 135-word expression vocabulary (Shaver et al. 1987) and word -> expression targets."""

from sfsr.expressions.bank import ExpressionBank
from sfsr.expressions.targets import (
    FAMILY_MIXTURES,
    FER_CLASSES,
    SUBCLUSTER_MIXTURES,
    ExpressionSpace,
    ExpressionTargets,
    FerPrototypes,
    builtin_face_space,
    interpolate,
    space_from_output_spec,
)
from sfsr.expressions.vocabulary import (
    FAMILIES,
    WORDS,
    ExpressionWord,
    UnknownExpressionError,
    lookup,
    suggest,
    words_by_family,
)

__all__ = [
    "FAMILIES",
    "FAMILY_MIXTURES",
    "FER_CLASSES",
    "SUBCLUSTER_MIXTURES",
    "WORDS",
    "ExpressionBank",
    "ExpressionSpace",
    "ExpressionTargets",
    "ExpressionWord",
    "FerPrototypes",
    "UnknownExpressionError",
    "builtin_face_space",
    "interpolate",
    "lookup",
    "space_from_output_spec",
    "suggest",
    "words_by_family",
]
