"""`sfsr cluster up` tells the user what it started, and only that (no Ray is started here)."""

from __future__ import annotations

import pytest

from sfsr import cli, cluster


@pytest.fixture
def fake_up(monkeypatch):
    started = []

    def up(cfg):  # what the real one does before starting processes
        cfg.home.mkdir(parents=True, exist_ok=True)
        started.append(cfg)

    monkeypatch.setattr(cluster, "up", up)
    monkeypatch.setattr(cluster, "status", lambda cfg: {"ray head": {"running": True, "address": "127.0.0.1:6379"}})
    return started


def _up(tmp_path, *extra):
    args = cli.build_parser().parse_args(["--home", str(tmp_path), "cluster", "up", *extra])
    return args.func(args)


def test_up_names_the_s3_store_and_an_s3_doctor_command(tmp_path, fake_up, capsys):
    assert _up(tmp_path) == 0
    out = capsys.readouterr().out
    assert fake_up[0].start_s3
    assert "S3 store:   http://127.0.0.1:" in out and "--storage s3://sfsr/doctor" in out


def test_up_without_s3_does_not_advertise_a_store_it_did_not_start(tmp_path, fake_up, capsys):
    assert _up(tmp_path, "--no-s3") == 0
    out = capsys.readouterr().out
    assert not fake_up[0].start_s3
    assert "S3 store:   not started (--no-s3)" in out
    assert "s3://" not in out and "--storage runs/doctor" in out
    assert "AWS_" not in (tmp_path / "local" / "env.sh").read_text()
