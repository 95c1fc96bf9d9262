"""sfsr.cli_settings: a command line derived from a settings dataclass, each setting written once."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sfsr.cli_settings import parse_settings, setting, settings_parser


@dataclass(frozen=True, kw_only=True)
class Demo:
    table: str = setting("face table", required=True, unless="--dry-run")
    store: str = setting("where runs go", "runs", env="DEMO_STORE")
    steps: int = setting("optimiser steps", 2000)
    lr: float | None = setting("learning rate (default: the preset's)", None)
    mode: str = setting("how", "fast", choices=("fast", "slow"))
    gpu: bool = setting("use a GPU", False)
    pose: bool = setting("skip the pose metric", True, flag="--no-pose")
    names: tuple[str, ...] = setting("comma-separated names", ("a", "b"))
    packs: tuple[str, ...] = setting("a pack; repeatable", (), flag="--pack", action="append")


def _parse(argv: list[str]) -> Demo:
    p = settings_parser(Demo, "demo")
    p.add_argument("--dry-run", action="store_true", help="not a setting")
    return parse_settings(Demo, p, argv)[0]


def test_flags_parse_into_the_dataclass_with_its_defaults(monkeypatch) -> None:
    monkeypatch.delenv("DEMO_STORE", raising=False)
    assert _parse(["--table", "t"]) == Demo(table="t")
    got = _parse(
        [
            "--table",
            "t",
            "--steps",
            "7",
            "--lr",
            "1e-3",
            "--mode",
            "slow",
            "--gpu",
            "--no-pose",
            "--names",
            "x,y",
            "--pack",
            "p",
            "--pack",
            "q",
        ]
    )
    assert got == Demo(
        table="t", steps=7, lr=1e-3, mode="slow", gpu=True, pose=False, names=("x", "y"), packs=("p", "q")
    )
    monkeypatch.setenv("DEMO_STORE", "s3://b/runs")
    assert _parse(["--table", "t"]).store == "s3://b/runs"


def test_help_shows_every_default(capsys) -> None:
    with pytest.raises(SystemExit):
        _parse(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in (
        "optimiser steps (default: 2000)",
        "--mode {fast,slow}",
        "(default: a,b)",
        "--no-pose",
        "skip the pose metric (default: True)",
        "a pack; repeatable (default: [])",
    ):
        assert text in out


def test_required_unless_names_the_flag_and_the_way_out(capsys) -> None:
    assert _parse(["--dry-run"]).table is None
    with pytest.raises(SystemExit):
        _parse([])
    assert "--table is required, unless --dry-run: face table" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _parse(["--table", "t", "--mode", "warp"])
    assert "argument --mode: invalid choice: 'warp'" in capsys.readouterr().err


def test_a_field_without_help_or_command_line_form_is_refused() -> None:
    @dataclass(frozen=True)
    class Plain:
        steps: int = 3

    with pytest.raises(TypeError, match=r"Plain.steps is a plain field.*setting\(help"):
        settings_parser(Plain)

    @dataclass(frozen=True)
    class Odd:
        sizes: dict | None = setting("sizes", None)

    with pytest.raises(TypeError, match="Odd.sizes: type .*dict.* has no command-line form"):
        settings_parser(Odd)
