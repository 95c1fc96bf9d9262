"""GET /v1/expressions/{word}, its exemplar PNGs and expression_target=exemplar, without Ray or HTTP.

deployments/expressions.py answers from the loaded model's targets and expression bank; here the
model is a stand-in holding a real ExpressionBank (3 exemplars of joy, none of rage) and the real
Generator.exemplar_target, so the seed picks the exemplar exactly as the generator does.
"""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import numpy as np
import pytest

from deployments import expressions as ex
from deployments import validation as v
from deployments.openapi import CONTENT_REFUSALS
from sfsr.expressions import UnknownExpressionError, lookup
from sfsr.expressions.bank import Exemplar, ExpressionBank
from sfsr.expressions.vocabulary import suggest
from sfsr.generate import Generator

DIM = 7


class Targets:
    def target(self, word: str) -> np.ndarray:
        return np.full(DIM, lookup(word).intensity, np.float32)  # a prototype we can recognise


class Model(SimpleNamespace):
    exemplar_target = Generator.exemplar_target  # the real retrieval: index, or seed % count


def model(with_bank: bool = True) -> Model:
    kept = [Exemplar(np.full(DIM, k, np.float32), f"png-{k}".encode(), f"table://row/{k}") for k in range(3)]
    data = {"joy": (np.zeros(DIM), 3, kept), "rage": (np.ones(DIM), 2)}
    bank = ExpressionBank(data, DIM) if with_bank else None
    return Model(name="stand-in", bank=bank, encoders=SimpleNamespace(targets=Targets()))


def test_known_word_ignores_case_and_spaces_and_404s_with_the_vocabulary_message() -> None:
    assert ex.known_word("  Jo y ").word == "joy"
    with pytest.raises(v.ApiError) as info:
        ex.known_word("hapiness")
    err, expected = info.value, UnknownExpressionError("hapiness", suggest("hapiness"))
    assert (err.status, err.code, err.field, err.message) == (404, "unknown_expression", "word", str(expected))
    assert "happiness" in err.extra["suggestions"]


def test_entry_has_the_word_its_target_and_its_exemplars() -> None:
    out = ex.entry(model(), "joy")
    w = lookup("joy")
    assert {k: out[k] for k in ("word", "family", "subcluster", "intensity", "nuance")} == {
        "word": w.word,
        "family": w.family,
        "subcluster": w.subcluster,
        "intensity": w.intensity,
        "nuance": w.nuance,
    }
    assert out["target"] == pytest.approx([w.intensity] * DIM)
    assert out["exemplars"]["count"] == 3 and out["exemplars"]["note"] is None
    assert out["exemplars"]["items"][2] == {
        "index": 2,
        "url": "/v1/expressions/joy/exemplars/2.png",
        "source": "table://row/2",
    }
    rage = ex.entry(model(), "rage")["exemplars"]  # in the bank, without exemplar faces
    assert rage["count"] == 0 and rage["items"] == [] and "no exemplar" in rage["note"]
    bare = ex.entry(model(with_bank=False), "joy")
    assert bare["exemplars"] == {"count": 0, "items": [], "note": ex.NO_BANK_NOTE}
    assert bare["target"] == out["target"]  # the prototype does not need a bank


def test_exemplar_png_or_404() -> None:
    assert ex.exemplar_png(model(), "joy", 1) == b"png-1"
    for index in (3, -1):
        refusal = ex.exemplar_png(model(), "joy", index)
        assert (refusal.status, refusal.code, refusal.field) == (404, "not_found", "index")
        assert "keeps 3 (0 to 2" in refusal.message
    assert ex.exemplar_png(model(), "rage", 0).code == "no_exemplars"
    refusal = ex.exemplar_png(model(with_bank=False), "joy", 0)
    assert (refusal.status, refusal.code) == (404, "no_expression_bank")


def test_exemplar_choice_by_index_or_seed() -> None:
    chosen = ex.exemplar_choice(model(), "joy", 2, seed=0)
    assert (chosen.vector, chosen.index, chosen.source, chosen.count) == ((2.0,) * DIM, 2, "table://row/2", 3)
    for seed in (0, 4, 2**31 - 1):
        by_seed = ex.exemplar_choice(model(), "joy", None, seed)
        assert by_seed.index == seed % 3 and by_seed.vector == (float(seed % 3),) * DIM


@pytest.mark.parametrize(
    "with_bank,word,index,code,field",
    [
        (True, "joy", 3, "exemplar_out_of_range", "expression_exemplar"),
        (True, "rage", None, "no_exemplars", "expression_target"),
        (False, "joy", None, "no_expression_bank", "expression_target"),
        (False, "joy", 0, "no_expression_bank", "expression_target"),
    ],
)
def test_exemplar_refusals_are_422_with_a_content_code(with_bank, word, index, code, field) -> None:
    refusal = ex.exemplar_choice(model(with_bank), word, index, seed=1)
    # sent back from the replica as a value; the ingress raises it
    refusal = pickle.loads(pickle.dumps(refusal))
    with pytest.raises(v.ApiError) as info:
        ex.served(refusal)
    err = info.value
    assert (err.status, err.code, err.field) == (422, code, field)
    assert (word in err.message) if with_bank else ("expression bank" in err.message)
    assert code in CONTENT_REFUSALS  # the schema allows the request: only the loaded model refuses it


def test_a_chosen_exemplar_becomes_the_jobs_vector_and_is_recorded() -> None:
    from deployments.generator import GenJob

    chosen = ex.exemplar_choice(model(), "joy", None, seed=5)
    assert ex.served(chosen) is chosen
    fields = ex.job_expression("joy", None, chosen)
    job = GenJob(
        "reenact", np.zeros((8, 8, 3), np.uint8), steps=2, guidance_identity=1, guidance_expression=1, seed=5, **fields
    )
    assert job.expression_kind == "vector" and job.vector == (2.0,) * DIM  # 5 % 3
    assert ex.job_expression("joy", None, None) == {"word": "joy", "vector": None}
    assert ex.job_expression(None, (0.5,) * DIM, None) == {"word": None, "vector": (0.5,) * DIM}
    target = v.ExpressionTarget("exemplar", None)
    assert ex.target_metadata("joy", target, chosen) == {
        "expression_target": {
            "kind": "exemplar",
            "index": 2,
            "source": "table://row/2",
            "count": 3,
            "chosen_by": "seed",
        }
    }
    assert ex.target_metadata("joy", v.ExpressionTarget(), None) == {"expression_target": {"kind": "prototype"}}
    assert ex.target_metadata(None, v.ExpressionTarget(), None) == {}
