"""jobs/generate.py without Ray: the request table's checks, the ids and seeds, the re-run plan,
and actor calls on aligned procedural faces (the committed cpu-demo model, 2 steps), the prompt
rows' on 64 px scenes of a tiny random text-to-image folder (tests/fixtures/text_to_image.py)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import _generate_requests as rq
from jobs.generate import REQUEST_ROWS, model_folder, read_model
from tests.fixtures.text_to_image import write_tiny_pipeline

DEFAULTS = rq.Defaults(steps=7, expression_dim=3, model_version="sha256:abc")
SCENES = rq.SceneSettings("/models/tiny-sd", width=64, height=64, steps=2)
WITH_T2I = dataclasses.replace(DEFAULTS, scenes=SCENES)


def _row(**kw) -> dict:
    return {c: kw.get(c) for c in rq.COLUMNS}


def _one(defaults: rq.Defaults = DEFAULTS, **kw) -> rq.Request | rq.Invalid:
    return rq.parse_requests([_row(**kw)], defaults)[0]


def test_csv_and_parquet_tables_read_the_same(tmp_path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text('id,identity,expression,expression_vector,seed\na,x.jpg,joy,,\nb,y.jpg,,"[0.5, 1, -2]",9\n')
    t = pa.table(
        {
            "id": ["a", "b"],
            "identity": ["x.jpg", "y.jpg"],
            "expression": ["joy", None],
            "expression_vector": pa.array([None, [0.5, 1.0, -2.0]], pa.list_(pa.float64())),
            "seed": pa.array([None, 9], pa.int64()),
        }
    )
    pq.write_table(t, tmp_path / "r.parquet")
    from_csv = rq.parse_requests(rq.read_requests(str(csv)), DEFAULTS)
    from_parquet = rq.parse_requests(rq.read_requests(str(tmp_path / "r.parquet")), DEFAULTS)
    assert from_csv == from_parquet
    assert from_csv[1].expression_vector == (0.5, 1.0, -2.0) and from_csv[1].seed == 9
    assert from_csv[0].background is None and from_csv[0].steps == 7


def test_a_table_with_an_unknown_or_missing_column_is_refused_naming_it(tmp_path) -> None:
    (tmp_path / "typo.csv").write_text("identity,expresion\nx.jpg,joy\n")
    with pytest.raises(rq.RequestTableError, match=r"unknown column\(s\) \['expresion'\]"):
        rq.read_requests(str(tmp_path / "typo.csv"))
    (tmp_path / "none.csv").write_text("id,expression\na,joy\n")
    with pytest.raises(rq.RequestTableError, match="no identity column"):
        rq.read_requests(str(tmp_path / "none.csv"))


@pytest.mark.parametrize(
    "row,reason",
    [
        ({"identity": None}, "identity: missing URI"),
        ({"identity": "  "}, "identity: missing URI"),
        ({"identity": "x", "expression": "joyfull"}, "unknown word; expression word 'joyfull'"),
        ({"identity": "x", "expression": "joy", "driver": "d.jpg"}, "expression and driver are all given"),
        ({"identity": "x", "expression_vector": [1.0, 2.0]}, "expression_vector has 2 values, this model's"),
        ({"identity": "x", "expression_vector": "[1, nan, 2]"}, "is not a list of numbers"),
        ({"identity": "x", "seed": -1}, "seed -1 is outside 0..2147483647"),
        ({"identity": "x", "steps": 2.5}, "steps 2.5 is not a whole number"),
        ({"identity": "x", "aligned": "maybe"}, "aligned 'maybe' is not true or false"),
        ({"id": "../etc", "identity": "x"}, "id '../etc' cannot name a file"),
        ({"identity": "x", "background_prompt": "a beach"}, "no text-to-image folder configured; pass --text-to-image"),
        ({"identity": "x", "background": "b", "background_prompt": "a"}, "give background or background_prompt"),
    ],
)
def test_each_bad_row_becomes_an_error_naming_what_is_wrong(row: dict, reason: str) -> None:
    got = _one(**row)
    assert isinstance(got, rq.Invalid) and reason in got.reason, got
    assert got.reason.startswith(f"row {got.id}: ")


def test_an_unknown_word_lists_near_words() -> None:
    got = _one(identity="x", expression="happy")
    assert isinstance(got, rq.Invalid) and "did you mean" in got.reason and "'happiness'" in got.reason


@pytest.mark.parametrize(
    "row,reason",
    [
        ({"background_seed": -3}, "background_seed -3 is outside 0..2147483647"),
        ({"background_seed": "seven"}, "background_seed 'seven' is not a whole number"),
        ({"head_box": "[0.1, 0.2, 0.5]"}, "head_box [0.1, 0.2, 0.5] must be 4 numbers x1, y1, x2, y2 in [0, 1]"),
        ({"head_box": [0.2, 0.1, 1.4, 0.6]}, "head_box [0.2, 0.1, 1.4, 0.6] must be 4 numbers"),
        ({"head_box": "[0.5, 0.1, 0.55, 0.6]"}, "x2 - x1 and y2 - y1 must each be at least 0.1"),
        ({"head_box": "[0.6, 0.1, 0.2, 0.6]"}, "x2 - x1 and y2 - y1 must each be at least 0.1"),
        ({"head_box": "centre"}, "head_box 'centre' is not a list of numbers; write it as JSON"),
        ({"background_prompt": "x" * 501}, "background_prompt has 501 characters, the limit is 500"),
        ({"background_prompt": None, "head_box": [0.3, 0.1, 0.7, 0.5]}, "head_box applies to a background made"),
        ({"background_prompt": None, "background_seed": 4}, "background_seed applies to a background made from"),
    ],
)
def test_each_bad_scene_column_becomes_an_error_naming_it(row: dict, reason: str) -> None:
    got = _one(WITH_T2I, **{"identity": "x", "background_prompt": "a beach", **row})
    assert isinstance(got, rq.Invalid) and reason in got.reason, got


def test_prompt_rows_read_the_same_from_csv_and_parquet_and_default_the_scene_seed(tmp_path) -> None:
    csv = tmp_path / "r.csv"
    csv.write_text(
        "id,identity,background_prompt,background_seed,head_box\n"
        'a,x.jpg,a beach at dusk,,"[0.5, 0.1, 0.9, 0.6]"\nb,y.jpg,a snowy forest,12,\nc,z.jpg,,,\n'
    )
    t = pa.table(
        {
            "id": ["a", "b", "c"],
            "identity": ["x.jpg", "y.jpg", "z.jpg"],
            "background_prompt": ["a beach at dusk", "a snowy forest", None],
            "background_seed": pa.array([None, 12, None], pa.int64()),
            "head_box": pa.array([[0.5, 0.1, 0.9, 0.6], None, None], pa.list_(pa.float64())),
        }
    )
    pq.write_table(t, tmp_path / "r.parquet")
    from_csv = rq.parse_requests(rq.read_requests(str(csv)), WITH_T2I)
    assert from_csv == rq.parse_requests(rq.read_requests(str(tmp_path / "r.parquet")), WITH_T2I)
    a, b, c = from_csv
    assert (a.background_prompt, a.background_seed, a.head_box) == ("a beach at dusk", a.seed, (0.5, 0.1, 0.9, 0.6))
    assert (b.background_seed, b.head_box, b.seed) == (12, None, rq.seed_for("b"))
    assert (c.background_prompt, c.background_seed, c.head_box) == (None, None, None)
    assert a.to_row()["head_box"] == [0.5, 0.1, 0.9, 0.6]


def test_a_scene_setting_out_of_range_is_refused_naming_its_flag() -> None:
    with pytest.raises(ValueError, match="--scene-width 100: give a multiple of 8 from 64 to 2048"):
        rq.SceneSettings("f", width=100)
    with pytest.raises(ValueError, match="--scene-steps 0"):
        rq.SceneSettings("f", steps=0)


def test_words_are_normalised_and_rows_resolve_seed_and_steps() -> None:
    got = _one(id="q1", identity="x", expression=" Hysteria ", steps=3, aligned="true")
    assert isinstance(got, rq.Request)
    assert (got.expression, got.steps, got.aligned, got.seed) == ("hysteria", 3, True, rq.seed_for("q1"))
    assert 0 <= got.seed <= rq.MAX_SEED and rq.seed_for("q1") != rq.seed_for("q2")


def test_ids_derive_from_content_and_given_ids_must_be_unique() -> None:
    rows = [_row(identity="a"), _row(identity="b"), _row(identity="a")]
    ids = rq.assign_ids(rows)
    assert ids[0] != ids[1] and ids[2] == ids[0] + "-2"
    # the same content gets the same id wherever it sits in the table (seeds follow ids)
    assert rq.assign_ids(list(reversed(rows)))[1] == ids[1]
    with pytest.raises(rq.RequestTableError, match=r"ids \['x'\] appear more than once"):
        rq.assign_ids([_row(id="x", identity="a"), _row(id="x", identity="b")])


def test_the_digest_follows_what_decides_the_output() -> None:
    base = _one(id="a", identity="x")
    assert _one(id="a", identity="x").digest == base.digest
    assert _one(id="a", identity="x", seed=base.seed).digest == base.digest  # explicit == derived seed
    assert _one(id="a", identity="y").digest != base.digest
    assert _one(id="a", identity="x", steps=8).digest != base.digest
    assert _one(dataclasses.replace(DEFAULTS, model_version="sha256:new"), id="a", identity="x").digest != base.digest


def test_a_prompt_rows_digest_follows_its_scene_and_other_rows_keep_theirs() -> None:
    def digest(defaults: rq.Defaults = WITH_T2I, **kw) -> str:
        got = _one(defaults, **{"id": "a", "identity": "x", "background_prompt": "a beach", **kw})
        assert isinstance(got, rq.Request), got
        return got.digest

    base = digest()
    assert digest() == base and digest(background_seed=_one(WITH_T2I, id="a", identity="x").seed) == base
    moved = dataclasses.replace(SCENES, folder="s3://bucket/models/tiny-sd/")  # the same folder's name
    assert digest(dataclasses.replace(DEFAULTS, scenes=moved)) == base
    changed = [
        digest(background_prompt="a beach at night"),
        digest(background_seed=1),
        digest(head_box=[0.3, 0.1, 0.7, 0.5]),
        digest(dataclasses.replace(DEFAULTS, scenes=dataclasses.replace(SCENES, folder="/models/sd-1.5"))),
        digest(dataclasses.replace(DEFAULTS, scenes=dataclasses.replace(SCENES, steps=3))),
        digest(dataclasses.replace(DEFAULTS, scenes=dataclasses.replace(SCENES, width=128))),
    ]
    assert len({base, *changed}) == 1 + len(changed)
    # rows without a prompt, and tables without the scene columns, keep the ids and digests they
    # had before prompts were possible (values from the code of 4b95895)
    assert _one(id="a", identity="a", expression="joy").digest == "66b98a86e533931a1678"
    assert _one(WITH_T2I, id="a", identity="a", expression="joy").digest == "66b98a86e533931a1678"
    assert _one(id="b", identity="a", expression="joyfull").digest == "cf105e24261696e086dc"
    assert rq.derived_id(_row(identity="a")) == "r-fa4dfa2cdf80e9a8"


@pytest.mark.parametrize(
    "row, reason",
    [
        (dict(expression_target="exemplar"), "expression_target choose where the target of a word comes from"),
        (dict(driver="d.png", expression_exemplar=1), "give expression (a word) or drop expression_exemplar"),
        (dict(expression="joy", expression_target="nearest"), "expression_target must be one of ['prototype',"),
        (dict(expression="joy", expression_exemplar=2), "set expression_target to exemplar too"),
        (dict(expression="joy", expression_target="exemplar", expression_exemplar=-1), "exemplar -1 is outside"),
    ],
)  # fmt: skip
def test_each_bad_target_column_becomes_an_error_naming_it(row: dict, reason: str) -> None:
    got = _one(id="a", identity="x", **row)
    assert isinstance(got, rq.Invalid) and reason in got.reason, got


def test_an_exemplar_target_is_part_of_the_digest_and_a_prototype_one_changes_nothing() -> None:
    word = _one(id="a", identity="x", expression="joy")
    assert _one(id="a", identity="x", expression="joy", expression_target="prototype").digest == word.digest
    seed_picks = _one(id="a", identity="x", expression="joy", expression_target="exemplar")
    assert isinstance(seed_picks, rq.Request) and (seed_picks.expression_target, seed_picks.expression_exemplar) == (
        "exemplar",
        None,
    )
    picked = [
        _one(id="a", identity="x", expression="joy", expression_target="exemplar", expression_exemplar=k)
        for k in (0, 1)
    ]
    assert len({word.digest, seed_picks.digest, *(p.digest for p in picked)}) == 4


def test_the_plan_skips_done_and_failed_requests_and_redoes_changed_ones() -> None:
    parsed = rq.parse_requests(
        [_row(id=i, identity="x") for i in ("ok", "gone", "failed", "new", "changed")]
        + [_row(id="bad", identity=None)],
        DEFAULTS,
    )
    by = {p.id: p for p in parsed}
    first = rq.plan(parsed, {}, set(), retry_errors=False)
    assert [r.id for r in first.todo] == ["ok", "gone", "failed", "new", "changed"]
    assert [i.id for i in first.invalid] == ["bad"] and (first.done, first.failed_before) == (0, 0)

    previous = {
        "ok": ("ok", by["ok"].digest),
        "gone": ("ok", by["gone"].digest),  # its PNG was deleted
        "failed": ("error", by["failed"].digest),
        "changed": ("ok", "another-digest"),
        "bad": ("error", by["bad"].digest),
    }
    again = rq.plan(parsed, previous, {"ok", "changed"}, retry_errors=False)
    assert [r.id for r in again.todo] == ["gone", "new", "changed"]
    assert (again.done, again.failed_before, again.invalid) == (1, 2, [])
    assert again.done + again.failed_before + len(again.todo) + len(again.invalid) == len(parsed)

    retry = rq.plan(parsed, previous, {"ok", "changed"}, retry_errors=True)
    assert [r.id for r in retry.todo] == ["gone", "failed", "new", "changed"]
    assert [i.id for i in retry.invalid] == ["bad"] and retry.done == 1


def test_one_actor_call_marks_outputs_and_keeps_good_rows_beside_bad_ones(tmp_path) -> None:
    from jobs._generate_stages import GenerateRequests
    from sfsr import watermark
    from sfsr.io.images import decode_png, encode_png
    from sfsr.synth import NEUTRAL_EXPRESSION, make_sample, render

    faces = []
    for i in (1, 2):
        path = tmp_path / f"face{i}.png"
        path.write_bytes(encode_png(render(make_sample(i, NEUTRAL_EXPRESSION, background_seed=i), 64)[0]))
        faces.append(str(path))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    model = model_folder("sfsr/model/pretrained/cpu-demo")
    name, version, dim, _ = read_model(model)
    rows = [
        _row(id="swap", identity=faces[0], background=faces[1], aligned=True),
        _row(id="junk", identity=str(tmp_path / "junk.png"), aligned=True),
        _row(id="word", identity=faces[1], expression="contentment", aligned=True, seed=5),
    ]
    todo = rq.parse_requests(rows, rq.Defaults(2, dim, version))
    actor = GenerateRequests(model, "builtin", str(tmp_path / "out"))
    got = {r["id"]: r for r in actor(pa.Table.from_pylist([r.to_row() for r in todo], schema=REQUEST_ROWS)).to_pylist()}
    assert set(got) == {"swap", "junk", "word"}
    assert got["junk"]["status"] == "error" and f"unreadable image at {tmp_path / 'junk.png'}" in got["junk"]["error"]
    for rid in ("swap", "word"):
        r = got[rid]
        assert r["status"] == "ok" and r["model_version"] == version and r["model"] == name
        data = (tmp_path / "out" / "images" / f"{rid}.png").read_bytes()
        text = watermark.read_png_text(data)
        assert text["sfsr:request_id"] == rid and text["sfsr:seed"] == str(r["seed"]) and text["sfsr:steps"] == "2"
        assert text["sfsr:init"] == "inversion"  # the committed card's default: the photo's face inverted
        assert watermark.detect(decode_png(data)).marked
    # a scene made from text has no face to invert: such a row starts from noise
    scene = [r for r in todo if r.id == "word"][0].to_row() | {"background_prompt": "a lake"}
    assert actor.init(SimpleNamespace(row=scene)) == "noise"
    assert got["word"]["seed"] == 5
    # the background photo outside the face is kept: the swap's corners are face2's corners
    out = decode_png((tmp_path / "out" / "images" / "swap.png").read_bytes())
    bg = decode_png((tmp_path / "face2.png").read_bytes())
    assert out.shape[:2] == (256, 256)  # upscaled from 64 px so that it carries the watermark
    back = cv2.resize(out, (64, 64), interpolation=cv2.INTER_AREA).astype(float)
    corner = np.abs(back[:10, :10] - bg[:10, :10]).mean()
    face = np.abs(back[24:40, 24:40] - bg[24:40, 24:40]).mean()
    assert corner < 4 < face, (corner, face)


def test_an_exemplar_row_is_generated_from_the_banks_face_and_says_which(tmp_path) -> None:
    from jobs._generate_stages import GenerateRequests
    from sfsr import watermark
    from sfsr.generate import Generator
    from sfsr.io.images import encode_png
    from sfsr.synth import NEUTRAL_EXPRESSION, make_sample, render

    path = tmp_path / "face.png"
    path.write_bytes(encode_png(render(make_sample(3, NEUTRAL_EXPRESSION, background_seed=3), 64)[0]))
    model = model_folder("sfsr/model/pretrained/cpu-demo")
    _, version, dim, _ = read_model(model)
    kept = len(Generator.from_pretrained(model).bank.exemplars["contentment"])
    common = dict(identity=str(path), expression="contentment", aligned=True, seed=5)
    rows = [
        _row(id="proto", **common),
        _row(id="ex1", expression_target="exemplar", expression_exemplar=1, **common),
        _row(id="past", expression_target="exemplar", expression_exemplar=kept, **common),
    ]
    todo = rq.parse_requests(rows, rq.Defaults(2, dim, version))
    actor = GenerateRequests(model, "builtin", str(tmp_path / "out"))
    got = {r["id"]: r for r in actor(pa.Table.from_pylist([r.to_row() for r in todo], schema=REQUEST_ROWS)).to_pylist()}
    assert got["past"]["status"] == "error" and f"the bank keeps {kept} (0 to {kept - 1})" in got["past"]["error"]
    images = {rid: (tmp_path / "out" / "images" / f"{rid}.png").read_bytes() for rid in ("proto", "ex1")}
    text = watermark.read_png_text(images["ex1"])
    assert (text["sfsr:expression_target"], text["sfsr:expression_exemplar"]) == ("exemplar", "1")
    assert "sfsr:expression_target" not in watermark.read_png_text(images["proto"])
    assert images["proto"] != images["ex1"]  # same seed, another target


def test_a_run_of_refused_rows_needs_no_ray_and_drops_a_stale_image(tmp_path, monkeypatch) -> None:
    from jobs import generate
    from sfsr.io import table

    def no_ray(*_a, **_k):  # a unit test must never start Ray
        raise AssertionError("refused rows only: nothing should be generated")

    monkeypatch.setattr(generate, "generate", no_ray)
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "a.png").write_bytes(b"an image of an earlier, different request a")
    csv = tmp_path / "r.csv"
    csv.write_text("id,identity,expression\na,x.jpg,joyfull\nb,,joy\n")
    cfg = generate.GenerateConfig(requests=str(csv), output=str(out), steps=2)
    summary = generate.run(cfg)  # every row is refused: nothing to generate, so no Ray
    assert (summary["requests"], summary["ok"], summary["error"], summary["accounted"]) == (2, 0, 2, True)
    assert not (out / "images" / "a.png").exists()
    rows = {r["id"]: r for r in table.read_table(str(out / "results")).to_pylist()}
    assert "unknown word" in rows["a"]["error"] and "identity: missing URI" in rows["b"]["error"]
    files = sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file())
    again = generate.run(cfg)
    assert (again["skipped_failed_before"], again["errors_now"]) == (2, 0)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.rglob("*") if p.is_file()) == files


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory) -> str:
    return str(write_tiny_pipeline(tmp_path_factory.mktemp("t2i") / "tiny-sd"))


def test_prompt_rows_place_the_person_in_a_scene_and_a_broken_folder_errors_only_them(tmp_path, tiny_sd) -> None:
    from jobs._generate_stages import GenerateRequests
    from sfsr import watermark
    from sfsr.io.images import decode_png, encode_png
    from sfsr.scenes import TextToImage
    from sfsr.synth import NEUTRAL_EXPRESSION, make_sample, render

    face = tmp_path / "face.png"
    face.write_bytes(encode_png(render(make_sample(1, NEUTRAL_EXPRESSION, background_seed=1), 64)[0]))
    model = model_folder("sfsr/model/pretrained/cpu-demo")
    _, version, dim, _ = read_model(model)
    scenes = rq.SceneSettings(tiny_sd, width=64, height=64, steps=2)
    rows = [
        _row(id="boxed", identity=str(face), aligned=True, background_prompt="a red barn", background_seed=11,
             head_box=[0.55, 0.1, 0.95, 0.6], expression="joy"),
        _row(id="placed", identity=str(face), aligned=True, background_prompt="a red barn", seed=11),
        _row(id="plain", identity=str(face), aligned=True, expression="joy"),
    ]  # fmt: skip
    todo = rq.parse_requests(rows, rq.Defaults(2, dim, version, scenes))
    batch = pa.Table.from_pylist([r.to_row() for r in todo], schema=REQUEST_ROWS)
    got = {
        r["id"]: r for r in GenerateRequests(model, "builtin", str(tmp_path / "out"), scenes=scenes)(batch).to_pylist()
    }
    assert [got[i]["status"] for i in ("boxed", "placed", "plain")] == ["ok"] * 3, got
    scene = TextToImage.from_pretrained(tiny_sd).background("a red barn", seed=11, width=64, height=64, steps=2)
    for rid in ("boxed", "placed"):
        data = (tmp_path / "out" / "images" / f"{rid}.png").read_bytes()
        text = watermark.read_png_text(data)
        assert (text["sfsr:background"], text["sfsr:background_prompt"]) == ("text-to-image", "a red barn")
        assert (text["sfsr:background_seed"], text["sfsr:text_to_image"]) == ("11", "tiny-sd")
        assert watermark.detect(decode_png(data)).marked
    assert "sfsr:background_prompt" not in watermark.read_png_text(
        (tmp_path / "out" / "images" / "plain.png").read_bytes()
    )
    # the boxed person is painted inside x 0.55..0.95 of the scene: left of it the scene is kept
    out = decode_png((tmp_path / "out" / "images" / "boxed.png").read_bytes()).astype(float)
    up = watermark.upscale_for_watermark(scene)  # the 64 px scene as the output was upscaled to mark it
    assert out.shape == up.shape == (256, 256, 3)
    kept = np.abs(out[:, :120] - up[:, :120]).mean()
    painted = np.abs(out[40:136, 152:232] - up[40:136, 152:232]).mean()
    assert kept < 4 < painted, (kept, painted)

    broken = dataclasses.replace(scenes, folder=str(tmp_path / "nowhere" / "tiny-sd"))
    actor = GenerateRequests(model, "builtin", str(tmp_path / "out2"), scenes=broken)
    again = {r["id"]: r for r in actor(batch).to_pylist()}
    assert again["plain"]["status"] == "ok"
    for rid in ("boxed", "placed"):
        error = again[rid]["error"]
        assert again[rid]["status"] == "error" and f"cannot load --text-to-image {broken.folder}" in error, error
        assert "no model_index.json" in error and error.startswith(f"row {rid}: background_prompt: ")
