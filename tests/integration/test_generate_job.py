"""jobs/generate.py through `ray job submit`: 50 requests with 5 bad ones give 45 marked PNGs and
5 error rows naming their reasons, a second run changes no file, and the same holds on S3.

Time (the suite is at its budget): the local and the S3 job are submitted at once (each holds
one 1-CPU actor of the 2-CPU cluster, so their start-up costs overlap), and the second runs call
the job's main() in this process, as the job's driver would: with nothing left to do it plans
from the results and never starts Ray (checked). 23-35 s on 2 shared cores.

The S3 job reads the same 50 requests as CSV, its inputs copied to the local SeaweedFS, and writes
there. Each table's prompt row, run without a text-to-image folder, is one of its 5 bad rows;
backgrounds made from prompts by a tiny Stable Diffusion folder are generated in
tests/unit/test_generate_job.py (the job's actor) and tests/e2e/test_page.py (the Serve API)."""

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


def _s3_case(img: dict[str, str], prefix: str) -> tuple[str, ...]:
    """The inputs copied to S3 and the same 50 requests as a CSV table there; the job's arguments."""
    on_s3 = {k: storage.join(prefix, "in", Path(v).name) for k, v in img.items()}
    for k, v in img.items():
        storage.write_bytes(on_s3[k], Path(v).read_bytes())
    rows = _requests(on_s3, 45)
    cols = list(rows[0])
    text = io.StringIO()  # the csv module quotes the JSON vectors' commas
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(cols)
    for r in rows:
        writer.writerow(["" if r[c] is None else r[c] for c in cols])
    storage.write_bytes(storage.join(prefix, "requests.csv"), text.getvalue().encode())
    return ("--requests", storage.join(prefix, "requests.csv"), "--output", storage.join(prefix, "out"), "--steps", "2")


def test_generate_locally_and_on_s3_and_reruns_change_nothing(platform_env, s3_server, tmp_path, capsys) -> None:
    img = _inputs(tmp_path / "in")
    requests = tmp_path / "requests.parquet"
    pq.write_table(pa.Table.from_pylist(_requests(img, 45)), requests)
    out = str(tmp_path / "out")
    local_args = ("--requests", str(requests), "--output", out, "--steps", "2")
    s3_args = _s3_case(img, s3_server.uri("generate-test", tmp_path.name))
    s3_out = s3_args[3]
    # both jobs at once: each holds one actor (1 CPU) of the 2-CPU cluster
    first, s3_first = submit_all_ok(
        platform_env, ("jobs.generate", *local_args), ("jobs.generate", *s3_args), timeout=300
    )
    for where, args, stdout in ((out, local_args, first), (s3_out, s3_args, s3_first)):
        _check(where, 45, stdout)
        assert all(r.startswith(where) for r in storage.list_files(storage.join(where, "images"), (".png",)))
        before = _snapshot(where)
        again = _rerun(args, capsys)
        assert "45 already done, 5 failed before" in again and "0 to generate" in again, again
        assert _snapshot(where) == before
