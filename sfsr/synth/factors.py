"""The known factors of a synthetic face: identity, expression, pose and background.

Everything here is pure data and deterministic functions of integers, so a face can be
re-created anywhere from its `SynthSample` alone (seeds derive from ids, see DESIGN.md).

Identity
    `identity_params(identity_id)` maps an integer to an `IdentityParams`. The four most
    visible discrete attributes are assigned by residues (Chinese-remainder style) so that
    nearby ids never share them by accident:

        skin_tone  = id % 7      hair_colour = id % 8
        hair_style = id % 9      eye_colour  = id % 5

    Two ids i != j share an attribute only when i - j is a multiple of its radix, so any two
    ids below 280 (= 7 * 8 * 5) differ in at least two of these four attributes, and all
    2520 ids below lcm(7, 8, 9, 5) have a distinct combination. Continuous attributes (face
    width, jaw, eye spacing and size, nose, ears, brows, lips) and the minor discrete ones
    (nose style, facial hair) come from a generator seeded by the id.

Expression
    A float32 vector in `EXPRESSION_FACTORS` order; ranges in `EXPRESSION_RANGES`:

        mouth_curve  [-1, 1]  -1 frown (corners down), +1 smile (corners up), 0 neutral
        mouth_open   [ 0, 1]   0 lips closed, 1 jaw fully dropped
        mouth_width  [-1, 1]  -1 pursed / "O", +1 stretched wide, 0 neutral
        brow_raise   [-1, 1]  -1 lowered, +1 raised high, 0 neutral
        brow_angle   [-1, 1]  +1 inner ends pulled down (anger), -1 inner ends up (sad, fear)
        eye_open     [ 0, 1]   0 closed, 0.5 neutral, 1 wide open
        blush        [ 0, 1]   pink cheeks (love, joy)

    `family_prototype(family, intensity)` interpolates linearly from `NEUTRAL_EXPRESSION`
    (intensity 0) to the family's apex (intensity 1) for the six families in `FAMILIES`.

Pose
    yaw, pitch, roll in degrees; the renderer treats the head as a sphere and rotates the
    features on it (yaw > 0 turns the face to the image's right, pitch > 0 tilts it down,
    roll > 0 rotates it clockwise on screen). The dataset samples |angle| <= `MAX_POSE_DEG`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

EXPRESSION_FACTORS: tuple[str, ...] = (
    "mouth_curve",
    "mouth_open",
    "mouth_width",
    "brow_raise",
    "brow_angle",
    "eye_open",
    "blush",
)
EXPRESSION_RANGES: dict[str, tuple[float, float]] = {
    "mouth_curve": (-1.0, 1.0),
    "mouth_open": (0.0, 1.0),
    "mouth_width": (-1.0, 1.0),
    "brow_raise": (-1.0, 1.0),
    "brow_angle": (-1.0, 1.0),
    "eye_open": (0.0, 1.0),
    "blush": (0.0, 1.0),
}
EXPRESSION_LOW = np.array([EXPRESSION_RANGES[f][0] for f in EXPRESSION_FACTORS], np.float32)
EXPRESSION_HIGH = np.array([EXPRESSION_RANGES[f][1] for f in EXPRESSION_FACTORS], np.float32)
NEUTRAL_EXPRESSION = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.0], np.float32)

FAMILIES: tuple[str, ...] = ("love", "joy", "surprise", "anger", "sadness", "fear")
# Apex (intensity 1) of each family, in EXPRESSION_FACTORS order. Chosen so every pair of
# families differs strongly in at least two factors that read at 32 px (mouth shape, brows).
_FAMILY_APEX: dict[str, tuple[float, ...]] = {
    #            curve  open  width  raise angle  eye  blush
    "love": (0.55, 0.00, -0.50, 0.25, -0.25, 0.25, 1.00),
    "joy": (1.00, 0.55, 0.70, 0.20, 0.00, 0.20, 0.35),
    "surprise": (0.00, 1.00, -0.80, 1.00, -0.10, 1.00, 0.00),
    "anger": (-0.60, 0.05, 0.30, -0.90, 1.00, 0.70, 0.00),
    "sadness": (-1.00, 0.00, -0.20, 0.15, -1.00, 0.25, 0.00),
    "fear": (-0.35, 0.55, 1.00, 0.85, -0.70, 1.00, 0.00),
}

MAX_POSE_DEG = 15.0


def family_prototype(family: str, intensity: float) -> np.ndarray:
    """Expression vector (float32, EXPRESSION_FACTORS order) of `family` at `intensity`.

    intensity 0 is the neutral face and 1 the family's apex; values in between interpolate
    linearly. Raises ValueError for an unknown family or an intensity outside [0, 1].
    """
    if family not in _FAMILY_APEX:
        raise ValueError(f"family={family!r} is not one of {FAMILIES}; pick one of those names")
    if not 0.0 <= float(intensity) <= 1.0:
        raise ValueError(f"intensity={intensity} is outside [0, 1]; 0 = neutral, 1 = apex")
    apex = np.asarray(_FAMILY_APEX[family], np.float32)
    return (NEUTRAL_EXPRESSION + np.float32(intensity) * (apex - NEUTRAL_EXPRESSION)).astype(np.float32)


def clip_expression(expression: np.ndarray) -> np.ndarray:
    """Clip an expression vector into EXPRESSION_RANGES (float32 copy)."""
    return np.clip(np.asarray(expression, np.float32), EXPRESSION_LOW, EXPRESSION_HIGH)


# Palettes (RGB). Kept far apart from each other so the attribute survives 32 px.
SKIN_TONES: tuple[tuple[int, int, int], ...] = (
    (255, 224, 196),
    (241, 194, 150),
    (224, 172, 120),
    (198, 134, 86),
    (160, 102, 62),
    (112, 70, 44),
    (74, 46, 30),
)
HAIR_COLOURS: tuple[tuple[int, int, int], ...] = (
    (20, 18, 20),
    (80, 45, 22),
    (30, 160, 130),
    (215, 85, 20),
    (240, 205, 100),
    (205, 205, 210),
    (30, 110, 200),
    (200, 40, 150),
)
HAIR_STYLES: tuple[str, ...] = (
    "bald",
    "buzz",
    "crop",
    "fringe",
    "side_part",
    "long",
    "bob",
    "afro",
    "spiky",
)
EYE_COLOURS: tuple[tuple[int, int, int], ...] = (
    (70, 40, 20),
    (40, 110, 220),
    (40, 150, 60),
    (120, 125, 130),
    (200, 130, 20),
)
NOSE_STYLES: tuple[str, ...] = ("triangle", "round", "line")
FACIAL_HAIR: tuple[str, ...] = ("none", "none", "none", "moustache", "beard")


@dataclass(frozen=True)
class IdentityParams:
    """Everything that stays fixed for one synthetic person. Units are face half-widths."""

    identity_id: int
    skin_tone: int  # index into SKIN_TONES
    hair_colour: int  # index into HAIR_COLOURS
    hair_style: int  # index into HAIR_STYLES
    eye_colour: int  # index into EYE_COLOURS
    face_width: float  # horizontal half-axis of the head ellipse, 0.86..1.0
    face_length: float  # vertical half-axis / face_width, 1.12..1.38
    jaw_squareness: float  # 0 = oval chin, 1 = square jaw
    eye_spacing: float  # eye centre distance from the midline, 0.34..0.50
    eye_size: float  # eye half-width, 0.19..0.26
    nose_size: float  # 0.7..1.4 scale of the nose
    nose_style: int  # index into NOSE_STYLES
    ear_size: float  # 0.6..1.3 scale of the ears
    brow_thickness: float  # 0.09..0.16
    lip_tint: float  # 0..1, pale to deep red lips
    facial_hair: int  # index into FACIAL_HAIR

    @property
    def skin_rgb(self) -> tuple[int, int, int]:
        return SKIN_TONES[self.skin_tone]

    @property
    def hair_rgb(self) -> tuple[int, int, int]:
        return HAIR_COLOURS[self.hair_colour]

    @property
    def eye_rgb(self) -> tuple[int, int, int]:
        return EYE_COLOURS[self.eye_colour]

    @property
    def style(self) -> str:
        return HAIR_STYLES[self.hair_style]


def _seed(*parts: int) -> np.random.Generator:
    # SeedSequence mixes the ints well, so neighbouring ids get unrelated streams.
    return np.random.default_rng(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]))


def identity_params(identity_id: int) -> IdentityParams:
    """Deterministic identity for a non-negative integer id (see the module docstring)."""
    if int(identity_id) < 0:
        raise ValueError(f"identity_id={identity_id} is negative; ids are integers >= 0")
    i = int(identity_id)
    rng = _seed(0x1D, i)
    return IdentityParams(
        identity_id=i,
        skin_tone=i % len(SKIN_TONES),
        hair_colour=i % len(HAIR_COLOURS),
        hair_style=i % len(HAIR_STYLES),
        eye_colour=i % len(EYE_COLOURS),
        face_width=float(rng.uniform(0.86, 1.0)),
        face_length=float(rng.uniform(1.12, 1.38)),
        jaw_squareness=float(rng.uniform(0.0, 1.0)),
        eye_spacing=float(rng.uniform(0.34, 0.50)),
        eye_size=float(rng.uniform(0.19, 0.26)),
        nose_size=float(rng.uniform(0.7, 1.4)),
        nose_style=int(rng.integers(len(NOSE_STYLES))),
        ear_size=float(rng.uniform(0.6, 1.3)),
        brow_thickness=float(rng.uniform(0.09, 0.16)),
        lip_tint=float(rng.uniform(0.0, 1.0)),
        facial_hair=int(rng.integers(len(FACIAL_HAIR))),
    )


@dataclass(frozen=True)
class Pose:
    """Head rotation in degrees (see the module docstring for the sign conventions)."""

    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0


@dataclass(frozen=True)
class SynthSample:
    """One synthetic face: who, which expression, which head pose, which background."""

    identity_id: int
    expression: tuple[float, ...]  # EXPRESSION_FACTORS order; a tuple keeps this hashable
    pose: Pose = field(default_factory=Pose)
    background_seed: int = 0

    def __post_init__(self) -> None:
        if len(self.expression) != len(EXPRESSION_FACTORS):
            raise ValueError(
                f"SynthSample.expression has {len(self.expression)} values, expected "
                f"{len(EXPRESSION_FACTORS)} in the order {EXPRESSION_FACTORS}"
            )

    @property
    def expression_array(self) -> np.ndarray:
        return np.asarray(self.expression, np.float32)


def make_sample(
    identity_id: int,
    expression: np.ndarray | tuple[float, ...],
    pose: Pose | None = None,
    background_seed: int = 0,
) -> SynthSample:
    """Build a SynthSample from an expression array (clipped into range, stored as floats)."""
    expr = tuple(float(v) for v in clip_expression(np.asarray(expression, np.float32)))
    return SynthSample(int(identity_id), expr, pose or Pose(), int(background_seed))


def synth_params_json(sample: SynthSample) -> str:
    """Stable JSON of every factor of `sample`, for the face table's labels.synth_params.

    Holds the sample itself (enough to re-render it) plus the resolved identity attributes,
    with the expression as a name -> value mapping.
    """
    ident = asdict(identity_params(sample.identity_id))
    ident["hair_style_name"] = HAIR_STYLES[ident["hair_style"]]
    payload = {
        "identity_id": sample.identity_id,
        "expression": {n: round(float(v), 6) for n, v in zip(EXPRESSION_FACTORS, sample.expression)},
        "pose": {k: round(float(v), 6) for k, v in asdict(sample.pose).items()},
        "background_seed": sample.background_seed,
        "identity": {k: (round(v, 6) if isinstance(v, float) else v) for k, v in ident.items()},
    }
    return json.dumps(payload, sort_keys=True)


def sample_from_params(params: dict) -> SynthSample:
    """The SynthSample a synth_params_json payload (parsed) describes: it renders the same face."""
    expr = params["expression"]
    values = [expr[n] for n in EXPRESSION_FACTORS] if isinstance(expr, dict) else list(expr)
    pose = params.get("pose") or {}
    return SynthSample(
        int(params["identity_id"]),
        tuple(float(v) for v in values),
        Pose(**{k: float(v) for k, v in pose.items()}),
        int(params.get("background_seed", 0)),
    )
