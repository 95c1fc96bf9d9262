"""jobs/generate.py through `ray job submit`: 50 requests with 5 bad ones give 45 marked PNGs and
5 error rows naming their reasons, a second run changes no file, and the same holds on S3.

Time (the suite is at its budget): the local and the S3 job are submitted at once (each holds
one 1-CPU actor of the 2-CPU cluster, so their start-up costs overlap), and the second runs call
the job's main() in this process, as the job's driver would: with nothing left to do it plans
from the results and never starts Ray (checked). 23-35 s on 2 shared cores.

Backgrounds made from background_prompt: two rows of the S3 table, made by a tiny random Stable
Diffusion folder (tests/fixtures/text_to_image.py, --text-to-image) as 64 px scenes in 2 steps;
the local table's prompt row, run without a folder, is one of its 5 bad rows."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sfsr import watermark
from sfsr.expressions import WORDS
from sfsr.io import storage, table
from sfsr.io.images import decode_png
from tests.fixtures.photos import photos_dir
from tests.fixtures.ray_jobs import submit_all_ok
from tests.fixtures.text_to_image import write_tiny_pipeline

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FACES = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "astronaut.png")
# id -> a fragment its error must contain
BAD = {
    "bad-unreadable": "identity: unreadable image at ",
    "bad-word": "unknown word; expression word 'joyfull'",
    "bad-noface": "background: no face found in ",
    "bad-missing": "identity: missing URI",
    "bad-prompt": "background_prompt given but no text-to-image folder configured; pass --text-to-image",
}


def _inputs(folder: Path) -> dict[str, str]:
    """Small copies (longest side 320 px) of the test photos, coffee (no face) and a text file."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in (*FACES, "coffee.png"):
        img = Image.open(photos_dir() / name).convert("RGB")
        img.thumbnail((320, 320))
        path = folder / (Path(name).stem + ".png")
        img.save(path)
        out[name] = str(path)
    (folder / "junk.jpg").write_text("this is a text file, not a photo")
    out["junk"] = str(folder / "junk.jpg")
    return out


def _requests(img: dict[str, str], good: int) -> list[dict]:
    """`good` valid requests cycling through swaps, words, drivers and vectors, then the 5 bad ones."""
    rows = []
    for i in range(good):
        ident, other = img[FACES[i % 5]], img[FACES[(i + 1 + i // 5) % 5]]
        kind = i % 4
        rows.append(
            {
                "id": f"req-{i:02d}",
                "identity": ident,
                "background": other if kind in (0, 3) else None,
                "expression": WORDS[(7 * i) % len(WORDS)].word if kind == 1 else None,
                "driver": other if kind == 2 else None,
                "expression_vector": json.dumps([round(0.1 * (i % 7) - 0.3, 2)] * 7) if kind == 3 else None,
                "seed": i if i % 2 else None,
            }
        )
    rows += [
        {"id": "bad-unreadable", "identity": img["junk"]},
        {"id": "bad-word", "identity": img["obama.jpg"], "expression": "joyfull"},
        {"id": "bad-noface", "identity": img["biden.jpg"], "background": img["coffee.png"]},
        {"id": "bad-missing", "identity": None, "expression": "joy"},
        {"id": "bad-prompt", "identity": img["astronaut.png"], "background_prompt": "a beach at dusk"},
    ]
    cols = ("id", "identity", "background", "expression", "driver", "expression_vector", "seed", "background_prompt")
    return [{c: r.get(c) for c in cols} for r in rows]


def _snapshot(prefix: str) -> dict[str, tuple]:
    """Every file under a prefix with its content hash and version (local: mtime, so a rewrite of
    the same bytes shows too; S3: the ETag)."""
    return {
        f.uri: (hashlib.sha256(storage.read_bytes(f.uri)).hexdigest(), f.version) for f in storage.stat_files(prefix)
    }


def _check(out: str, good: int, stdout: str) -> None:
    results = table.read_table(storage.join(out, "results")).to_pylist()
    by_id = {r["id"]: r for r in results}
    assert len(results) == len(by_id) == good + len(BAD)
    ok = [r for r in results if r["status"] == "ok"]
    assert len(ok) == good and all(r["error"] is None and r["seconds"] > 0 for r in ok)
    for rid, fragment in BAD.items():
        r = by_id[rid]
        assert r["status"] == "error" and r["output_uri"] is None and fragment in r["error"], r
    pngs = storage.list_files(storage.join(out, "images"), (".png",))
    assert sorted(pngs) == sorted(r["output_uri"] for r in ok)
    # every output is marked and says what made it; the explicit seeds are the ones used
    assert all(by_id[f"req-{i:02d}"]["seed"] == i for i in range(1, good, 2))
    data = storage.read_bytes(ok[0]["output_uri"])
    text = watermark.read_png_text(data)
    assert text["sfsr:request_id"] == ok[0]["id"] and text["sfsr:model_version"] == ok[0]["model_version"]
    assert text["Description"] == watermark.GENERATED_STATEMENT and watermark.detect(decode_png(data)).marked
    assert f"{good} ok + {len(BAD)} error = {good + len(BAD)}" in stdout


def _rerun(args: tuple[str, ...], capsys) -> str:
    """The job's driver, in this process; it must finish without Ray."""
    import ray

    from jobs import generate

    capsys.readouterr()
    assert generate.main(list(args)) == 0
    assert not ray.is_initialized(), "a run with nothing to do started Ray"
    return capsys.readouterr().out


PROMPTS = {  # id -> (prompt, background_seed, head_box): the rows of the S3 table made in scenes
    "boxed": ("a lighthouse at dawn", 3, [0.5, 0.1, 0.9, 0.6]),
    "placed": ("a quiet library", None, None),
}


def _s3_case(img: dict[str, str], prefix: str, tiny_sd: Path) -> tuple[str, ...]:
    """The inputs copied to S3 and a CSV table of 12 requests there (9 good, 1 bad, 2 made in
    scenes from prompts by the tiny text-to-image folder: 64 px, 2 steps); the job's arguments."""
    on_s3 = {k: storage.join(prefix, "in", Path(v).name) for k, v in img.items()}
    for k, v in img.items():
        storage.write_bytes(on_s3[k], Path(v).read_bytes())
    rows = _requests(on_s3, 9)[:9] + [{"id": "bad-word", "identity": on_s3["obama.jpg"], "expression": "joyfull"}]
    for (rid, (prompt, seed, box)), face, word in zip(PROMPTS.items(), ("obama.jpg", "biden.jpg"), ("joy", None)):
        rows.append(
            {"id": rid, "identity": on_s3[face], "background_prompt": prompt, "background_seed": seed,
             "head_box": box, "expression": word}
        )  # fmt: skip
    cols = ("id", "identity", "background", "expression", "driver", "expression_vector", "seed")
    cols += ("background_prompt", "background_seed", "head_box")
    text = io.StringIO()  # the csv module quotes the JSON lists' commas
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(cols)
    for r in rows:
        writer.writerow(["" if r.get(c) is None else json.dumps(r[c]) if c == "head_box" else r[c] for c in cols])
    storage.write_bytes(storage.join(prefix, "requests.csv"), text.getvalue().encode())
    return (
        "--requests", storage.join(prefix, "requests.csv"), "--output", storage.join(prefix, "out"), "--steps", "2",
        "--text-to-image", str(tiny_sd), "--scene-width", "64", "--scene-height", "64", "--scene-steps", "2",
    )  # fmt: skip


def _check_prompt_rows(results: dict[str, dict], out: str) -> None:
    """The prompt rows: placed in their scenes, the provenance naming prompt, seed and folder."""
    for rid, (prompt, seed, _) in PROMPTS.items():
        r = results[rid]
        assert r["status"] == "ok" and r["output_uri"] == storage.join(out, "images", f"{rid}.png"), r
        data = storage.read_bytes(r["output_uri"])
        text = watermark.read_png_text(data)
        assert (text["sfsr:background"], text["sfsr:background_prompt"]) == ("text-to-image", prompt)
        assert text["sfsr:background_seed"] == str(r["seed"] if seed is None else seed)  # default: the row's seed
        assert text["sfsr:text_to_image"] == "tiny-sd" and watermark.detect(decode_png(data)).marked


def test_generate_locally_and_on_s3_and_reruns_change_nothing(platform_env, s3_server, tmp_path, capsys) -> None:
    img = _inputs(tmp_path / "in")
    requests = tmp_path / "requests.parquet"
    pq.write_table(pa.Table.from_pylist(_requests(img, 45)), requests)
    out = str(tmp_path / "out")
    local_args = ("--requests", str(requests), "--output", out, "--steps", "2")
    s3_args = _s3_case(img, s3_server.uri("generate-test", tmp_path.name), write_tiny_pipeline(tmp_path / "tiny-sd"))
    s3_out = s3_args[3]
    # both jobs at once: each holds one actor (1 CPU) of the 2-CPU cluster
    first, s3_first = submit_all_ok(
        platform_env, ("jobs.generate", *local_args), ("jobs.generate", *s3_args), timeout=300
    )

    _check(out, 45, first)
    before = _snapshot(out)
    again = _rerun(local_args, capsys)
    assert "45 already done, 5 failed before" in again and "0 to generate" in again
    assert _snapshot(out) == before

    results = {r["id"]: r for r in table.read_table(storage.join(s3_out, "results")).to_pylist()}
    assert len(results) == 12 and sum(r["status"] == "ok" for r in results.values()) == 11
    assert "unknown word" in results["bad-word"]["error"] and "11 ok + 1 error = 12" in s3_first
    assert all(r["output_uri"].startswith(s3_out + "/images/") for r in results.values() if r["status"] == "ok")
    _check_prompt_rows(results, s3_out)
    before = _snapshot(s3_out)
    assert len([u for u in before if u.endswith(".png")]) == 11
    again = _rerun(s3_args, capsys)
    assert "11 already done, 1 failed before" in again and "0 to generate" in again and _snapshot(s3_out) == before
