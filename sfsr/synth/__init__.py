"""Procedural faces with known identity, expression, pose and background factors, and the
judge networks that read those factors back (see factors.py for the factor definitions,
dataset.py for the held-out split, judges.py for the networks).

Torch is only imported by the judges: `from sfsr.synth import render` stays numpy/OpenCV.
"""

from sfsr.synth.dataset import (
    SPLITS,
    draw_sample,
    expression_region,
    held_out_family,
    render_batch,
    sample_dataset,
)
from sfsr.synth.factors import (
    EXPRESSION_FACTORS,
    EXPRESSION_RANGES,
    FAMILIES,
    NEUTRAL_EXPRESSION,
    IdentityParams,
    Pose,
    SynthSample,
    family_prototype,
    identity_params,
    make_sample,
    synth_params_json,
)
from sfsr.synth.render import render


def load_judges(size: int = 32, **kwargs):  # noqa: ANN201 - lazy import keeps torch optional
    """See sfsr.synth.judges.load_judges (imported lazily so rendering needs no torch)."""
    from sfsr.synth.judges import load_judges as _load

    return _load(size, **kwargs)


__all__ = [
    "EXPRESSION_FACTORS",
    "EXPRESSION_RANGES",
    "FAMILIES",
    "NEUTRAL_EXPRESSION",
    "SPLITS",
    "IdentityParams",
    "Pose",
    "SynthSample",
    "draw_sample",
    "expression_region",
    "family_prototype",
    "held_out_family",
    "identity_params",
    "load_judges",
    "make_sample",
    "render",
    "render_batch",
    "sample_dataset",
    "synth_params_json",
]
