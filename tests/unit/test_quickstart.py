"""sfsr quickstart's plan: where each stage writes, the Serve config it deploys, reuse, errors.
(The whole pipeline is run by hand and in the README's main command; see the issue notes.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from sfsr import cli, cluster, quickstart


def _args(tmp_path: Path, *extra: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(["--home", str(tmp_path), "quickstart", *extra])


def test_plan_puts_tables_and_runs_on_s3_and_reports_locally(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    args = _args(tmp_path, "--photos", str(photos), "--steps", "40", "--port", "8123")
    plan = quickstart.make_plan(args, cli._platform_config(args))
    assert plan.synth_out == "s3://sfsr/quickstart/synth" and plan.photos_out == "s3://sfsr/quickstart/photos"
    assert plan.model == "s3://sfsr/quickstart/runs/quickstart/model"
    assert plan.eval_dir == tmp_path / "quickstart" / "evaluation" and plan.photos == photos
    assert plan.base_url == "http://127.0.0.1:8123" and plan.steps == 40 and not plan.fresh
    assert plan.token_file.parent == tmp_path / "local"


def test_missing_photo_folder_is_refused_before_anything_starts(tmp_path: Path, capsys) -> None:
    args = _args(tmp_path, "--photos", str(tmp_path / "nope"))
    started = []
    rc = quickstart.run(args, cli._platform_config(args), up=lambda: started.append(1) or 0, doctor=lambda: 0)
    assert rc == 2 and not started
    assert "--photos" in capsys.readouterr().err


def test_serve_config_is_the_shipped_one_with_model_port_and_token(tmp_path: Path) -> None:
    args = _args(tmp_path, "--port", "8124")
    plan = quickstart.make_plan(args, cli._platform_config(args))
    written = yaml.safe_load(quickstart.serve_config(plan).read_text())
    shipped = yaml.safe_load(quickstart.SERVE_CONFIG.read_text())
    assert written["http_options"] == shipped["http_options"] | {"port": 8124}
    assert written["http_options"]["host"] == cluster.LOOPBACK
    deps = {d["name"]: d for d in written["applications"][0]["deployments"]}
    assert deps["Ingress"]["user_config"]["api_token_file"] == str(plan.token_file)
    assert deps["Generator"]["user_config"]["model"] == plan.model
    assert [d["name"] for d in written["applications"][0]["deployments"]] == \
        [d["name"] for d in shipped["applications"][0]["deployments"]]


def test_a_failed_stage_stops_the_run_and_says_which(tmp_path: Path, capsys) -> None:
    args = _args(tmp_path)
    rc = quickstart.run(args, cli._platform_config(args), up=lambda: 0, doctor=lambda: 3)
    assert rc == 3
    err = capsys.readouterr().err
    assert "stopped at stage 2" in err and "run it again to continue" in err


def test_existing_outputs_are_reused_unless_fresh(tmp_path: Path, capsys) -> None:
    args = _args(tmp_path)
    plan = quickstart.make_plan(args, cli._platform_config(args))
    assert quickstart._reuse(plan, "the table", True)
    assert "reusing the table" in capsys.readouterr().out
    assert not quickstart._reuse(plan, "the table", False)
    fresh = quickstart.make_plan(_args(tmp_path, "--fresh"), cli._platform_config(args))
    assert not quickstart._reuse(fresh, "the table", True)


def test_summary_names_every_url_and_a_curl_example(tmp_path: Path) -> None:
    args = _args(tmp_path, "--port", "8125")
    plan = quickstart.make_plan(args, cli._platform_config(args))
    plan.eval_dir.mkdir(parents=True)
    (plan.eval_dir / "metrics.json").write_text(
        '{"methods": {"model": {"identity": {"cosine": {"mean": 0.5}, "retrieval_top1": 0.25}, "fd": {"value": 12.0}}}}')
    text = quickstart.summary(plan)
    for piece in ("http://127.0.0.1:8125/", "http://127.0.0.1:8125/docs", plan.cfg.dashboard_url, "curl -H",
                  "Authorization: Bearer", "/v1/reenact", "identity cosine 0.5, identity retrieval top-1 0.25, FD 12", "make down"):
        assert piece in text, piece


@pytest.mark.parametrize(("bad", "named"), [("--synthetic=10", "--synthetic 10"), ("--steps=0", "--steps 0"),
                                             ("--port=70000", "--port 70000")])  # fmt: skip
def test_out_of_range_values_are_refused_naming_the_flag(tmp_path: Path, capsys, bad: str, named: str) -> None:
    args = _args(tmp_path, bad)
    assert quickstart.run(args, cli._platform_config(args), up=lambda: 1 / 0, doctor=lambda: 0) == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["--steps=abc", "--port=x"])
def test_bad_numbers_are_argparse_errors(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SystemExit):
        _args(tmp_path, bad)
