"""The expression bank's exemplars (issue 14, item 2): built from face-table parts, kept through
Parquet, shipped by publish, and a word's exemplar target from a Generator."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from sfsr.expressions.bank import BANK_FILE, ExpressionBank, build_bank
from sfsr.synth.dataset import draw_labelled
from sfsr.synth.words import word_target


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _part(rows: list[tuple[str | None, list[float]]], tag: str) -> pa.Table:
    return pa.table(
        {
            "expression_label": [w for w, _ in rows],
            "expression": pa.array([v for _, v in rows], pa.list_(pa.float32())),
            "image": [_png(i) for i in range(len(rows))],
            "source_uri": [f"{tag}/{i}" for i in range(len(rows))],
        }
    )


def _reader(t: pa.Table):
    reads = []

    def read(columns: list[str]) -> pa.Table:
        reads.append(tuple(columns))
        return t.select(columns)

    read.reads = reads  # type: ignore[attr-defined]
    return read


def test_build_bank_keeps_the_faces_nearest_each_words_mean():
    a = _part([("joy", [0.0, 0.0]), ("joy", [1.0, 0.0]), (None, [9.0, 9.0]), ("rage", [0.0, 1.0])], "a")
    b = _part([("joy", [0.5, 0.1]), ("joy", [3.0, 0.0]), ("rage", [0.0, 3.0])], "b")
    parts = [_reader(a), _reader(b)]
    bank = build_bank(parts, exemplars=2)
    assert bank.dim == 2 and bank.counts == {"joy": 4, "rage": 2}
    np.testing.assert_allclose(bank.means["joy"], [1.125, 0.025], atol=1e-6)
    # joy's mean is (1.125, 0.025): the two nearest faces are (1, 0) of part a and (0.5, 0.1) of part b
    assert [e.source for e in bank.exemplars["joy"]] == ["a/1", "b/0"]
    np.testing.assert_allclose(bank.exemplars["joy"][1].vector, [0.5, 0.1], atol=1e-6)
    assert bank.exemplars["joy"][0].image_png == _png(1)
    # an unlabelled face is in no word's mean; only the parts holding exemplars are read for crops
    assert ("image", "source_uri") in parts[0].reads and ("image", "source_uri") in parts[1].reads


def test_bank_round_trips_through_its_table_and_refuses_bad_exemplar_requests():
    bank = build_bank([_reader(_part([("joy", [0.0, 1.0]), ("joy", [0.2, 1.0])], "p"))], exemplars=4)
    again = ExpressionBank(bank.to_table(), 2)
    assert again.counts == bank.counts and len(again.exemplars["joy"]) == 2
    assert again.exemplar("JOY", 1).image_png == bank.exemplar("joy", 1).image_png
    with pytest.raises(ValueError, match=r"keeps 2 \(0 to 1\)"):
        again.exemplar("joy", 2)
    with pytest.raises(ValueError, match="no exemplar faces of 'rage'"):
        again.exemplar("rage", 0)
    with pytest.raises(ValueError, match="not in the 135-word vocabulary"):
        again.exemplar("happyness", 0)
    table = bank.to_table().set_column(4, "exemplar_images", pa.array([[b"x"]], pa.list_(pa.binary())))
    with pytest.raises(ValueError, match="2 exemplar vectors, 1 images"):
        ExpressionBank(table, 2)


def test_synthetic_faces_drawn_from_a_word_carry_it_and_others_none():
    drawn = [draw_labelled(i, 0, 200) for i in range(400)]
    labelled = [(s, w) for s, w in drawn if w is not None]
    assert 0.35 < len(labelled) / len(drawn) < 0.65  # half the faces are drawn from words
    # a labelled face is its word's target plus small jitter, nearer it than most words
    dist = [np.linalg.norm(s.expression_array - word_target(w)) for s, w in labelled]
    assert np.median(dist) < 0.2


def test_publish_ships_the_bank_beside_the_training_table_and_generator_uses_it(tmp_path):
    from sfsr.generate import Generator
    from sfsr.release.publish import publish
    from tests.unit.test_publish import _export

    table_root = tmp_path / "table"
    (table_root / "faces").mkdir(parents=True)
    dim = 7  # the tiny preset's synth expression space
    rows = [("hysteria", list(word_target("hysteria") + d)) for d in (0.0, 0.05, -0.05)]
    bank = build_bank([_reader(_part(rows, "t"))], exemplars=2)
    (table_root / BANK_FILE).write_bytes(_parquet(bank.to_table()))
    run = _export(tmp_path / "runs" / "x", {"seed": 1, "table": str(table_root / "faces")}, 6.0, "cmd", "abc")
    dest = tmp_path / "published"
    card = publish(run / "model", dest, name="x", trained_on="t", licence="Apache-2.0")
    assert card["expression_bank"]["from"].endswith(BANK_FILE) and (dest / BANK_FILE).is_file()
    assert json.loads((dest / "sfsr_card.json").read_text())["expression_bank"]["file"] == BANK_FILE
    gen = Generator.from_pretrained(str(dest))
    assert gen.model.config.expression_dim == dim
    vec, k = gen.exemplar_target("Hysteria", seed=3)
    assert k == 1 and np.allclose(vec, bank.exemplars["hysteria"][1].vector)
    assert gen.exemplar_target("hysteria", index=0)[1] == 0
    with pytest.raises(ValueError, match="keeps 2"):
        gen.exemplar_target("hysteria", index=5)
    with pytest.raises(ValueError, match="no exemplar faces of 'joy'"):
        gen.exemplar_target("joy")


def _parquet(t: pa.Table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(t, buf)
    return buf.getvalue()
