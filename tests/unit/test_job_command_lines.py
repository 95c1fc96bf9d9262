"""Every job's command line, derived from its settings dataclass (sfsr.cli_settings), is the one
the Makefile, README, quickstart and platform manifests were written against: the same flags in
the same order, with the same defaults, conversions, choices and required flags, as captured in
tests/fixtures/job_flags_before.json from the jobs whose flags were written by hand."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from jobs import doctor, evaluate, generate, ingest, train
from sfsr.cli_settings import settings_parser

BEFORE = json.loads((Path(__file__).parents[1] / "fixtures" / "job_flags_before.json").read_text())
JOBS = {
    "train": (train, train.JobConfig),
    "ingest": (ingest, ingest.IngestConfig),
    "evaluate": (evaluate, evaluate.EvaluateConfig),
    "doctor": (doctor, doctor.DoctorConfig),
    "generate": (generate, generate.GenerateConfig),
}
# the least each command line accepts, and what parse_args resolves it to beyond the dataclass defaults
MINIMAL = {
    "train": (["--table", "t/faces"], {"table": "t/faces", "name": "cpu-demo"}),
    "ingest": (["--input", "photos", "--output", "out"], {"input": "photos", "output": "out"}),
    "evaluate": (
        ["--table", "t", "--output", "out", "--images", "made"],
        {"table": "t", "output": "out", "images": "made"},
    ),
    "doctor": (["--storage", "probe"], {"storage": "probe"}),
    "generate": (["--requests", "r.csv", "--output", "out"], {"requests": "r.csv", "output": "out"}),
}
ACTIONS = {
    argparse._StoreAction: "store",
    argparse._StoreTrueAction: "store_true",
    argparse._StoreFalseAction: "store_false",
    argparse._AppendAction: "append",
}


def _parser(job: str) -> argparse.ArgumentParser:
    """The parser jobs.<job>.parse_args builds, caught as it is built."""
    module, built = JOBS[job][0], []
    with pytest.MonkeyPatch.context() as m:
        m.setattr(module, "settings_parser", lambda *a, **kw: built.append(settings_parser(*a, **kw)) or built[-1])
        module.parse_args(MINIMAL[job][0])
    return built[0]


def _actions(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction)]


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch) -> None:
    monkeypatch.delenv("SFSR_STORAGE", raising=False)


@pytest.mark.parametrize("job", sorted(JOBS))
def test_each_job_has_exactly_the_flags_it_had(job: str) -> None:
    p = _parser(job)
    got = []
    for a in _actions(p):
        assert len(a.option_strings) == 1 and a.help, f"jobs.{job} {a.option_strings}: one spelling, with help text"
        kind = (
            "comma-separated"
            if getattr(a.type, "__name__", "") == "_comma_separated"
            else getattr(a.type, "__name__", None)
        )
        got.append([a.option_strings[0], a.default, ACTIONS[type(a)], kind, list(a.choices) if a.choices else None])
    assert got == BEFORE[job]["flags"]
    assert [a.option_strings[0] for a in _actions(p) if a.required] == BEFORE[job]["required"]
    assert [
        [[a.option_strings[0] for a in g._group_actions], g.required] for g in p._mutually_exclusive_groups
    ] == BEFORE[job]["groups"]


@pytest.mark.parametrize("job", sorted(JOBS))
def test_defaults_are_the_dataclass_defaults(job: str) -> None:
    module, cls = JOBS[job]
    argv, given = MINIMAL[job]
    parsed = module.parse_args(argv)
    assert (parsed[0] if isinstance(parsed, tuple) else parsed) == cls(**given)
    dests = {a.dest for a in _actions(_parser(job))}
    assert {f.name for f in dataclasses.fields(cls)} == dests - {"smoke_test"}  # a flag per setting, no other


@pytest.mark.parametrize(
    "job,argv,message",
    [
        ("train", ["--table", "t", "--steps", "many"], "argument --steps: invalid int value: 'many'"),
        ("train", ["--table", "t", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
        ("train", [], "--table is required, unless --smoke-test"),
        (
            "ingest",
            ["--synthetic", "8", "--output", "o", "--synthetic-split", "val"],
            "argument --synthetic-split: invalid choice",
        ),
        (
            "ingest",
            ["--input", "i", "--synthetic", "8", "--output", "o"],
            "argument --synthetic: not allowed with argument --input",
        ),
        ("ingest", ["--output", "o"], "one of the arguments --input --synthetic is required"),
        ("ingest", ["--input", "i", "--output", "o", "--crop-size", "16"], "--crop-size 16 is too small"),
        (
            "evaluate",
            ["--table", "t", "--output", "o", "--pairs-only", "--task", "paint"],
            "argument --task: invalid choice: 'paint'",
        ),
        ("evaluate", ["--table", "t", "--output", "o"], "give --checkpoint"),
        ("evaluate", ["--output", "o", "--pairs-only"], "the following arguments are required: --table"),
        ("doctor", [], "--storage is required (or set SFSR_STORAGE)"),
        ("doctor", ["--storage", "s", "--timeout", "soon"], "argument --timeout: invalid float value: 'soon'"),
        ("generate", ["--output", "o"], "--requests is required, unless --smoke-test"),
        ("generate", ["--requests", "r", "--output", "o", "--max-output-side", "64"], "--max-output-side 64"),
        ("generate", ["--requests", "r", "--output", "o", "--steps", "0"], "--steps within 1..1000"),
        (
            "generate",
            ["--requests", "r", "--output", "o", "--text-to-image", "sd", "--scene-width", "100"],
            "--scene-width 100: give a multiple of 8 from 64 to 2048",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_the_flag(job: str, argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        JOBS[job][0].parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_smoke_test_shrinks_each_run_as_before() -> None:
    job, smoke = train.parse_args(["--smoke-test", "--steps", "100"])
    assert smoke and (job.table, job.name, job.steps, job.checkpoint_every, job.sample_every, job.batch_size) == (
        "",
        "cpu-demo-smoke",
        6,
        3,
        6,
        8,
    )
    cfg = ingest.parse_args(["--synthetic", "100", "--output", "o", "--smoke-test"])
    assert (cfg.synthetic, cfg.crop_size) == (16, 64)
    assert (
        ingest.parse_args(["--input", "i", "--output", "o", "--smoke-test"]).crop_size == 256
    )  # photos keep their size
    cfg = evaluate.parse_args(["--table", "t", "--output", "o", "--pairs-only", "--smoke-test"])
    assert (cfg.pairs, cfg.kid_subsets, cfg.kid_subset_size, cfg.batch_size) == (16, 10, 8, 8)
    assert doctor.parse_args(["--storage", "s", "--smoke-test"]) == doctor.DoctorConfig(storage="s")
    cfg, smoke = generate.parse_args(["--output", "o", "--smoke-test", "--steps", "20"])
    assert smoke and (cfg.requests, cfg.steps, cfg.batch_size) == (None, 2, 4)


def test_values_reach_the_settings_converted(monkeypatch) -> None:
    cfg = evaluate.parse_args(
        [
            "--table",
            "t",
            "--output",
            "o",
            "--checkpoint",
            "m",
            "--no-pose",
            "--training-recognisers",
            "arcface,,judges",
            "--kid-capacity",
            "50",
        ]
    )
    assert (cfg.pose, cfg.training_recognisers, cfg.kid_capacity, cfg.checkpoint) == (
        False,
        ("arcface", "judges"),
        50,
        "m",
    )
    cfg = doctor.parse_args(["--storage", "s", "--pack", "a", "--pack", "b", "--no-builtin", "--timeout", "2.5"])
    assert (cfg.pack, cfg.model, cfg.no_builtin, cfg.timeout) == (("a", "b"), (), True, 2.5)
    monkeypatch.setenv("SFSR_STORAGE", "s3://bucket/runs")
    assert train.parse_args(["--table", "t"])[0].storage == "s3://bucket/runs"
    assert train.parse_args(["--table", "t", "--storage", "local"])[0].storage == "local"
    assert doctor.parse_args([]).storage == "s3://bucket/runs"


def test_the_train_driver_resolves_local_paths_for_its_workers(tmp_path, monkeypatch) -> None:
    # the workers run in another folder: a relative --init-from once failed there
    monkeypatch.chdir(tmp_path)
    job, _ = train.parse_args(["--table", "t/faces", "--init-from", "m", "--storage", "s3://bucket/runs"])
    assert (job.table, job.init_from) == ("t/faces", "m")  # parse_args reads the line as written
    job = train.with_absolute_paths(job)
    assert (job.table, job.init_from, job.storage) == (
        str(tmp_path / "t/faces"),
        str(tmp_path / "m"),
        "s3://bucket/runs",
    )
