"""jobs/ingest.py through `ray job submit`: every input accounted for, re-runs change nothing.

A re-run with nothing left to do is the job's main() called in this process, as its driver would
run it: it plans from the tables alone and must not start Ray (checked), which saves a submission."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest
from PIL import Image

from sfsr.expressions import WORDS
from sfsr.io import storage, table
from sfsr.synth.factors import EXPRESSION_FACTORS
from tests.fixtures.ray_jobs import submit_ok

pytestmark = [pytest.mark.ray, pytest.mark.slow]

# name -> ("face", number of faces) or ("error", reason)
EXPECTED = {
    "obama.jpg": ("face", 1),
    "obama2.jpg": ("face", 1),
    "biden.jpg": ("face", 1),
    "astronaut.png": ("face", 1),
    "two.jpg": ("face", 2),
    "noface.jpg": ("error", "no_face"),
    "empty.jpg": ("error", "empty"),
    "text.jpg": ("error", "not_an_image"),
    "truncated.jpg": ("error", "truncated"),
}


def _ingest(env: dict[str, str], src: str, out: str, *extra: str) -> dict:
    submit_ok(env, "jobs.ingest", "--input", src, "--output", out, "--crop-size", "128", *extra, timeout=600)
    return json.loads(storage.read_bytes(storage.join(out, "run.json")))


def _rerun(src: str, out: str) -> dict:
    import ray

    from jobs import ingest

    assert ingest.main(["--input", src, "--output", out, "--crop-size", "128"]) == 0
    assert not ray.is_initialized(), "a re-run with nothing to do started Ray"
    return json.loads(storage.read_bytes(storage.join(out, "run.json")))


def _check_tables(out: str, prefix: str) -> tuple[list, list]:
    faces = table.read_table(storage.join(out, "faces"))
    errors = table.read_table(storage.join(out, "errors"))
    name = lambda uri: uri.rsplit("/", 1)[-1]  # noqa: E731
    per_input: dict[str, int] = {}
    for uri in faces.column("source_uri").to_pylist():
        per_input[name(uri)] = per_input.get(name(uri), 0) + 1
    reasons = {name(u): r for u, r in zip(errors.column("source_uri").to_pylist(), errors.column("reason").to_pylist())}
    # every input is in exactly one of the two tables, with what we expect of it
    assert set(per_input) | set(reasons) == set(EXPECTED)
    assert not set(per_input) & set(reasons)
    for n, (kind, what) in EXPECTED.items():
        if kind == "face":
            assert per_input[n] == what, n
        else:
            assert reasons[n] == what, (n, reasons[n])
    assert all(m for m in errors.column("message").to_pylist())
    assert all(u.startswith(prefix) for u in faces.column("source_uri").to_pylist())
    # every face row has its vectors, pose and an aligned crop
    assert faces.num_rows == 6
    assert pc.all(pc.is_valid(faces.column("yaw"))).as_py()
    for img in faces.column("image").to_pylist():
        assert Image.open(io.BytesIO(img)).size == (128, 128)
    ident = faces.column("identity").to_pylist()
    assert all(abs(sum(v * v for v in vec) - 1.0) < 1e-3 for vec in ident)  # unit-norm descriptors
    return sorted(faces.column("face_id").to_pylist()), sorted(errors.column("input_id").to_pylist())


def test_ingest_folder_accounts_for_every_input_and_reruns_change_nothing(platform_env, photo_table) -> None:
    src, out, first = Path(photo_table["src"]), photo_table["out"], photo_table["run"]  # ingested once per session
    assert first["accounted"] and first["processed"] == len(EXPECTED)
    assert first["inputs_with_faces"] + first["error_rows"] == len(EXPECTED)
    ids = _check_tables(out, str(src))

    second = _rerun(str(src), out)
    assert second["processed"] == 0 and second["skipped_already_done"] == len(EXPECTED)
    assert _check_tables(out, str(src)) == ids

    # even forcing failed inputs through again neither duplicates nor loses a row
    _ingest(platform_env, str(src), out, "--retry-errors")
    assert _check_tables(out, str(src)) == ids


@pytest.mark.s3
def test_ingest_from_and_to_s3(photo_table_s3) -> None:
    src, out, first = photo_table_s3["src"], photo_table_s3["out"], photo_table_s3["run"]  # once per session
    assert src.startswith("s3://") and out.startswith("s3://")
    assert first["accounted"] and first["processed"] == len(EXPECTED)
    ids = _check_tables(out, src)
    second = _rerun(src, out)
    assert second["processed"] == 0
    assert _check_tables(out, src) == ids


def test_synthetic_ingest_writes_labels_and_an_expression_bank_with_exemplars(synth_table) -> None:
    # the session's synthetic table: 64 faces of split test, 200 identities, 32 px
    out = synth_table
    faces = table.read_table(storage.join(out, "faces"))
    assert faces.num_rows == 64 and set(faces.column("split").to_pylist()) == {"test"}
    labels = faces.column("labels").to_pylist()
    assert all(json.loads(lab["synth_params"])["identity_id"] < 200 for lab in labels)
    assert {lab["identity_label"] for lab in labels} <= {f"synth-{i:05d}" for i in range(200)}
    assert all(Image.open(io.BytesIO(b)).size == (32, 32) for b in faces.column("image").to_pylist())
    # the expression vector is the renderer's exact expression, not a judge's reading of it
    vectors = faces.column("expression").to_pylist()
    exact = [json.loads(lab["synth_params"])["expression"] for lab in labels]
    # (synth_params is JSON with sorted keys: read it in the renderer's factor order)
    exact = [[e[name] for name in EXPRESSION_FACTORS] for e in exact]
    assert all(max(abs(a - b) for a, b in zip(v, e)) < 1e-5 for v, e in zip(vectors, exact))
    bank = table.read_table(storage.join(out, "expression_bank.parquet")).to_pylist()
    words = [r["word"] for r in bank]
    word_of = faces.column("expression_label").to_pylist()
    assert words and set(words) <= {w.word for w in WORDS}
    assert sum(r["count"] for r in bank) == sum(w is not None for w in word_of) > 16  # about half are drawn from words
    for row in bank:
        # the mean is the mean of the word's faces; its exemplars are some of those faces
        mine = [v for v, w in zip(vectors, word_of) if w == row["word"]]
        mean = [sum(c) / len(mine) for c in zip(*mine)]
        assert max(abs(a - b) for a, b in zip(mean, row["vector"])) < 1e-4
        assert 1 <= len(row["exemplar_vectors"]) == len(row["exemplar_images"]) <= min(4, len(mine))
        for vec, png, source in zip(row["exemplar_vectors"], row["exemplar_images"], row["exemplar_sources"]):
            assert any(max(abs(a - b) for a, b in zip(vec, m)) < 1e-6 for m in mine)
            assert Image.open(io.BytesIO(png)).size == (32, 32) and source.startswith("synthetic://")
