"""sfsr quickstart's plan: where each stage writes, the Serve config it deploys, reuse, errors.
(The whole pipeline is run by hand and in the README's main command; see the issue notes.)"""

from __future__ import annotations

import argparse
import dataclasses
import json
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
    rc = quickstart.run(args, cli._platform_config(args), up=lambda: started.append(1) or 0, doctor=lambda plan: 0)
    assert rc == 2 and not started
    assert "--photos" in capsys.readouterr().err


def test_serve_config_is_the_shipped_one_with_model_port_and_token(tmp_path: Path) -> None:
    plan = _local_plan(tmp_path, "--port", "8124")
    Path(plan.model).mkdir(parents=True)
    (Path(plan.model) / "config.json").write_text("{}")
    (Path(plan.model) / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    written = yaml.safe_load(quickstart.serve_config(plan).read_text())
    shipped = yaml.safe_load(quickstart.SERVE_CONFIG.read_text())
    assert written["http_options"] == shipped["http_options"] | {"port": 8124}
    assert written["http_options"]["host"] == cluster.LOOPBACK
    deps = {d["name"]: d for d in written["applications"][0]["deployments"]}
    assert deps["Ingress"]["user_config"]["api_token_file"] == str(plan.token_file)
    assert deps["Generator"]["user_config"]["model"] == plan.model
    # pinned to the weights, so a model retrained at the same URI reloads on redeploy
    from sfsr.io.cache import files_digest

    assert deps["Generator"]["user_config"]["model_revision"] == files_digest(plan.model)
    (Path(plan.model) / "diffusion_pytorch_model.safetensors").write_bytes(b"retrained")
    again = quickstart.deployments_by_name(yaml.safe_load(quickstart.serve_config(plan).read_text()))
    assert again["Generator"]["user_config"]["model_revision"] != deps["Generator"]["user_config"]["model_revision"]
    assert [d["name"] for d in written["applications"][0]["deployments"]] == [
        d["name"] for d in shipped["applications"][0]["deployments"]
    ]


def test_a_failed_stage_stops_the_run_and_says_which(tmp_path: Path, capsys) -> None:
    args = _args(tmp_path)
    rc = quickstart.run(args, cli._platform_config(args), up=lambda: 0, doctor=lambda plan: 3)
    assert rc == 3
    err = capsys.readouterr().err
    assert "stopped at stage 2" in err and "run it again to continue" in err


def test_existing_tables_are_reused_unless_fresh(tmp_path: Path, capsys) -> None:
    args = _args(tmp_path)
    plan = quickstart.make_plan(args, cli._platform_config(args))
    assert quickstart._reuse(plan, "the table", True)
    assert "reusing the table" in capsys.readouterr().out
    assert not quickstart._reuse(plan, "the table", False)
    fresh = quickstart.make_plan(_args(tmp_path, "--fresh"), cli._platform_config(args))
    assert not quickstart._reuse(fresh, "the table", True)


@pytest.fixture(autouse=True)
def serving_stops(monkeypatch) -> list:
    """Record stop_serving calls instead of running the serve CLI against whatever cluster is up."""
    calls = []
    monkeypatch.setattr(quickstart, "stop_serving", lambda plan: calls.append(plan))
    return calls


def _local_plan(tmp_path: Path, *extra: str) -> quickstart.Plan:
    args = _args(tmp_path, "--steps", "7", *extra)
    return dataclasses.replace(quickstart.make_plan(args, cli._platform_config(args)), root=str(tmp_path / "data"))


def _earlier_model(plan: quickstart.Plan, **changed) -> Path:
    """An earlier run's exported model: a checkpoint folder and a run card made from `changed`
    inputs (the rest as this run would use)."""
    now = quickstart.made_from_now(plan) | changed
    model = Path(plan.model)
    model.mkdir(parents=True)
    (model.parent / "checkpoint_000001").mkdir()
    (model / "run_card.json").write_text(
        json.dumps(
            {
                "job": {"table": now["table"], "steps": now["steps"]},
                "provenance": {"init_from_sha256": now["init_from_sha256"], "git_commit": now["git_commit"]},
            }
        )
    )
    return model


@pytest.mark.parametrize(
    "changed",
    [{}, {"init_from_sha256": "0" * 64}, {"git_commit": "abc"}, {"steps": 3}, {"table": "s3://elsewhere/faces"}],
)
def test_a_fine_tuned_model_is_reused_only_when_made_from_what_this_run_would_use(
    tmp_path: Path, monkeypatch, changed
) -> None:
    plan = _local_plan(tmp_path)
    model = _earlier_model(plan, **changed)
    submitted = []
    monkeypatch.setattr(quickstart, "submit", lambda cfg, module, *a, **k: submitted.append((module, a)) or 0)
    assert quickstart.stage_train(plan) == 0
    if not changed:
        assert submitted == [] and model.is_dir()
        return
    # retrained from scratch: the old run is gone (else jobs.train would resume it at its last
    # step and train nothing) and the job asks for this run's steps
    assert [m for m, _ in submitted] == ["jobs.train"] and not model.parent.exists()
    args = submitted[0][1]
    assert args[args.index("--steps") + 1] == "7" and args[args.index("--init-from") + 1] == str(quickstart.PRETRAINED)


def test_the_serve_app_is_stopped_before_training_and_evaluating_but_not_for_reuse(tmp_path: Path, monkeypatch) -> None:
    # an earlier run's replicas hold CPUs: on 2 cores jobs.train and jobs.evaluate waited for them forever
    plan = _local_plan(tmp_path)
    _earlier_model(plan)
    events = []
    monkeypatch.setattr(quickstart, "stop_serving", lambda p: events.append("stop"))
    monkeypatch.setattr(quickstart, "submit", lambda cfg, module, *a, **k: events.append(module) or 0)
    assert quickstart.stage_train(plan) == 0 and events == []  # reused: the app keeps serving it
    fresh = _local_plan(tmp_path, "--fresh")
    assert quickstart.stage_train(fresh) == 0 and events == ["stop", "jobs.train"]
    assert quickstart.stage_evaluate(fresh) == 0 and events[2:] == ["stop", "jobs.evaluate"]


def test_fresh_retrains_even_a_matching_model(tmp_path: Path, monkeypatch) -> None:
    plan = _local_plan(tmp_path, "--fresh")
    model = _earlier_model(plan)
    submitted = []
    monkeypatch.setattr(quickstart, "submit", lambda cfg, module, *a, **k: submitted.append(module) or 0)
    assert quickstart.stage_train(plan) == 0
    assert submitted == ["jobs.train"] and not model.exists()


def test_a_report_is_reused_only_for_the_same_weights_and_code(tmp_path: Path, monkeypatch) -> None:
    plan = _local_plan(tmp_path)
    model = Path(plan.model)
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    from sfsr.io.cache import files_digest
    from sfsr.provenance import git_commit

    plan.eval_dir.mkdir(parents=True)
    metrics = plan.eval_dir / "metrics.json"
    submitted = []
    monkeypatch.setattr(quickstart, "submit", lambda cfg, module, *a, **k: submitted.append(module) or 0)

    metrics.write_text(json.dumps({"source": {"weights_sha256": files_digest(model)}, "git_commit": git_commit()}))
    assert quickstart.stage_evaluate(plan) == 0 and submitted == []
    (model / "diffusion_pytorch_model.safetensors").write_bytes(b"retrained")  # a new model, same place
    assert quickstart.stage_evaluate(plan) == 0 and submitted == ["jobs.evaluate"]
    assert not metrics.exists()  # the stale report is gone before the new one is made
    assert (
        quickstart.report_stale_because({"source": {"weights_sha256": "x"}, "git_commit": "y"}, "x", "z")
        == "it was made by other code (y, now z)"
    )
    # a dirty checkout differs from its clean HEAD only in the tail, and must not print alike
    head = "f57f8ee8156572013d86aa"
    why = quickstart.report_stale_because(
        {"source": {"weights_sha256": "x"}, "git_commit": head}, "x", head + " (modified: sfsr/a.py)"
    )
    assert why == "it was made by other code (f57f8ee81565, now f57f8ee81565 (modified: sfsr/a.py))"


def test_summary_names_every_url_and_a_curl_example(tmp_path: Path) -> None:
    args = _args(tmp_path, "--port", "8125")
    plan = quickstart.make_plan(args, cli._platform_config(args))
    plan.eval_dir.mkdir(parents=True)
    (plan.eval_dir / "metrics.json").write_text(
        json.dumps(
            {
                "pairs": 64,
                "task": "swap",
                "split": "test",
                "methods": {
                    "model": {
                        "identity": {"cosine": {"mean": 0.5}, "retrieval_top1": 0.25},
                        "synth": {"identity_accuracy": 0.875},
                        "fd": {"value": 12.0},
                    },
                    "copy_target": {"identity": {"cosine": {"mean": 0.125}}, "synth": {"identity_accuracy": 0.0}},
                    "paste_source": {"synth": {"identity_accuracy": 0.984}},
                },
            }
        )
    )
    text = quickstart.summary(plan)
    for piece in (
        "http://127.0.0.1:8125/",
        "http://127.0.0.1:8125/docs",
        plan.cfg.dashboard_url,
        "curl -H",
        "Authorization: Bearer",
        "/v1/reenact",
        "make down",
        "64 swap pairs of split 'test'",
    ):
        assert piece in text, piece
    table = {
        line.split("  ")[1].strip(): line.split()[-3:] for line in text.splitlines() if line.startswith("  identity")
    }
    assert text.index("copy_target") < text.index("paste_source")
    assert table["identity accuracy (judge)"] == ["0.875", "0", "0.984"]
    assert table["identity cosine"] == ["0.5", "0.125", "-"]
    assert table["identity retrieval top-1"] == ["0.25", "-", "-"]


def test_serve_state_reads_the_dashboards_applications_document() -> None:
    app = lambda status, *deps: {"status": status, "deployments": {f"D{i}": {"status": d} for i, d in enumerate(deps)}}  # noqa: E731
    assert quickstart.serve_state({"applications": {"sfsr": app("RUNNING", "HEALTHY", "HEALTHY")}}) == "running"
    assert quickstart.serve_state({"applications": {"sfsr": app("RUNNING", "HEALTHY", "UPDATING")}}) == "waiting"
    assert quickstart.serve_state({"applications": {"sfsr": app("DEPLOYING", "UPDATING")}}) == "waiting"
    assert quickstart.serve_state({"applications": {"sfsr": app("DEPLOY_FAILED")}}) == "failed"
    assert quickstart.serve_state({"applications": {}}) == "waiting"  # nothing deployed yet


def test_each_stage_prints_its_line_and_the_jobs_get_verbose_only_when_asked(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    submitted = []

    def fake_run_submit(cmd, env, *, timeout, verbose, log):
        submitted.append((cmd, verbose, log))
        return 0

    monkeypatch.setattr(quickstart.job_output, "run_submit", fake_run_submit)
    monkeypatch.setattr(quickstart, "stage_serve", lambda plan: 0)
    monkeypatch.setattr(quickstart, "stage_evaluate", lambda plan: 0)
    monkeypatch.setattr(quickstart, "stage_train", lambda plan: quickstart.submit(plan, "jobs.train", "--steps", "7"))
    monkeypatch.setattr(quickstart, "_table_exists", lambda uri: False)
    monkeypatch.setattr(quickstart.storage, "delete_prefix", lambda uri: None)
    monkeypatch.delenv("SFSR_VERBOSE", raising=False)
    args = _args(tmp_path)
    assert quickstart.run(args, cli._platform_config(args), up=lambda: 0, doctor=lambda plan: 0) == 0
    out = capsys.readouterr().out.splitlines()
    headers = [line for line in out if line.startswith("[") and "done in" not in line]
    assert [h.split("]")[0] + "]" for h in headers] == [f"[{i}/6]" for i in range(1, 7)]
    assert [c[0][c[0].index("-m") + 1] for c in submitted] == ["jobs.ingest", "jobs.ingest", "jobs.train"]
    assert not any("--verbose" in c[0] or c[1] for c in submitted)  # quiet by default
    logs = [c[2] for c in submitted]
    assert len(set(logs)) == 3 and all(log.parent == logs[0].parent for log in logs)

    submitted.clear()
    monkeypatch.setenv("SFSR_VERBOSE", "1")
    assert quickstart.run(args, cli._platform_config(args), up=lambda: 0, doctor=lambda plan: 0) == 0
    assert submitted and all(c[0][-1] == "--verbose" and c[1] for c in submitted)
    assert cli.build_parser().parse_args(["quickstart", "--verbose"]).verbose
