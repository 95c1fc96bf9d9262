"""Every job's command line, derived from its settings dataclass (sfsr.cli_settings), is the one
the Makefile, README, quickstart and platform manifests were written against: the same flags in
the same order, with the same defaults, conversions, choices and required flags. The tables
below were captured from `python -m jobs.X --help` before the command lines were derived."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from jobs import doctor, evaluate, ingest, train

# flag, default, action, type, choices: as argparse held them when each flag was written by hand
BEFORE = {
    "train": [
        ("--table", None, "store", None, None),
        ("--storage", "runs", "store", None, None),
        ("--name", None, "store", None, None),
        ("--preset", "cpu-demo", "store", None, None),
        ("--init-from", None, "store", None, None),
        ("--steps", 2000, "store", int, None),
        ("--batch-size", 32, "store", int, None),
        ("--lr", None, "store", float, None),
        ("--warmup-steps", None, "store", int, None),
        ("--ema-decay", None, "store", float, None),
        ("--identity-loss-weight", 0.0, "store", float, None),
        ("--expression-loss-weight", 0.0, "store", float, None),
        ("--aux-start-step", 0, "store", int, None),
        ("--aux-swap", 0.0, "store", float, None),
        ("--num-workers", 1, "store", int, None),
        ("--use-gpu", False, "store_true", None, None),
        ("--checkpoint-every", 200, "store", int, None),
        ("--sample-every", 500, "store", int, None),
        ("--keep-checkpoints", 3, "store", int, None),
        ("--max-failures", 3, "store", int, None),
        ("--seed", 0, "store", int, None),
        ("--split", "train", "store", None, None),
        ("--smoke-test", False, "store_true", None, None),
    ],
    "ingest": [
        ("--input", None, "store", None, None),
        ("--synthetic", 0, "store", int, None),
        ("--output", None, "store", None, None),
        ("--synthetic-split", "train", "store", None, ["train", "test", "all"]),
        ("--seed", 0, "store", int, None),
        ("--identities", 200, "store", int, None),
        ("--pack", "builtin", "store", None, None),
        ("--crop-size", 256, "store", int, None),
        ("--min-face", 32, "store", int, None),
        ("--batch-size", 8, "store", int, None),
        ("--detect-actors", 0, "store", int, None),
        ("--encode-actors", 0, "store", int, None),
        ("--test-fraction", 0.1, "store", float, None),
        ("--identity-from-folder", False, "store_true", None, None),
        ("--retry-errors", False, "store_true", None, None),
        ("--smoke-test", False, "store_true", None, None),
    ],
    "evaluate": [
        ("--table", None, "store", None, None),
        ("--output", None, "store", None, None),
        ("--checkpoint", None, "store", None, None),
        ("--images", None, "store", None, None),
        ("--pairs-only", False, "store_true", None, None),
        ("--task", "swap", "store", None, ["swap", "reenact", "generate"]),
        ("--pairs", 1000, "store", int, None),
        ("--seed", 0, "store", int, None),
        ("--split", "test", "store", None, None),
        ("--words", False, "store_true", None, None),
        ("--features", "auto", "store", None, None),
        ("--fid-weights", None, "store", None, None),
        ("--recogniser", "auto", "store", None, None),
        ("--no-pose", True, "store_false", None, None),
        ("--training-recognisers", "", "store", "comma-separated", None),  # was split after parsing
        ("--kid-subsets", 100, "store", int, None),
        ("--kid-subset-size", 1000, "store", int, None),
        ("--kid-capacity", 10000, "store", int, None),
        ("--batch-size", 64, "store", int, None),
        ("--actors", 0, "store", int, None),
        ("--examples", 8, "store", int, None),
        ("--previous", None, "store", None, None),
        ("--smoke-test", False, "store_true", None, None),
    ],
    "doctor": [
        ("--storage", None, "store", None, None),
        ("--pack", [], "append", None, None),
        ("--model", [], "append", None, None),
        ("--no-builtin", False, "store_true", None, None),
        ("--timeout", 10.0, "store", float, None),
        ("--smoke-test", False, "store_true", None, None),
    ],
}
# flags argparse itself requires, and the mutually exclusive groups (required or not)
REQUIRED = {"train": [], "ingest": ["--output"], "evaluate": ["--table", "--output"], "doctor": []}
GROUPS = {"train": [], "ingest": [(["--input", "--synthetic"], True)],
          "evaluate": [(["--checkpoint", "--images"], False)], "doctor": []}
JOBS = {"train": (train, train.JobConfig), "ingest": (ingest, ingest.IngestConfig),
        "evaluate": (evaluate, evaluate.EvaluateConfig), "doctor": (doctor, doctor.DoctorConfig)}
# the least each command line accepts, and what parse_args resolves it to beyond the dataclass defaults
MINIMAL = {
    "train": (["--table", "t/faces"], {"table": "t/faces", "name": "cpu-demo"}),
    "ingest": (["--input", "photos", "--output", "out"], {"input": "photos", "output": "out"}),
    "evaluate": (["--table", "t", "--output", "out", "--images", "made"], {"table": "t", "output": "out", "images": "made"}),
    "doctor": (["--storage", "probe"], {"storage": "probe"}),
}


def _actions(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction)]


def _action_name(a: argparse.Action) -> str:
    return {argparse._StoreAction: "store", argparse._StoreTrueAction: "store_true",
            argparse._StoreFalseAction: "store_false", argparse._AppendAction: "append"}[type(a)]


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch) -> None:
    monkeypatch.delenv("SFSR_STORAGE", raising=False)


@pytest.mark.parametrize("job", sorted(JOBS))
def test_each_job_has_exactly_the_flags_it_had(job: str) -> None:
    p = JOBS[job][0].parser()
    got = []
    for a in _actions(p):
        assert len(a.option_strings) == 1, f"{a.option_strings}: one spelling per flag"
        kind = "comma-separated" if getattr(a.type, "__name__", "") == "_comma_separated" else a.type
        got.append((a.option_strings[0], a.default, _action_name(a), kind, list(a.choices) if a.choices else None))
        assert a.help, f"jobs.{job} {a.option_strings[0]} has no help text"
    assert got == BEFORE[job]
    assert [a.option_strings[0] for a in _actions(p) if a.required] == REQUIRED[job]
    assert [([a.option_strings[0] for a in g._group_actions], g.required)
            for g in p._mutually_exclusive_groups] == GROUPS[job]


@pytest.mark.parametrize("job", sorted(JOBS))
def test_defaults_are_the_dataclass_defaults(job: str) -> None:
    module, cls = JOBS[job]
    argv, given = MINIMAL[job]
    parsed = module.parse_args(argv)
    cfg = parsed[0] if isinstance(parsed, tuple) else parsed
    assert cfg == cls(**given)
    for f in dataclasses.fields(cls):  # every field has a flag, and every setting flag a field
        assert any(a.dest == f.name for a in _actions(module.parser())), f"{cls.__name__}.{f.name} has no flag"


@pytest.mark.parametrize("job,argv,message", [
    ("train", ["--table", "t", "--steps", "many"], "argument --steps: invalid int value: 'many'"),
    ("train", ["--table", "t", "--lr", "fast"], "argument --lr: invalid float value: 'fast'"),
    ("train", [], "--table is required, unless --smoke-test"),
    ("ingest", ["--synthetic", "8", "--output", "o", "--synthetic-split", "val"], "argument --synthetic-split: invalid choice"),
    ("ingest", ["--input", "i", "--synthetic", "8", "--output", "o"], "argument --synthetic: not allowed with argument --input"),
    ("ingest", ["--output", "o"], "one of the arguments --input --synthetic is required"),
    ("ingest", ["--input", "i", "--output", "o", "--crop-size", "16"], "--crop-size 16 is too small"),
    ("evaluate", ["--table", "t", "--output", "o", "--pairs-only", "--task", "paint"], "argument --task: invalid choice: 'paint'"),
    ("evaluate", ["--table", "t", "--output", "o"], "give --checkpoint"),
    ("evaluate", ["--output", "o", "--pairs-only"], "the following arguments are required: --table"),
    ("doctor", [], "--storage is required (or set SFSR_STORAGE)"),
    ("doctor", ["--storage", "s", "--timeout", "soon"], "argument --timeout: invalid float value: 'soon'"),
])  # fmt: skip
def test_a_bad_value_is_refused_naming_the_flag(job: str, argv: list[str], message: str, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        JOBS[job][0].parse_args(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_smoke_test_shrinks_each_run_as_before() -> None:
    job, smoke = train.parse_args(["--smoke-test", "--steps", "100"])
    assert smoke and (job.table, job.name, job.steps, job.checkpoint_every, job.sample_every, job.batch_size) == (
        "", "cpu-demo-smoke", 6, 3, 6, 8)
    cfg = ingest.parse_args(["--synthetic", "100", "--output", "o", "--smoke-test"])
    assert (cfg.synthetic, cfg.crop_size) == (16, 64)
    assert ingest.parse_args(["--input", "i", "--output", "o", "--smoke-test"]).crop_size == 256  # photos keep their size
    cfg = evaluate.parse_args(["--table", "t", "--output", "o", "--pairs-only", "--smoke-test"])
    assert (cfg.pairs, cfg.kid_subsets, cfg.kid_subset_size, cfg.batch_size) == (16, 10, 8, 8)
    assert doctor.parse_args(["--storage", "s", "--smoke-test"]) == doctor.DoctorConfig(storage="s")


def test_values_reach_the_settings_converted(monkeypatch) -> None:
    cfg = evaluate.parse_args(["--table", "t", "--output", "o", "--checkpoint", "m", "--no-pose",
                               "--training-recognisers", "arcface,,judges", "--kid-capacity", "50"])
    assert (cfg.pose, cfg.training_recognisers, cfg.kid_capacity, cfg.checkpoint) == (False, ("arcface", "judges"), 50, "m")
    cfg = doctor.parse_args(["--storage", "s", "--pack", "a", "--pack", "b", "--no-builtin", "--timeout", "2.5"])
    assert (cfg.pack, cfg.model, cfg.no_builtin, cfg.timeout) == (("a", "b"), (), True, 2.5)
    monkeypatch.setenv("SFSR_STORAGE", "s3://bucket/runs")
    assert train.parse_args(["--table", "t"])[0].storage == "s3://bucket/runs"
    assert train.parse_args(["--table", "t", "--storage", "local"])[0].storage == "local"
    assert doctor.parse_args([]).storage == "s3://bucket/runs"
