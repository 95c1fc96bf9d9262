"""The `sfsr` command: the local platform, the cluster self-check, face packs, expressions.

Each area registers its own subcommands (`register(subparsers)` sets `func(args) -> int`), so this
file stays a table of contents.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from sfsr import cluster, job_output

Fmt = argparse.ArgumentDefaultsHelpFormatter


def _platform_config(args: argparse.Namespace) -> cluster.PlatformConfig:
    home = Path(args.home) / "local" if getattr(args, "home", None) else cluster.PlatformConfig().home
    cfg = cluster.load_config(home)  # a running platform keeps the ports it started with
    if getattr(args, "num_cpus", None) is not None:
        cfg = replace(cfg, num_cpus=args.num_cpus)
    if getattr(args, "dashboard_port", None):
        cfg = replace(cfg, dashboard_port=args.dashboard_port)
    if getattr(args, "no_s3", False):
        cfg = replace(cfg, start_s3=False)
    return cfg


def _print_status(cfg: cluster.PlatformConfig) -> bool:
    rows = cluster.status(cfg)
    width = max(len(k) for k in rows)
    for name, row in rows.items():
        mark = "up  " if row["running"] else "DOWN"
        print(f"  {name:<{width}}  {mark}  {row['address']}")
    return all(r["running"] for r in rows.values())


def cmd_cluster_up(args: argparse.Namespace) -> int:
    cfg = _platform_config(args)
    print(f"Starting the local platform (state in {cfg.home}) ...", flush=True)
    try:
        cluster.up(cfg)
    except (TimeoutError, FileNotFoundError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    _print_status(cfg)
    env_file = cluster.write_env_file(cfg)
    if cfg.start_s3:
        s3_line, doctor_storage = f"{cfg.s3_endpoint}  bucket s3://{cfg.bucket}", f"s3://{cfg.bucket}/doctor"
    else:  # --no-s3: jobs need a local --storage folder
        s3_line, doctor_storage = "not started (--no-s3): give jobs a local --storage folder", "runs/doctor"
    print(
        f"\nDashboard:  {cfg.dashboard_url}   (token auth is on: the page asks for the token in {cfg.token_path})\n"
        f"S3 store:   {s3_line}\n"
        f"\nTo submit jobs from this shell:\n  source {env_file}\n"
        f"  ray job submit -- python -m jobs.doctor --storage {doctor_storage}\n"
        "Everything listens on 127.0.0.1 only. Stop it with `sfsr cluster down`."
    )
    return 0


def cmd_cluster_down(args: argparse.Namespace) -> int:
    cfg = _platform_config(args)
    cluster.down(cfg)
    print("Local platform stopped.")
    return 0


def cmd_cluster_status(args: argparse.Namespace) -> int:
    cfg = _platform_config(args)
    ok = _print_status(cfg)
    if not ok:
        print("Start it with `sfsr cluster up`.")
    return 0 if ok else 1


def cmd_cluster_env(args: argparse.Namespace) -> int:
    cfg = _platform_config(args)
    for k, v in cluster.client_env(cfg).items():
        print(f"export {k}={shlex.quote(v)}")
    return 0


def cmd_cluster_url(args: argparse.Namespace) -> int:
    """The page's sign-in link (the API token in the fragment), as the quickstart printed it."""
    from sfsr import signin

    cfg = _platform_config(args)
    try:
        token = signin.read_api_token(cfg)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    port = args.port or signin.served_port(cfg)
    print(signin.signin_url(f"http://{cluster.LOOPBACK}:{port}", token))
    return 0


def cmd_cluster_token(args: argparse.Namespace) -> int:
    """The API token alone (for the page's token field, curl or a client)."""
    from sfsr import signin

    try:
        print(signin.read_api_token(_platform_config(args)))
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    """Submit jobs/doctor.py to the cluster through `ray job submit`, the way users run jobs."""
    cmd, env = doctor_submission(args)
    try:
        return subprocess.run(cmd, env=env, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"error: the doctor job did not finish within {args.timeout} s", file=sys.stderr)
        return 1


def doctor_submission(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The `ray job submit` command of the doctor job and its environment (the command echoed,
    the secret key masked)."""
    cfg = _platform_config(args)
    # The local platform's token, address and S3 settings, unless this shell set its own
    # (an explicit AWS_ENDPOINT_URL is what the user wants checked).
    env = (cluster.client_env(cfg) if not args.address else {}) | os.environ
    if args.address:
        env["RAY_ADDRESS"] = args.address
    storage = args.storage or env.get("SFSR_STORAGE") or str(Path.cwd() / "runs" / "doctor")
    cmd = [cluster._bin("ray"), "job", "submit"]
    # The job inherits the head's environment; pass the S3 settings this shell chose explicitly
    # (for example a different endpoint), so the check tests what the user asked for.
    s3_vars = {
        k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION") if k in env
    }
    if s3_vars:
        import json

        cmd += ["--runtime-env-json", json.dumps({"env_vars": s3_vars})]
    cmd += ["--", "python", "-m", "jobs.doctor", "--storage", storage]
    for pack in args.pack or []:
        cmd += ["--pack", pack]
    for model in args.model or []:
        cmd += ["--model", model]
    shown = " ".join(shlex.quote(c) for c in cmd[1:])
    if s3_vars.get("AWS_SECRET_ACCESS_KEY"):  # never echo the secret key
        shown = shown.replace(s3_vars["AWS_SECRET_ACCESS_KEY"], "****")
    print(f"$ ray {shown}", flush=True)
    return cmd, env


def cmd_quickstart(args: argparse.Namespace) -> int:
    """The README's main command: the whole pipeline on the local platform (sfsr/quickstart.py)."""
    from sfsr import quickstart

    def doctor(plan: quickstart.Plan) -> int:
        cmd, env = doctor_submission(args)
        log = quickstart.next_log(plan.logs, "jobs.doctor")
        return job_output.run_submit(cmd, env, timeout=args.timeout, verbose=plan.verbose, log=log)

    return quickstart.run(args, _platform_config(args), up=lambda: cmd_cluster_up(args), doctor=doctor)


class RawFmt(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps a description's line breaks and shows defaults."""


def build_parser() -> argparse.ArgumentParser:
    from sfsr import progress, quickstart

    parser = argparse.ArgumentParser(prog="sfsr", description=__doc__, formatter_class=Fmt)
    parser.add_argument(
        "--home", default=None, help="state folder for the local platform (default: $SFSR_HOME or ~/.sfsr)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    cl = sub.add_parser(
        "cluster", help="start, stop or inspect the local platform (Ray head + dashboard + S3)", formatter_class=Fmt
    )
    csub = cl.add_subparsers(dest="action", required=True)
    up = csub.add_parser(
        "up", help="start a loopback-only Ray head, dashboard and SeaweedFS S3 store", formatter_class=Fmt
    )
    up.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use; None: all of them")
    up.add_argument(
        "--dashboard-port",
        type=int,
        default=None,
        help="dashboard port on 127.0.0.1; None: 8265, or the port a running platform chose",
    )
    up.add_argument("--no-s3", action="store_true", help="do not start the S3 store")
    up.set_defaults(func=cmd_cluster_up)
    csub.add_parser("down", help="stop the local platform", formatter_class=Fmt).set_defaults(func=cmd_cluster_down)
    csub.add_parser("status", help="what is running and where", formatter_class=Fmt).set_defaults(
        func=cmd_cluster_status
    )
    csub.add_parser(
        "env", help="print the shell exports clients need (token, address, S3)", formatter_class=Fmt
    ).set_defaults(func=cmd_cluster_env)
    url = csub.add_parser(
        "url",
        help="print the web page's sign-in link (the API token in the #fragment, which browsers never send)",
        formatter_class=Fmt,
    )
    url.add_argument(
        "--port", type=int, default=None, help="the page's port; None: the quickstart's last deployment, else 8000"
    )
    url.set_defaults(func=cmd_cluster_url)
    csub.add_parser(
        "token", help="print the API token the page and the endpoints ask for", formatter_class=Fmt
    ).set_defaults(func=cmd_cluster_token)

    doc = sub.add_parser(
        "doctor", help="run the cluster self-check (jobs/doctor.py) through `ray job submit`", formatter_class=Fmt
    )
    doc.add_argument(
        "--storage",
        default=None,
        help="storage URI to probe (local path or s3://); default $SFSR_STORAGE or ./runs/doctor",
    )
    doc.add_argument("--pack", action="append", help="face pack to check (builtin, folder or s3:// prefix); repeatable")
    doc.add_argument("--model", action="append", help="model folder to check (local or s3://); repeatable")
    doc.add_argument(
        "--address", default=None, help="Ray dashboard URL of another cluster (default: the local platform)"
    )
    doc.add_argument("--timeout", type=float, default=300, help="seconds to wait for the job")
    doc.set_defaults(func=cmd_doctor)

    qs = sub.add_parser(
        "quickstart",
        help="the whole pipeline locally: platform, doctor, ingest, train, evaluate, serve",
        description=quickstart.__doc__,
        formatter_class=RawFmt,
    )
    qs.add_argument(
        "--photos",
        default=None,
        help="folder of real face photos to ingest as well (make quickstart passes the test photos)",
    )
    qs.add_argument(
        "--synthetic", type=int, default=2000, help="synthetic training faces to ingest (plus 1/8 as many held out)"
    )
    qs.add_argument("--steps", type=int, default=100, help="fine-tuning steps on top of the committed cpu-demo model")
    qs.add_argument("--port", type=int, default=8000, help="HTTP port of the endpoints and the page, on 127.0.0.1")
    qs.add_argument("--fresh", action="store_true", help="redo every stage instead of reusing an earlier run's outputs")
    qs.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use; None: all of them")
    qs.add_argument(
        "--dashboard-port",
        type=int,
        default=None,
        help="dashboard port on 127.0.0.1; None: 8265, or the port a running platform chose",
    )
    qs.add_argument("--verbose", action="store_true", help=progress.VERBOSE_HELP + "; every line is in the logs folder")
    qs.set_defaults(func=cmd_quickstart, storage=None, pack=None, model=None, address=None, timeout=300.0, no_s3=False)

    from sfsr import watermark
    from sfsr.expressions import cli as expressions_cli
    from sfsr.faces import packs_cli

    for area in (packs_cli, expressions_cli, watermark):
        area.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
