"""bench/photos.py --smoke: the table has its columns, the fractions are counts over the swaps of
the three offline people, copy_target (output = the target crop) never moves towards the source,
and the results are written (about 15 s on one thread)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "photos.py"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_photos", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_photos"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[list[str], Path, object]:
    bench = _bench()
    out = tmp_path_factory.mktemp("photos")
    threads = torch.get_num_threads()
    buf = io.StringIO()
    try:
        with redirect_stdout(buf):
            assert bench.main(["--smoke", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)  # the smoke sets 1 thread
    return buf.getvalue().strip().splitlines(), out, bench


def _table(lines: list[str], columns: tuple[str, ...]) -> list[list[str]]:
    head = next(i for i, line in enumerate(lines) if line.split() == list(columns))
    return [line.split() for line in lines[head + 1 :] if line.split()[0].isdigit()]


def test_the_table_has_the_columns_and_one_row_per_evaluation(smoke) -> None:
    lines, _, bench = smoke
    rows = _table(lines, bench.COLUMNS)
    assert [int(r[0]) for r in rows] == [5, 10]  # --eval-every 5 over 10 steps
    assert all(len(r) == len(bench.COLUMNS) for r in rows)
    assert lines[-1].startswith("verdict: aim ")  # the verdict is the last line


def test_fractions_are_counts_over_every_ordered_pair_of_people(smoke) -> None:
    lines, out, bench = smoke
    result = json.loads((out / "photos-smoke.json").read_text())
    assert (out / "photos-smoke.txt").read_text().strip().splitlines() == lines
    assert result["people"] == {"obama": 4, "biden": 4, "collins": 4}
    # originals as targets: obama's 3 photos under 2 other sources, biden's and collins' 1 under 2 each
    for row in result["rows"]:
        assert row["swaps"] == 3 * 2 + 1 * 2 + 1 * 2  # --smoke: one seed per swap
        for name in ("swap_to_source", "copy_target"):
            count = row[f"{name}_count"]
            assert isinstance(count, int) and 0 <= count <= row["swaps"]
            assert row[name] == count / row["swaps"] and 0.0 <= row[name] <= 1.0
            assert abs(row[name] * row["swaps"] - round(row[name] * row["swaps"])) < 1e-9
        # the target crop itself is nearer its own person's mean than any other person's
        assert row["copy_target"] == 0.0
        assert row["face_psnr"] > 0 and row["loss"] > 0
    printed = _table(lines, bench.COLUMNS)
    assert [float(r[5]) for r in printed] == [round(r["swap_to_source"], 3) for r in result["rows"]]
    assert [float(r[6]) for r in printed] == [0.0, 0.0]
