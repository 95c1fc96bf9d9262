"""The local platform: a loopback-only Ray head (with dashboard and token auth) and a SeaweedFS
S3 store, started and stopped as plain processes.

This module never imports Ray (DESIGN.md: sfsr/ runs in a plain Python process); it drives the
`ray` and `weed` executables of the current virtual environment. `sfsr cluster up` and the test
suite's session fixtures both call it, so the tests exercise exactly what users run.

Why each setting (FACTS.md):
- RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, else `--node-ip-address=127.0.0.1` is silently replaced by
  the machine's address.
- `ray start --head` turns token auth on only if a token exists, so we create one first and point
  every process at it with RAY_AUTH_TOKEN_PATH; clients also need RAY_AUTH_MODE=token.
- the S3 credentials are in the head's environment, so every job, task and actor inherits them.
- RAY_preload_python_modules=deployments.replica_bind: Serve replicas' gRPC server would listen on
  every interface (Ray has no setting for it); see deployments/replica_bind.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from sfsr import c2pa_sign

LOOPBACK = "127.0.0.1"
STATE_FILE = "platform.json"


@dataclass(frozen=True)
class S3Ports:
    """SeaweedFS's loopback ports (its defaults); each service also has a gRPC port."""

    s3: int = 8333
    master: int = 9333
    volume: int = 8080
    filer: int = 8888
    s3_grpc: int = 18333
    master_grpc: int = 19333
    volume_grpc: int = 18080
    filer_grpc: int = 18888


@dataclass(frozen=True)
class PlatformConfig:
    """Where the local platform keeps its state and which loopback ports it uses."""

    home: Path = field(default_factory=lambda: Path(os.environ.get("SFSR_HOME", Path.home() / ".sfsr")) / "local")
    ray_port: int = 6379
    dashboard_port: int = 8265
    client_server_port: int = 10001
    num_cpus: int | None = None  # None: Ray counts the machine's CPUs
    s3: S3Ports = field(default_factory=S3Ports)
    bucket: str = "sfsr"
    region: str = "us-east-1"
    start_s3: bool = True

    @property
    def ray_temp_dir(self) -> Path:
        # Ray puts unix sockets under its temp dir; socket paths are limited to ~107 bytes, so
        # the temp dir is short and lives in /tmp, keyed by the state dir.
        key = hashlib.sha1(str(self.home.resolve()).encode()).hexdigest()[:10]
        return Path("/tmp") / f"sfsr-ray-{key}"

    @property
    def token_path(self) -> Path:
        return self.home / "auth_token"

    @property
    def dashboard_url(self) -> str:
        return f"http://{LOOPBACK}:{self.dashboard_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.s3.s3}"


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _bin(name: str) -> str:
    """An executable of this virtual environment (falls back to PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(
            f"`{name}` not found next to {sys.executable} or on PATH; install sfsr with its test extra"
        )
    return found


def ensure_token(path: Path) -> str:
    """Create the cluster's auth token (0600) once; return it."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def ensure_s3_credentials(home: Path) -> tuple[str, str]:
    path = home / "s3_credentials.json"
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"access_key": "sfsr" + secrets.token_hex(6), "secret_key": secrets.token_hex(20)}, f)
    creds = json.loads(path.read_text())
    return creds["access_key"], creds["secret_key"]


def client_env(cfg: PlatformConfig) -> dict[str, str]:
    """Environment a client (ray job submit, a test, a job) needs to use this platform."""
    env = {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(cfg.token_path),
        "RAY_ADDRESS": cfg.dashboard_url,
    }
    if cfg.start_s3:
        access, secret = ensure_s3_credentials(cfg.home)
        env |= {
            "AWS_ENDPOINT_URL": cfg.s3_endpoint,
            "AWS_ACCESS_KEY_ID": access,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_REGION": cfg.region,
            "SFSR_STORAGE": f"s3://{cfg.bucket}",
        }
    return env


def _wait(what: str, ok, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ok():
            return
        time.sleep(0.25)
    tail = ""
    if log is not None and log.exists():
        tail = (
            "\n--- last lines of " + str(log) + " ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:])
        )
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s{tail}")


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    return proc.pid


def start_s3(cfg: PlatformConfig, timeout: float = 60) -> int:
    """Start SeaweedFS (`weed mini`) bound to 127.0.0.1 and create the bucket; return its pid."""
    access, secret = ensure_s3_credentials(cfg.home)
    data = cfg.home / "s3"
    data.mkdir(parents=True, exist_ok=True)
    p = cfg.s3
    cmd = [
        _bin("weed"),
        "mini",
        f"-dir={data}",
        f"-ip={LOOPBACK}",
        f"-ip.bind={LOOPBACK}",
        f"-s3.port={p.s3}",
        f"-master.port={p.master}",
        f"-volume.port={p.volume}",
        f"-filer.port={p.filer}",
        f"-s3.port.grpc={p.s3_grpc}",
        f"-master.port.grpc={p.master_grpc}",
        f"-volume.port.grpc={p.volume_grpc}",
        f"-filer.port.grpc={p.filer_grpc}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",  # never send traffic off the machine
    ]
    env = os.environ | {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    log = cfg.home / "logs" / "s3.log"
    pid = _spawn(cmd, env, log)
    _wait(f"SeaweedFS S3 on {cfg.s3_endpoint}", lambda: _s3_ready(cfg, access, secret), timeout, log)
    return pid


def _s3_ready(cfg: PlatformConfig, access: str, secret: str) -> bool:
    if not port_open(cfg.s3.s3):
        return False
    import boto3  # local import: only the S3 parts of this module need it
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=cfg.s3_endpoint,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        region_name=cfg.region,
        config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )
    try:
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if cfg.bucket not in names:
            client.create_bucket(Bucket=cfg.bucket)
        return True
    except Exception:  # noqa: BLE001 - any failure here means "not ready yet"; the timeout reports it
        return False


def _dashboard_ready(cfg: PlatformConfig, token: str) -> bool:
    req = urllib.request.Request(cfg.dashboard_url + "/api/version", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


PRELOAD_ENV = "RAY_preload_python_modules"  # a Ray config: modules every Python worker imports first
REPLICA_BIND_MODULE = "deployments.replica_bind"


def preload_modules(existing: str) -> str:
    """The comma-separated preload list with the replica-bind module added (kept once)."""
    names = [n for n in existing.split(",") if n.strip()]
    return ",".join(names if REPLICA_BIND_MODULE in names else [*names, REPLICA_BIND_MODULE])


def start_ray(cfg: PlatformConfig, timeout: float = 90) -> int:
    """Start a Ray head with dashboard, bound to 127.0.0.1, token auth on; return its pid."""
    token = ensure_token(cfg.token_path)
    cmd = [
        _bin("ray"),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--node-ip-address={LOOPBACK}",
        f"--port={cfg.ray_port}",
        "--include-dashboard=true",
        f"--dashboard-host={LOOPBACK}",
        f"--dashboard-port={cfg.dashboard_port}",
        f"--ray-client-server-port={cfg.client_server_port}",
        f"--temp-dir={cfg.ray_temp_dir}",
    ]
    if cfg.num_cpus is not None:
        cmd.append(f"--num-cpus={cfg.num_cpus}")
    env = os.environ | client_env(cfg)
    env.pop("RAY_ADDRESS")  # the head must not try to join itself
    # Jobs run `python ...` from the head's PATH: put this environment's interpreter first.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # Serve's proxy and routers read these at start-up from the node's environment (an
    # application's runtime_env does not reach them): how long a router waits for a replica's
    # queue length before trying another, so a dead replica costs ~1 s, not Ray's 5 s default.
    env.setdefault("RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S", "1.0")
    env.setdefault("RAY_SERVE_MAX_QUEUE_LENGTH_RESPONSE_DEADLINE_S", "2.0")
    # Serve replicas' inter-deployment gRPC server binds [::] and Ray has no setting for it: every
    # Python worker imports deployments/replica_bind.py first, which makes it bind the node's IP.
    env[PRELOAD_ENV] = preload_modules(env.get(PRELOAD_ENV, ""))
    log = cfg.home / "logs" / "ray-head.log"
    pid = _spawn(cmd, env, log)
    _wait(f"Ray dashboard on {cfg.dashboard_url}", lambda: _dashboard_ready(cfg, token), timeout, log)
    return pid


def _alive(pid: int | None, marker: str = "") -> bool:
    """Is `pid` running, and (pids get reused) does its command line mention `marker`?"""
    if not pid:
        return False
    try:  # reap it if it is our own exited child (tests start and stop in one process)
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return False
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


def load_state(cfg: PlatformConfig) -> dict:
    path = cfg.home / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def load_config(home: Path) -> PlatformConfig:
    """The config a platform in `home` was started with (its ports), or the defaults."""
    saved = load_state(PlatformConfig(home=home)).get("config")
    if not saved:
        return PlatformConfig(home=home)
    saved = dict(saved, home=Path(saved["home"]), s3=S3Ports(**saved["s3"]))
    return PlatformConfig(**saved)


def up(cfg: PlatformConfig) -> dict:
    """Start whatever part of the platform is not running; idempotent. Returns the state."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    state = load_state(cfg)
    if cfg.start_s3 and not _alive(state.get("s3_pid"), str(cfg.home)):
        state["s3_pid"] = start_s3(cfg)
    if not _alive(state.get("ray_pid"), str(cfg.ray_temp_dir)):
        state["ray_pid"] = start_ray(cfg)
    state["config"] = json.loads(json.dumps(asdict(cfg), default=str))
    (cfg.home / STATE_FILE).write_text(json.dumps(state, indent=2))
    write_env_file(cfg)
    c2pa_sign.ensure_chain(cfg.home / "c2pa")  # the ingress signs outputs with it (sfsr/c2pa_sign.py)
    return state


def up_s3_only(cfg: PlatformConfig) -> dict:
    """Start just the S3 store (tests that need storage but no Ray)."""
    cfg.home.mkdir(parents=True, exist_ok=True)
    state = load_state(cfg)
    if not _alive(state.get("s3_pid"), str(cfg.home)):
        state["s3_pid"] = start_s3(cfg)
    (cfg.home / STATE_FILE).write_text(json.dumps(state, indent=2))
    return state


def write_env_file(cfg: PlatformConfig) -> Path:
    """A file to `source` so a shell's `ray job submit` and scripts use this platform."""
    path = cfg.home / "env.sh"
    lines = [f"export {k}={v}" for k, v in client_env(cfg).items()]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def _stop_group(pid: int | None, timeout: float = 30) -> None:
    if not _alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)


def _stop_ray_processes(temp_dir: Path) -> None:
    """`ray start --block` tears its children down on SIGTERM; anything left that names our temp
    dir on its command line is ours too (never `ray stop`: it kills every Ray on the machine)."""
    needle = str(temp_dir)
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if needle in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


def down(cfg: PlatformConfig) -> None:
    state = load_state(cfg)
    # `ray start --block` lets its children go on SIGTERM but itself lingers: a short grace.
    _stop_group(state.get("ray_pid"), timeout=5)
    _stop_ray_processes(cfg.ray_temp_dir)
    _stop_group(state.get("s3_pid"))
    (cfg.home / STATE_FILE).unlink(missing_ok=True)


def status(cfg: PlatformConfig) -> dict[str, dict]:
    """Per component: running (process alive and port answering), URL or address."""
    state = load_state(cfg)
    token = cfg.token_path.read_text().strip() if cfg.token_path.exists() else ""
    report = {
        "ray head": {
            "running": _alive(state.get("ray_pid"), str(cfg.ray_temp_dir)) and port_open(cfg.ray_port),
            "address": f"{LOOPBACK}:{cfg.ray_port}",
        },
        "dashboard": {"running": bool(token) and _dashboard_ready(cfg, token), "address": cfg.dashboard_url},
    }
    if cfg.start_s3:
        report["s3 store"] = {
            "running": _alive(state.get("s3_pid"), str(cfg.home)) and port_open(cfg.s3.s3),
            "address": f"{cfg.s3_endpoint} (bucket s3://{cfg.bucket})",
        }
    return report


def test_config(home: Path, num_cpus: int = 2) -> PlatformConfig:
    """A config on free ports, for test sessions that must not collide with a user's platform."""
    return replace(
        PlatformConfig(home=home, num_cpus=num_cpus),
        ray_port=free_port(),
        dashboard_port=free_port(),
        client_server_port=free_port(),
        s3=S3Ports(*(free_port() for _ in range(8))),
    )
