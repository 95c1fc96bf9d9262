"""One word's expression targets over HTTP: GET /v1/expressions/{word}, its exemplar crops, and the
exemplar that a request's `expression_target=exemplar` picks.

The vocabulary (sfsr.expressions) is the ingress's to check: an unknown word is a 404 before any
model is asked. A word's prototype target and its exemplar faces belong to the loaded model
(Generator.encoders.targets, Generator.bank), so the functions taking `model` run in the generator
replica (GeneratorDeployment.expression_entry, exemplar_png, exemplar_vector) and answer plain
values; a request they cannot serve comes back as a `Refused`, which the ingress raises (`served`).

A chosen exemplar becomes the job's vector (`job_expression`): vector jobs batch like any other.

Pure functions, no Ray: tests/unit/test_expression_routes.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from deployments.validation import ApiError, ExpressionTarget
from sfsr.expressions import ExpressionWord, UnknownExpressionError, lookup
from sfsr.expressions.bank import BANK_FILE

NO_BANK_NOTE = (
    f"the loaded model ships no expression bank ({BANK_FILE}): its words have prototype targets only; "
    "a model folder published beside an ingest output's bank has exemplar faces"
)


@dataclass(frozen=True)
class Refused:
    """A refusal made in the generator replica, sent back as a value (an ApiError does not pickle)."""

    status: int
    code: str
    message: str
    field: str | None = None

    def error(self) -> ApiError:
        return ApiError(self.status, self.code, self.message, self.field)


@dataclass(frozen=True)
class ExemplarChoice:
    """The exemplar face a request's word resolved to."""

    vector: tuple[float, ...]  # (dim,) its expression encoding: the job's target
    index: int
    source: str  # where the face came from (the face table's source_uri)
    count: int  # exemplars the bank keeps for the word


def served(answer: Any) -> Any:
    """A generator method's answer, or its Refused raised as the ApiError it stands for."""
    if isinstance(answer, Refused):
        raise answer.error()
    return answer


def known_word(word: str) -> ExpressionWord:
    """The vocabulary entry of a path's word (case and spaces ignored), else 404 with suggestions."""
    try:
        return lookup(word)
    except UnknownExpressionError as e:
        raise ApiError(404, "unknown_expression", str(e), "word", suggestions=list(e.suggestions)) from None


def exemplar_url(word: str, index: int) -> str:
    return f"/v1/expressions/{quote(word)}/exemplars/{index}.png"


def entry(model: Any, word: str) -> dict[str, Any]:
    """GET /v1/expressions/{word}: the vocabulary entry, the target the model resolves the word to,
    and the exemplar faces its bank keeps (none, with a note, without a bank)."""
    w = lookup(word)
    kept = model.bank.exemplars.get(w.word, []) if model.bank is not None else []
    note = None
    if model.bank is None:
        note = NO_BANK_NOTE
    elif not kept:
        note = f"the loaded model's expression bank keeps no exemplar faces of {w.word!r}"
    return {
        "word": w.word,
        "family": w.family,
        "subcluster": w.subcluster,
        "intensity": w.intensity,
        "nuance": w.nuance,
        "target": [float(x) for x in model.encoders.targets.target(w.word)],
        "exemplars": {
            "count": len(kept),
            "items": [{"index": k, "url": exemplar_url(w.word, k), "source": ex.source} for k, ex in enumerate(kept)],
            "note": note,
        },
    }


def _kept(model: Any, word: str, field: str, status: int) -> list[Any] | Refused:
    """The word's exemplars in the model's bank, or why there are none (422 on a request, 404 on
    the PNG route)."""
    remedy = "send expression_target=prototype (the default)" if status == 422 else "the word has no exemplar PNGs"
    if model.bank is None:
        return Refused(status, "no_expression_bank", f"{field}: {NO_BANK_NOTE}; {remedy}", field)
    kept = model.bank.exemplars.get(word, [])
    if not kept:
        return Refused(
            status,
            "no_exemplars",
            f"{field}: the loaded model's expression bank keeps no exemplar faces of {word!r}; {remedy}",
            field,
        )
    return kept


def _out_of_range(word: str, index: int, count: int) -> str:
    return (
        f"exemplar {index} of {word!r} does not exist: the loaded model keeps {count} "
        f"(0 to {count - 1}; GET /v1/expressions/{word} lists them)"
    )


def exemplar_png(model: Any, word: str, index: int) -> bytes | Refused:
    """GET /v1/expressions/{word}/exemplars/{index}.png: the exemplar's face crop as stored (PNG)."""
    w = lookup(word).word
    kept = _kept(model, w, "word", 404)
    if isinstance(kept, Refused):
        return kept
    if not 0 <= index < len(kept):
        return Refused(404, "not_found", _out_of_range(w, index, len(kept)), "index")
    return kept[index].image_png


def exemplar_choice(model: Any, word: str, index: int | None, seed: int) -> ExemplarChoice | Refused:
    """The exemplar a request's expression_target=exemplar means: `index`, or the one the seed
    picks (Generator.exemplar_target)."""
    w = lookup(word).word
    kept = _kept(model, w, "expression_target", 422)
    if isinstance(kept, Refused):
        return kept
    if index is not None and index >= len(kept):
        return Refused(422, "exemplar_out_of_range", _out_of_range(w, index, len(kept)), "expression_exemplar")
    vector, k = model.exemplar_target(w, index, seed)
    return ExemplarChoice(tuple(float(x) for x in vector), k, kept[k].source, len(kept))


def job_expression(word: str | None, vector: tuple[float, ...] | None, choice: ExemplarChoice | None) -> dict:
    """GenJob's word and vector: a chosen exemplar turns the word into its vector."""
    if choice is not None:
        return {"word": None, "vector": choice.vector}
    return {"word": word, "vector": vector}


def target_metadata(
    word: str | None, target: ExpressionTarget, choice: ExemplarChoice | None, key: str = "expression_target"
) -> dict[str, Any]:
    """The answer's metadata on where a word's target came from (nothing for other expressions)."""
    if word is None:
        return {}
    if choice is None:
        return {key: {"kind": target.kind}}
    return {
        key: {
            "kind": "exemplar",
            "index": choice.index,
            "source": choice.source,
            "count": choice.count,
            "chosen_by": "request" if target.index is not None else "seed",
        }
    }
