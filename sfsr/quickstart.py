"""`sfsr quickstart`: the whole pipeline on the local platform, each stage run the way a user runs it.

  1. platform up        Ray head + dashboard + SeaweedFS S3, all on 127.0.0.1, token auth on
  2. doctor             jobs/doctor.py through `ray job submit`
  3. ingest             jobs/ingest.py: synthetic faces (train and held-out test splits) and, when
                        given, a folder of real photos through the builtin face pack; tables on S3
  4. train              jobs/train.py: a short fine-tune of the committed cpu-demo model on that
                        table with the recovery losses it was finished with, checkpoints on S3
  5. evaluate           jobs/evaluate.py on the held-out split: metrics.json + report.html
  6. serve              `serve deploy` of deployments/serve_config.yaml with the trained model and
                        an API token; the page, /docs and one real /v1/reenact request answer

A second run reuses what the first made: a stage whose output already exists is skipped (say
--fresh to redo them), so it only brings the platform back and redeploys.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from sfsr import cluster, job_output, signin
from sfsr.io import storage
from sfsr.progress import verbose_requested

REPO = Path(__file__).resolve().parents[1]
PRETRAINED = Path(__file__).resolve().parent / "model" / "pretrained" / "cpu-demo"
SERVE_CONFIG = REPO / "deployments" / "serve_config.yaml"
RUN_NAME = "quickstart"


@dataclass(frozen=True)
class Plan:
    """Where each stage writes (derived from the platform and the flags)."""

    cfg: cluster.PlatformConfig
    root: str  # s3:// prefix (or folder) of tables and training runs
    local: Path  # evaluation report, serve config, API token: files a person opens
    photos: Path | None
    synthetic: int
    steps: int
    port: int
    fresh: bool
    verbose: bool = False  # every line of the jobs (Ray Data's progress too), not just their own
    logs: Path = Path("logs")  # every line of this run's jobs, one file per submission

    @property
    def synth_out(self) -> str:
        return storage.join(self.root, "synth")

    @property
    def photos_out(self) -> str:
        return storage.join(self.root, "photos")

    @property
    def runs(self) -> str:
        return storage.join(self.root, "runs")

    @property
    def model(self) -> str:
        return storage.join(self.runs, RUN_NAME, "model")

    @property
    def eval_dir(self) -> Path:
        return self.local / "evaluation"

    @property
    def token_file(self) -> Path:
        return signin.api_token_file(self.cfg)

    @property
    def base_url(self) -> str:
        return f"http://{cluster.LOOPBACK}:{self.port}"


def make_plan(args: argparse.Namespace, cfg: cluster.PlatformConfig) -> Plan:
    photos = Path(args.photos).resolve() if args.photos else None
    if photos is not None and not photos.is_dir():
        raise ValueError(f"--photos {args.photos}: not a folder")
    if args.synthetic < 64:
        raise ValueError(f"--synthetic {args.synthetic}: too few faces to train on; give at least 64")
    if args.steps < 1:
        raise ValueError(f"--steps {args.steps}: give at least 1 fine-tuning step")
    if not 1 <= args.port <= 65535:
        raise ValueError(f"--port {args.port}: not a TCP port (1-65535)")
    root = f"s3://{cfg.bucket}/quickstart" if cfg.start_s3 else str(cfg.home.parent / "quickstart" / "data")
    return Plan(
        cfg=cfg,
        root=root,
        local=cfg.home.parent / "quickstart",
        photos=photos,
        synthetic=args.synthetic,
        steps=args.steps,
        port=args.port,
        fresh=args.fresh,
        verbose=verbose_requested(getattr(args, "verbose", False)),
        logs=cfg.home.parent / "quickstart" / "logs" / time.strftime("%Y%m%d-%H%M%S"),
    )


def _env(cfg: cluster.PlatformConfig) -> dict[str, str]:
    return os.environ | cluster.client_env(cfg)


def submit(plan: Plan, module: str, *args: str, timeout: float = 1800) -> int:
    """`ray job submit -- python -m MODULE ARGS`, echoed and waited for; the job's own lines are
    shown (all of them with --verbose, which the job gets too) and every line is kept in
    plan.logs/MODULE-N.log."""
    verbose = ("--verbose",) if plan.verbose else ()
    cmd = [cluster._bin("ray"), "job", "submit", "--", "python", "-m", module, *args, *verbose]
    print("$ ray " + " ".join(shlex.quote(c) for c in cmd[1:]), flush=True)
    return job_output.run_submit(
        cmd, _env(plan.cfg), timeout=timeout, verbose=plan.verbose, log=next_log(plan.logs, module)
    )


def next_log(folder: Path, name: str) -> Path:
    """folder/NAME-1.log, NAME-2.log, ...: the first name no earlier submission of this run took
    (created empty here, so it is taken)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = folder / f"{name}-{n}.log"
        try:
            path.touch(exist_ok=False)
            return path
        except FileExistsError:
            n += 1


def _table_exists(uri: str) -> bool:
    from sfsr.io.schema import read_table_info

    try:
        read_table_info(storage.join(uri, "faces"))
        return True
    except (FileNotFoundError, ValueError, OSError):
        return False


def _reuse(plan: Plan, what: str, exists: bool) -> bool:
    if exists and not plan.fresh:
        print(f"reusing {what} from an earlier run (--fresh redoes it)", flush=True)
        return True
    return False


def _read_json(uri: str) -> dict | None:
    try:
        return json.loads(storage.read_bytes(uri))
    except (storage.StorageError, FileNotFoundError, ValueError):
        return None


def made_from_now(plan: Plan) -> dict:
    """What a fine-tuned model made now would be made from: the shipped model's weights and
    config, the code, the table and the number of steps."""
    from sfsr.io.cache import files_digest
    from sfsr.provenance import git_commit

    return {
        "init_from_sha256": files_digest(PRETRAINED),
        "git_commit": git_commit(),
        "table": storage.join(plan.synth_out, "faces"),
        "steps": plan.steps,
    }


def model_stale_because(run_card: dict | None, now: dict) -> str | None:
    """Why an earlier fine-tuned model (its exported run_card.json) is not what this run would
    make, or None when it is."""
    if run_card is None:
        return "no earlier model"
    prov, job = run_card.get("provenance") or {}, run_card.get("job") or {}
    made = {
        "init_from_sha256": prov.get("init_from_sha256"),
        "git_commit": prov.get("git_commit"),
        "table": job.get("table"),
        "steps": job.get("steps"),
    }
    what = {
        "init_from_sha256": "the shipped model",
        "git_commit": "the code",
        "table": "the table",
        "steps": "the number of steps",
    }
    changed = [f"{what[k]} ({_short(made[k])} then, {_short(now[k])} now)" for k in what if made[k] != now[k]]
    return "made from other inputs: " + "; ".join(changed) if changed else None


def _short(value: object) -> str:
    """A digest or commit cut to 12 characters, keeping git_commit's " (modified: ...)" tail: two
    values that differ only there must not print alike."""
    head, sep, tail = str(value).partition(" ")
    return head[:12] + (sep + tail[:100] if sep else "")


def report_stale_because(metrics: dict | None, weights_sha256: str, git_commit: str) -> str | None:
    """Why an earlier metrics.json does not describe the model and code of this run, or None."""
    if metrics is None:
        return "no earlier report"
    changed = []
    if (metrics.get("source") or {}).get("weights_sha256") != weights_sha256:
        changed.append("it scored other weights")
    if metrics.get("git_commit") != git_commit:
        changed.append(f"it was made by other code ({_short(metrics.get('git_commit'))}, now {_short(git_commit)})")
    return "; ".join(changed) or None


def stage_ingest(plan: Plan) -> int:
    if plan.fresh:
        for uri in (plan.synth_out, plan.photos_out):
            storage.delete_prefix(uri)  # ingest skips inputs already in a table: --fresh starts empty
    if not _reuse(plan, f"the synthetic face table {plan.synth_out}", _table_exists(plan.synth_out)):
        common = ("--crop-size", "32", "--identities", "200", "--output", plan.synth_out)
        for split, n in (("train", plan.synthetic), ("test", max(64, plan.synthetic // 8))):
            rc = submit(plan, "jobs.ingest", "--synthetic", str(n), "--synthetic-split", split, *common)
            if rc:
                return rc
    if plan.photos is None:
        print("no --photos folder: skipping the real-photo table (make quickstart fetches test photos)")
        return 0
    if _reuse(plan, f"the photo table {plan.photos_out}", _table_exists(plan.photos_out)):
        return 0
    return submit(plan, "jobs.ingest", "--input", str(plan.photos), "--output", plan.photos_out)


def stage_train(plan: Plan) -> int:
    reason = (
        "--fresh"
        if plan.fresh
        else model_stale_because(_read_json(storage.join(plan.model, "run_card.json")), made_from_now(plan))
    )
    if reason is None:
        print(
            f"reusing the fine-tuned model {plan.model}: made from the shipped model, code, table and steps "
            "this run would use (--fresh retrains)",
            flush=True,
        )
        return 0
    print(f"training {plan.model} ({reason})", flush=True)
    stop_serving(plan)
    # an earlier run of the same name would be resumed at its last step and train nothing
    storage.delete_prefix(storage.join(plan.runs, RUN_NAME))
    return submit(
        plan,
        "jobs.train",
        "--preset",
        "cpu-demo",
        "--init-from",
        str(PRETRAINED),
        "--table",
        storage.join(plan.synth_out, "faces"),
        "--storage",
        plan.runs,
        "--name",
        RUN_NAME,
        "--steps",
        str(plan.steps),
        "--lr",
        "2e-4",
        "--warmup-steps",
        "10",
        "--ema-decay",
        "0.99",
        # the recipe of the shipped model's last stage: a plain denoising fine-tune
        # erodes its swaps (judge identity 0.96 -> 0.75 after 100 steps)
        "--identity-loss-weight",
        "0.5",
        "--expression-loss-weight",
        "0.1",
        "--aux-swap",
        "1.0",
        "--checkpoint-every",
        str(max(1, plan.steps // 2)),
        "--sample-every",
        str(plan.steps),
    )


def stage_evaluate(plan: Plan) -> int:
    from sfsr.io.cache import files_digest, local_folder
    from sfsr.provenance import git_commit

    metrics = plan.eval_dir / "metrics.json"
    earlier = json.loads(metrics.read_text()) if metrics.is_file() else None
    reason = (
        "--fresh" if plan.fresh else report_stale_because(earlier, files_digest(local_folder(plan.model)), git_commit())
    )
    if reason is None:
        print(
            f"reusing the evaluation in {plan.eval_dir}: it scored this model's weights with this code "
            "(--fresh redoes it)",
            flush=True,
        )
        return 0
    print(f"evaluating {plan.model} ({reason})", flush=True)
    stop_serving(plan)
    metrics.unlink(missing_ok=True)  # a failed evaluation must not leave the old report to be reused
    rc = submit(
        plan,
        "jobs.evaluate",
        "--table",
        plan.synth_out,
        "--checkpoint",
        plan.model,
        "--output",
        str(plan.eval_dir),
        "--task",
        "swap",
        "--pairs",
        "64",
        "--kid-subsets",
        "20",
    )
    if rc == 0:
        print(f"report: {plan.eval_dir / 'report.html'}")
    return rc


def derived_serve_config(port: int, model: str, token_file: Path | None, model_revision: str = "") -> dict:
    """deployments/serve_config.yaml with another port, model (and its revision: new weights at
    the same URI need a new one to reach running replicas) and API token file (as a dict; the
    deployments keep their order, so `deployments_by_name` edits them in place)."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["http_options"]["port"] = port
    deps = deployments_by_name(config)
    deps["Ingress"]["user_config"]["api_token_file"] = str(token_file) if token_file else None
    deps["Generator"]["user_config"]["model"] = str(model)
    if model_revision:
        deps["Generator"]["user_config"]["model_revision"] = model_revision
    return config


def deployments_by_name(config: dict) -> dict[str, dict]:
    return {d["name"]: d for d in config["applications"][0]["deployments"]}


def serve_config(plan: Plan) -> Path:
    """The config the quickstart deploys: this run's model (pinned to its weights' sha256, so a
    retrained model reaches the running replicas on redeploy), port and API token file."""
    from sfsr.io.cache import files_digest, local_folder

    path = plan.local / "serve_config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    revision = files_digest(local_folder(plan.model))
    path.write_text(
        yaml.safe_dump(derived_serve_config(plan.port, plan.model, plan.token_file, revision), sort_keys=False)
    )
    return path


def _serve_status(env: dict[str, str]) -> str:
    done = subprocess.run(
        [cluster._bin("serve"), "status"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    return done.stdout + done.stderr


def stop_serving(plan: Plan) -> None:
    """Shut down the Serve application an earlier run left up: its replicas hold CPUs that the
    training job's workers and Ray Data tasks need (on 2 cores the job waits for them forever).
    Stage 6 deploys it again, with the new model."""
    env = _env(plan.cfg) | _serve_env(plan)
    if "sfsr" not in _serve_status(env):
        return
    print(
        "stopping the Serve application of an earlier run: its replicas hold CPUs the jobs need "
        "(stage 6 deploys it again)",
        flush=True,
    )
    subprocess.run(
        [cluster._bin("serve"), "shutdown", "-y"], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def stage_serve(plan: Plan, timeout: float = 600) -> int:
    cluster.ensure_token(plan.token_file)
    if cluster.port_open(plan.port) and "sfsr" not in _serve_status(_env(plan.cfg) | _serve_env(plan)):
        print(f"error: port {plan.port} on 127.0.0.1 is taken by something else; pass --port", file=sys.stderr)
        return 1
    path = serve_config(plan)
    env = _env(plan.cfg) | _serve_env(plan)
    print(f"$ serve deploy {path}", flush=True)
    done = subprocess.run(
        [cluster._bin("serve"), "deploy", str(path)], env=env, capture_output=True, text=True, cwd=REPO, check=False
    )
    if done.returncode:
        print(done.stdout + done.stderr, file=sys.stderr)
        return done.returncode
    problem = wait_serve_running(env, timeout)
    if problem is None:
        return check_app(plan)
    print(f"error: {problem}", file=sys.stderr)
    return 1


def wait_serve_running(env: dict[str, str], timeout: float) -> str | None:
    """Poll Serve until every application is RUNNING and no deployment is deploying or unhealthy:
    None then, else what went wrong. Reads the dashboard's REST API (a small HTTP request; the
    `serve status` CLI it falls back to starts a Python process per poll, which on 2 cores slows
    the very replicas being waited for)."""
    deadline, out = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        apps = _serve_applications(env)
        if apps is not None:
            out = json.dumps(apps, indent=1)
            state = serve_state(apps)
        else:
            out = _serve_status(env)
            state = (
                "running"
                if "status: RUNNING" in out and "DEPLOYING" not in out and "UNHEALTHY" not in out
                else ("failed" if "DEPLOY_FAILED" in out else "waiting")
            )
        if state == "running":
            return None
        if state == "failed":
            return f"the Serve application failed to deploy:\n{out[-3000:]}"
        time.sleep(1)
    return f"the Serve application did not reach RUNNING within {timeout:.0f} s:\n{out[-3000:]}"


def serve_state(apps: dict) -> str:
    """ "running", "failed" or "waiting" from the dashboard's /api/serve/applications/ document."""
    detail = (apps or {}).get("applications") or {}
    if any(a.get("status") == "DEPLOY_FAILED" for a in detail.values()):
        return "failed"
    settled = all(
        a.get("status") == "RUNNING"
        and all(d.get("status") == "HEALTHY" for d in (a.get("deployments") or {}).values())
        for a in detail.values()
    )
    return "running" if detail and settled else "waiting"


def _serve_applications(env: dict[str, str]) -> dict | None:
    """GET {RAY_ADDRESS}/api/serve/applications/ with the cluster's token, or None when that does
    not answer (then the caller asks the CLI)."""
    import urllib.request

    address, token_path = env.get("RAY_ADDRESS", ""), env.get("RAY_AUTH_TOKEN_PATH", "")
    if not address.startswith("http") or not token_path:
        return None
    try:
        token = Path(token_path).read_text().strip()
        request = urllib.request.Request(
            address.rstrip("/") + "/api/serve/applications/", headers={"Authorization": f"Bearer {token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as r:  # the local dashboard, on 127.0.0.1
            return json.loads(r.read())
    except (OSError, ValueError):
        return None


def _serve_env(plan: Plan) -> dict[str, str]:
    return {"RAY_DASHBOARD_ADDRESS": plan.cfg.dashboard_url}  # the serve CLI reads this address


def check_app(plan: Plan) -> int:
    """The page, the docs and one real reenact request (an example face, a word) answer."""
    import requests

    token = plan.token_file.read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    page = requests.get(plan.base_url + "/", timeout=60)
    docs = requests.get(plan.base_url + "/docs", timeout=60)
    if page.status_code != 200 or docs.status_code != 200:
        print(f"error: the page answered {page.status_code}, /docs {docs.status_code}", file=sys.stderr)
        return 1
    listed = requests.get(f"{plan.base_url}/v1/examples", headers=auth, timeout=60)
    listed.raise_for_status()
    example = requests.get(plan.base_url + listed.json()["examples"][0]["url"], headers=auth, timeout=60)
    example.raise_for_status()
    t0 = time.monotonic()
    r = requests.post(
        f"{plan.base_url}/v1/reenact",
        headers=auth,
        timeout=300,
        files={"source": ("example.png", example.content)},
        data={"source_aligned": "true", "expression": "contentment", "seed": "0"},
    )
    if r.status_code != 200:
        print(f"error: POST /v1/reenact answered {r.status_code}: {r.text[:500]}", file=sys.stderr)
        return 1
    out = plan.local / "first-request.png"
    out.write_bytes(r.content)
    print(f"POST /v1/reenact (example face, 'contentment'): 200 in {time.monotonic() - t0:.1f} s -> {out}")
    return 0


def summary(plan: Plan) -> str:
    metrics = plan.eval_dir / "metrics.json"
    lines = [
        "",
        "The sfsr platform is up, trained and serving (everything on 127.0.0.1):",
        f"  web page      {plan.base_url}/",
        f"  sign in       {_signin_line(plan)}",
        f"  API docs      {plan.base_url}/docs",
        f"  dashboard     {plan.cfg.dashboard_url}   (Ray token: {plan.cfg.token_path})",
        f"  API token     {plan.token_file}",
        f"  model         {plan.model}",
        f"  evaluation    {plan.eval_dir / 'report.html'}",
        f"  job logs      {plan.logs}   (every line of each job; --verbose shows them all as they come)",
    ]
    if metrics.is_file():
        lines += [
            "",
            "Evaluation (jobs/evaluate.py, held-out synthetic faces):",
            _headline(json.loads(metrics.read_text())),
        ]
    lines += [
        "",
        "Try it:",
        f'  curl -H "Authorization: Bearer $(cat {plan.token_file})" -F source=@selfie.jpg \\',
        f"       -F expression=hysteria {plan.base_url}/v1/reenact -o reenacted.png",
        "Jobs: `source " + str(plan.cfg.home / "env.sh") + "` then `ray job submit -- python -m jobs.<name> --help`.",
        "Stop everything with `make down` (or `sfsr cluster down`).",
    ]
    return "\n".join(lines)


def _signin_line(plan: Plan) -> str:
    """The page's sign-in link (the token in the #fragment, never sent to the server), or how to
    make one when there is no token yet."""
    try:
        link = signin.signin_url(plan.base_url, signin.read_api_token(plan.cfg))
        return link + "   (open once: signs this browser in)"
    except FileNotFoundError:
        return f"no API token in {plan.token_file} yet"


HEADLINE_ROWS = (  # label, path in a method's scores (jobs/evaluate.py metrics.json)
    ("identity accuracy (judge)", ("synth", "identity_accuracy")),
    ("identity accuracy (render)", ("render", "identity_accuracy")),
    ("expression accuracy (render)", ("render", "expression_accuracy")),
    ("identity cosine", ("identity", "cosine", "mean")),
    ("identity retrieval top-1", ("identity", "retrieval_top1")),
    ("expression L2", ("expression", "l2", "mean")),
    ("FD", ("fd", "value")),
)
HEADLINE_METHODS = ("model", "copy_target", "paste_source")


def _at(d: object, path: tuple[str, ...]) -> object:
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def _headline(m: dict) -> str:
    """metrics.json (jobs/evaluate.py) as a small table: the model's identity, expression and FD
    beside the trivial baselines (copy the target; paste the source's face onto it), so a
    number reads against what doing nothing, or copying, scores."""
    methods = m.get("methods") or {}
    cols = [c for c in HEADLINE_METHODS if c in methods]
    rows = []
    for label, path in HEADLINE_ROWS:
        values = [_at(methods[c], path) for c in cols]
        if any(isinstance(v, (int, float)) for v in values):
            rows.append(
                f"  {label:<28}"
                + "".join(f"{v:>14.3g}" if isinstance(v, (int, float)) else f"{'-':>14}" for v in values)
            )
    if not rows:
        return "(see the report)"
    lines = [f"  {'':<28}" + "".join(f"{c:>14}" for c in cols), *rows]
    if (methods.get("model") or {}).get("fd") and (m.get("feature_network") or {}).get(
        "comparable_to_published"
    ) is False:
        lines.append("  (FD on offline features, not comparable to published FID)")
    pairs = f"{m.get('pairs')} {m.get('task', '')} pairs of split {m.get('split')!r}" if m.get("pairs") else ""
    return "\n".join([pairs] + lines if pairs else lines)


def _export_client_env(cfg: cluster.PlatformConfig) -> int:
    """This process reads the S3 tables too (to reuse them): give it the platform's settings."""
    os.environ.update(cluster.client_env(cfg))
    return 0


def run(
    args: argparse.Namespace, cfg: cluster.PlatformConfig, up: Callable[[], int], doctor: Callable[[Plan], int]
) -> int:
    t_start = time.monotonic()
    try:
        plan = make_plan(args, cfg)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stages = [
        ("local platform up (Ray head, dashboard, S3 store on 127.0.0.1)", lambda: up() or _export_client_env(cfg)),
        ("cluster self-check: jobs/doctor.py", lambda: doctor(plan)),
        ("ingest: synthetic faces and real photos -> face tables", lambda: stage_ingest(plan)),
        (f"train: fine-tune the committed cpu-demo model for {plan.steps} steps", lambda: stage_train(plan)),
        ("evaluate: held-out synthetic faces -> report.html", lambda: stage_evaluate(plan)),
        ("serve: deploy the endpoints and the web page", lambda: stage_serve(plan)),
    ]
    for i, (title, stage) in enumerate(stages, 1):
        t0 = time.monotonic()
        print(f"\n[{i}/{len(stages)}] {title}", flush=True)
        try:
            rc = stage()
        except Exception as e:  # noqa: BLE001 - the stage boundary: say what failed, keep what finished
            print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
            rc = 1
        if rc:
            print(
                f"quickstart stopped at stage {i} ({title}); see the messages above. "
                "What finished is kept: run it again to continue.",
                file=sys.stderr,
            )
            return rc
        print(f"[{i}/{len(stages)}] done in {time.monotonic() - t0:.0f} s", flush=True)
    print(summary(plan))
    print(f"\nquickstart took {(time.monotonic() - t_start) / 60:.1f} min")
    return 0
