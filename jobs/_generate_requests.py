"""The request table of jobs/generate.py: read it, check each row, and plan what to run.

    rows = read_requests("requests.csv")                       # list of dicts, columns checked
    parsed = parse_requests(rows, defaults)                    # a Request or an Invalid per row
    todo, invalid, skipped = plan(parsed, previous, pngs, ...)  # what a (re-)run must do

Every row becomes exactly one Request (to generate) or one Invalid (an error row naming what is
wrong and how to fix it); nothing here reads an image or imports Ray, so the unit tests cover it
all. A request is identified by its `id` (given, or derived from its content) and fingerprinted
by `digest` (everything that decides its output, the model's weights included): a re-run skips
an id whose earlier ok row has the same digest and whose PNG exists, and an id whose earlier
error row has the same digest unless errors are retried. A row with a background_prompt also
fingerprints its prompt, scene seed and head box and the text-to-image folder's name and settings
(SceneSettings): a changed prompt makes a new background, so the request is generated again.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import pyarrow as pa

from sfsr.expressions import UnknownExpressionError, lookup
from sfsr.io import storage, table
from sfsr.scenes import DEFAULT_GUIDANCE, DEFAULT_SIZE, DEFAULT_STEPS, SIZE_MULTIPLE, folder_name

COLUMNS = (
    "id",
    "identity",
    "background",
    "background_prompt",
    "background_seed",
    "head_box",
    "expression",
    "expression_target",
    "expression_exemplar",
    "driver",
    "expression_vector",
    "seed",
    "steps",
    "aligned",
)
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
MAX_SEED = 2**31 - 1  # the API's bound too (deployments/validation.py)
MAX_STEPS = 1000
# Columns added after request tables were first written: part of a row's content (derived id, the
# digest of a refused row) only when given, so the rows of earlier tables keep their ids.
ADDED_COLUMNS = ("background_seed", "head_box", "expression_target", "expression_exemplar")
# Where a word's target comes from (the API's expression_target, deployments/validation.py): the
# word's prototype (default) or one of the exemplar faces in the model's expression bank.
TARGET_KINDS = ("prototype", "exemplar")
MAX_EXEMPLAR = 1000
# The API's bounds too (deployments/validation.py): CLIP reads about 300 characters; a smaller
# head box side than this fraction of the scene cannot be framed.
MAX_PROMPT_CHARS = 500
MIN_HEAD_BOX = 0.1
# Scene settings a run accepts (the Serve app's Scenes settings have the same bounds).
SCENE_SIDES = (64, 2048)
SCENE_STEPS = (1, 200)
SCENE_GUIDANCE = (0.0, 30.0)
RESULTS = pa.schema(
    [
        ("id", pa.string()),
        ("status", pa.string()),  # "ok" | "error"
        ("output_uri", pa.string()),
        ("error", pa.string()),
        ("model", pa.string()),
        ("model_version", pa.string()),
        ("seed", pa.int64()),
        ("steps", pa.int64()),
        ("seconds", pa.float64()),
        ("request_digest", pa.string()),
    ]
)


class RequestTableError(ValueError):
    """The table as a whole cannot be read (no rows are processed)."""


@dataclass(frozen=True)
class SceneSettings:
    """How the backgrounds of background_prompt rows are made (sfsr.scenes), the same for every
    row of a run: the text-to-image folder (local or s3://) and its pipeline's settings."""

    folder: str
    width: int = DEFAULT_SIZE
    height: int = DEFAULT_SIZE
    steps: int = DEFAULT_STEPS
    guidance: float = DEFAULT_GUIDANCE

    def __post_init__(self) -> None:
        (lo, hi), m = SCENE_SIDES, SIZE_MULTIPLE
        for name in ("width", "height"):
            value = getattr(self, name)
            if value % m or not lo <= value <= hi:
                raise ValueError(f"--scene-{name} {value}: give a multiple of {m} from {lo} to {hi}")
        if not SCENE_STEPS[0] <= self.steps <= SCENE_STEPS[1]:
            raise ValueError(f"--scene-steps {self.steps}: give {SCENE_STEPS[0]} to {SCENE_STEPS[1]}")
        if not SCENE_GUIDANCE[0] <= self.guidance <= SCENE_GUIDANCE[1]:
            raise ValueError(f"--scene-guidance {self.guidance}: give {SCENE_GUIDANCE[0]} to {SCENE_GUIDANCE[1]}")

    @property
    def name(self) -> str:
        return folder_name(self.folder)

    def fingerprint(self) -> dict:
        """What of these settings decides a scene: the folder's name (not where it lies) and the
        pipeline's settings."""
        return {
            "text_to_image": self.name,
            "scene": [self.width, self.height, self.steps, self.guidance],
        }


@dataclass(frozen=True)
class Defaults:
    """What a row leaves out: the job's steps, the model's expression size and version, and how
    backgrounds are made from prompts (None: no text-to-image folder, prompt rows are refused)."""

    steps: int
    expression_dim: int
    model_version: str
    scenes: SceneSettings | None = None


@dataclass(frozen=True)
class Request:
    """One checked row: image URIs, at most one expression source, resolved seed and steps."""

    id: str
    identity: str
    background: str | None
    expression: str | None  # a word of sfsr.expressions
    driver: str | None  # a face image whose expression is copied
    expression_vector: tuple[float, ...] | None
    seed: int
    steps: int
    aligned: bool  # the images are aligned face crops: no detection (the API's *_aligned)
    digest: str
    background_prompt: str | None = None  # the background is made from this text (sfsr.scenes)
    background_seed: int | None = None  # the scene's seed (set with background_prompt; default: seed)
    head_box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2 fractions of the scene
    expression_target: str | None = None  # "exemplar": the word's target is an exemplar of the bank
    expression_exemplar: int | None = None  # which exemplar (default: the one the seed picks)

    def to_row(self) -> dict:
        d = asdict(self)
        for name in ("expression_vector", "head_box"):
            d[name] = list(d[name]) if d[name] else None
        return d


@dataclass(frozen=True)
class Invalid:
    """A row refused before any image is read; it becomes an error row."""

    id: str
    reason: str
    digest: str
    seed: int | None = None
    steps: int | None = None


def read_requests(uri: str) -> list[dict]:
    """The rows of a Parquet file or folder, or a CSV file, local or s3://, as dicts with every
    known column (absent ones are None). Unknown columns are refused: a typo such as
    `expresion` would otherwise silently drop what the row asks for."""
    if uri.lower().endswith(".csv"):
        import pyarrow.csv as pacsv

        try:
            t = pacsv.read_csv(io.BytesIO(storage.read_bytes(uri)))
        except pa.ArrowInvalid as e:
            raise RequestTableError(
                f"{uri}: not a readable CSV table ({e}); write one header row, then one row per request"
            ) from None
    else:
        try:
            t = table.read_table(uri)
        except storage.StorageNotFoundError as e:
            raise RequestTableError(f"--requests {uri}: {e}") from None
    unknown = [c for c in t.column_names if c not in COLUMNS]
    if unknown:
        raise RequestTableError(
            f"{uri}: unknown column(s) {unknown}; a request table has the columns {list(COLUMNS)} "
            "(only identity is required); rename or drop the others"
        )
    if "identity" not in t.column_names:
        raise RequestTableError(f"{uri}: no identity column; every request needs an identity image URI")
    rows = t.to_pylist()
    return [{c: r.get(c) for c in COLUMNS} for r in rows]


def seed_for(request_id: str) -> int:
    """The default seed of a request: a hash of its id, so sharding and batching never change it."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:4], "big") & MAX_SEED


def _text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    s = str(value).strip()
    return s or None


def _int(value: object, name: str, low: int, high: int) -> int | None:
    """An integer column's value (ints, integral floats and digit strings), None when empty."""
    if _text(value) is None:
        return None
    try:
        f = float(value)  # type: ignore[arg-type]
        n = int(f)
        if n != f:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a whole number; give an integer from {low} to {high}") from None
    if not low <= n <= high:
        raise ValueError(f"{name} {n} is outside {low}..{high}")
    return n


def _bool(value: object) -> bool:
    if _text(value) is None:
        return False
    if isinstance(value, bool):
        return value
    s = str(value).strip().lower()
    if s in ("1", "true", "yes", "1.0"):
        return True
    if s in ("0", "false", "no", "0.0"):
        return False
    raise ValueError(f"aligned {value!r} is not true or false")


def _numbers(value: object, name: str, example: str) -> tuple[float, ...] | None:
    """A list column's value: a list of numbers, or its JSON text (CSV); None when empty."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        items = json.loads(value) if isinstance(value, str) else list(value)  # type: ignore[arg-type]
        return tuple(float(v) for v in items)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} {str(value)[:60]!r} is not a list of numbers; write it as JSON, e.g. {example}"
        ) from None


def _vector(value: object, dim: int) -> tuple[float, ...] | None:
    """A list of floats, or its JSON text (CSV), of exactly `dim` finite values."""
    vec = _numbers(value, "expression_vector", "[0.1, -0.2, ...]")
    if vec is None:
        return None
    if len(vec) != dim:
        raise ValueError(f"expression_vector has {len(vec)} values, this model's expression space has {dim}")
    if not all(math.isfinite(v) for v in vec):
        raise ValueError("expression_vector holds NaN or infinite values")
    return vec


def _head_box(value: object) -> tuple[float, float, float, float] | None:
    """Where the person goes in a scene made from a prompt: x1, y1, x2, y2 as fractions of the
    scene's width and height (the API's head_box)."""
    box = _numbers(value, "head_box", "[0.35, 0.1, 0.65, 0.5] (x1, y1, x2, y2)")
    if box is None:
        return None
    if len(box) != 4 or not all(0.0 <= v <= 1.0 for v in box):  # NaN fails the range check too
        raise ValueError(
            f"head_box {list(box)[:6]} must be 4 numbers x1, y1, x2, y2 in [0, 1] (fractions of the scene's "
            "width and height)"
        )
    if box[2] - box[0] < MIN_HEAD_BOX or box[3] - box[1] < MIN_HEAD_BOX:
        raise ValueError(
            f"head_box {list(box)}: x2 - x1 and y2 - y1 must each be at least {MIN_HEAD_BOX} (a smaller head "
            "cannot be framed); give x1 < x2 and y1 < y2"
        )
    return box  # type: ignore[return-value]


def _prompt(value: object) -> str | None:
    prompt = _text(value)
    if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"background_prompt has {len(prompt)} characters, the limit is {MAX_PROMPT_CHARS}; describe the "
            "scene more briefly (the text encoder reads about 75 words)"
        )
    return prompt


def _digest(fields: dict, model_version: str) -> str:
    blob = json.dumps({**fields, "model_version": model_version}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _content(row: dict) -> dict:
    """A row's columns, the later-added ones only when given (ADDED_COLUMNS)."""
    return {k: row.get(k) for k in COLUMNS if k not in ADDED_COLUMNS or _text(row.get(k)) is not None}


def derived_id(row: dict) -> str:
    """An id from a row's content (everything but `id`), for tables without ids."""
    content = {k: v for k, v in _content(row).items() if k != "id"}
    return "r-" + hashlib.sha256(json.dumps(content, sort_keys=True, default=str).encode()).hexdigest()[:16]


def assign_ids(rows: Sequence[dict]) -> list[str]:
    """Each row's id: its own, or derived from its content (identical rows get -2, -3, ...).
    Raises RequestTableError naming given ids that repeat: results are keyed by id."""
    given = [_text(r.get("id")) for r in rows]
    seen: dict[str, int] = {}
    repeated = sorted({i for i in given if i is not None and given.count(i) > 1})
    if repeated:
        raise RequestTableError(
            f"ids {repeated[:5]} appear more than once; results and images are keyed by id, so make ids unique "
            "(or leave the id column empty to derive ids from each row's content)"
        )
    out = []
    for row, rid in zip(rows, given):
        if rid is None:
            base = derived_id(row)
            seen[base] = seen.get(base, 0) + 1
            rid = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out.append(rid)
    return out


def parse_request(row: dict, rid: str, defaults: Defaults) -> Request | Invalid:
    """Check one row, cheapest checks first; the first problem found becomes its error."""
    raw_digest = _digest(_content(row), defaults.model_version)
    seed: int | None = None
    steps: int | None = None
    try:
        if not ID_PATTERN.match(rid):
            raise ValueError(
                f"id {rid!r} cannot name a file; use 1 to 128 letters, digits, '.', '_' or '-', starting "
                "with a letter or digit"
            )
        identity = _text(row.get("identity"))
        if identity is None:
            raise ValueError("identity: missing URI; give the path or s3:// URI of the identity photo")
        seed = _int(row.get("seed"), "seed", 0, MAX_SEED)
        seed = seed_for(rid) if seed is None else seed
        steps = _int(row.get("steps"), "steps", 1, MAX_STEPS) or defaults.steps
        prompt, background = _prompt(row.get("background_prompt")), _text(row.get("background"))
        scene_seed = _int(row.get("background_seed"), "background_seed", 0, MAX_SEED)
        box = _head_box(row.get("head_box"))
        if prompt is None and (scene_seed is not None or box is not None):
            used = "background_seed" if scene_seed is not None else "head_box"
            raise ValueError(
                f"{used} applies to a background made from text; give background_prompt too, or drop {used}"
            )
        if prompt is not None:
            if background is not None:
                raise ValueError("give background or background_prompt, not both")
            if defaults.scenes is None:
                raise ValueError(
                    "background_prompt given but no text-to-image folder configured; pass --text-to-image "
                    "FOLDER to jobs.generate, or give a background image instead"
                )
            scene_seed = seed if scene_seed is None else scene_seed  # as the API: the request's seed
        word, driver = _text(row.get("expression")), _text(row.get("driver"))
        vector = _vector(row.get("expression_vector"), defaults.expression_dim)
        given = [n for n, v in (("expression", word), ("driver", driver), ("expression_vector", vector)) if v]
        if len(given) > 1:
            raise ValueError(f"{' and '.join(given)} are all given; give at most one expression source")
        if word is not None:
            try:
                word = lookup(word).word
            except UnknownExpressionError as e:
                raise ValueError(f"expression: unknown word; {e}") from None
        target = _expression_target(row, word)
        aligned = _bool(row.get("aligned"))
    except ValueError as e:
        return Invalid(rid, f"row {rid}: {e}", raw_digest, seed, steps)
    fields = dict(
        identity=identity,
        background=background,
        expression=word,
        driver=driver,
        expression_vector=vector,
        seed=seed,
        steps=steps,
        aligned=aligned,
    )
    if target[0] == "exemplar":  # a prototype target is the default: the row's digest stays as it was
        fields.update(expression_target=target[0], expression_exemplar=target[1])
    scene: dict = {}
    if prompt is not None and defaults.scenes is not None:
        scene = dict(background_prompt=prompt, background_seed=scene_seed, head_box=box)
    # a row without a prompt keeps the digest it had before prompts were possible
    fingerprint = {**fields, **scene, **(defaults.scenes.fingerprint() if scene else {})}
    return Request(id=rid, digest=_digest(fingerprint, defaults.model_version), **fields, **scene)


def _expression_target(row: dict, word: str | None) -> tuple[str, int | None]:
    """(kind, exemplar index) of a row's expression_target and expression_exemplar: they choose
    where a word's target comes from, so they come with a word only, and an index only with
    expression_target=exemplar (the API's rules). Whether the model keeps that exemplar is the
    generator actor's to say (an error row naming how many it keeps)."""
    kind, index = (
        _text(row.get("expression_target")),
        _int(row.get("expression_exemplar"), "expression_exemplar", 0, MAX_EXEMPLAR),
    )
    sent = [n for n, v in (("expression_target", kind), ("expression_exemplar", index)) if v is not None]
    if sent and word is None:
        raise ValueError(
            f"{' and '.join(sent)} choose where the target of a word comes from; a driver or a vector is its "
            f"own target: give expression (a word) or drop {' and '.join(sent)}"
        )
    kind = kind or TARGET_KINDS[0]
    if kind not in TARGET_KINDS:
        raise ValueError(
            f"expression_target must be one of {list(TARGET_KINDS)} (default {TARGET_KINDS[0]!r}), got {kind[:40]!r}"
        )
    if index is not None and kind != "exemplar":
        raise ValueError(
            "expression_exemplar picks one of the word's exemplar faces: set expression_target to exemplar too"
        )
    return kind, index


def parse_requests(rows: Sequence[dict], defaults: Defaults) -> list[Request | Invalid]:
    """A Request or an Invalid for every row, in order."""
    return [parse_request(r, rid, defaults) for r, rid in zip(rows, assign_ids(rows))]


@dataclass(frozen=True)
class Plan:
    todo: list[Request]  # to generate now
    invalid: list[Invalid]  # new error rows, written without generating
    done: int  # skipped: an ok row with this digest and its PNG exist
    failed_before: int  # skipped: an error row with this digest exists (no --retry-errors)


def plan(
    parsed: Iterable[Request | Invalid], previous: dict[str, tuple[str, str]], pngs: set[str], retry_errors: bool
) -> Plan:
    """What a run must do, given the results of earlier runs (id -> (status, request_digest)) and
    the ids whose PNG exists. A request that changed (another digest) is always done again."""
    todo: list[Request] = []
    invalid: list[Invalid] = []
    done = failed = 0
    for p in parsed:
        status, digest = previous.get(p.id, (None, None))
        if digest == p.digest and status == "ok" and p.id in pngs:
            done += 1
        elif digest == p.digest and status == "error" and not retry_errors:
            failed += 1
        elif isinstance(p, Invalid):
            invalid.append(p)
        else:
            todo.append(p)
    return Plan(todo, invalid, done, failed)


def error_row(
    rid: str, reason: str, digest: str, seed: int | None, steps: int | None, model: str, version: str
) -> dict:
    """A results row for a request that produced no image."""
    return {
        "id": rid,
        "status": "error",
        "output_uri": None,
        "error": reason,
        "model": model,
        "model_version": version,
        "seed": seed,
        "steps": steps,
        "seconds": 0.0,
        "request_digest": digest,
    }
