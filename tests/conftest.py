"""Session fixtures: one SeaweedFS S3 store and one local Ray head per test session.

Both come from sfsr.cluster, the code `sfsr cluster up` runs, on free loopback ports in a state
folder of their own, so a user's platform on the default ports is never touched. Tests that start
servers must run in a loopback-only network namespace (torch's rendezvous listens on every
interface): `make test` does that; running them outside one is an error here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sfsr import cluster

REPO = Path(__file__).resolve().parent.parent


def _non_loopback_interfaces() -> list[str]:
    """Interfaces of this network namespace other than lo (/proc/net/dev is per namespace;
    /sys/class/net is not, unless sysfs was remounted)."""
    names = [line.split(":", 1)[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]]
    return [n for n in names if n != "lo"]


def _require_isolated_network() -> None:
    if os.environ.get("SFSR_TEST_ALLOW_NETWORK") == "1":
        return
    others = _non_loopback_interfaces()
    if others:
        pytest.fail(
            f"this test starts servers but the network has interfaces besides loopback ({', '.join(others)}); "
            "run the suite with `make test` (it enters a loopback-only network namespace), or set "
            "SFSR_TEST_ALLOW_NETWORK=1 if you accept servers listening on every interface"
        )


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def uri(self, *parts: str) -> str:
        return "s3://" + "/".join((self.bucket,) + parts)


_SESSION_ROOT: Path | None = None


def pytest_configure(config: pytest.Config) -> None:
    """Ray reads RAY_AUTH_MODE once per process, when its config is first initialised (an import
    or client of a test may do that long before the cluster fixture runs), and keeps it. So the
    session's token settings go into the environment before any test module is imported; the
    token file itself is written when the platform starts."""
    global _SESSION_ROOT
    _SESSION_ROOT = Path(tempfile.mkdtemp(prefix="sfsr-test-"))
    os.environ.update(
        {
            "RAY_AUTH_MODE": "token",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
            "RAY_AUTH_TOKEN_PATH": str(_SESSION_ROOT / "local" / "auth_token"),
        }
    )


@pytest.fixture(scope="session")
def platform_config() -> cluster.PlatformConfig:
    root = _SESSION_ROOT or Path(tempfile.mkdtemp(prefix="sfsr-test-"))
    cfg = cluster.test_config(root / "local", num_cpus=2)  # `sfsr --home ROOT` finds it
    assert str(cfg.token_path) == os.environ["RAY_AUTH_TOKEN_PATH"], "pytest_configure and the platform disagree"
    yield cfg
    cluster.down(cfg)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(cfg.ray_temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def s3_server(platform_config: cluster.PlatformConfig) -> S3Server:
    """A real S3 server (SeaweedFS) on loopback; its settings are in os.environ while it runs."""
    _require_isolated_network()
    cfg = platform_config
    state = cluster.load_state(cfg)
    if not state.get("s3_pid"):
        cluster.up_s3_only(cfg)
    access, secret = cluster.ensure_s3_credentials(cfg.home)
    server = S3Server(cfg.s3_endpoint, cfg.bucket, access, secret, cfg.region)
    saved = {k: os.environ.get(k) for k in server.env}
    os.environ.update(server.env)
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def ray_address(platform_config: cluster.PlatformConfig, s3_server: S3Server) -> str:
    """GCS address of the session's Ray head (token auth on; this process has the token)."""
    cfg = platform_config
    cluster.up(cfg)  # S3 already up; starts the head with the S3 settings in its environment
    env = cluster.client_env(cfg)
    for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"):
        os.environ[k] = env[k]
    return f"{cluster.LOOPBACK}:{cfg.ray_port}"


@pytest.fixture(scope="session")
def platform_env(platform_config: cluster.PlatformConfig, ray_address: str) -> dict[str, str]:
    """The environment a `ray job submit` client needs (dashboard address, token, S3)."""
    return os.environ | cluster.client_env(platform_config) | {"PYTHONPATH": str(REPO)}


@pytest.fixture(scope="session")
def _ingested(platform_env: dict[str, str], s3_server: S3Server, tmp_path_factory) -> dict:
    """The session's three ingests, submitted at once so their start-up costs overlap (each
    submission spends ~20 s on 2 cores in its driver, imports and actor start-up):

    - "photos": the mixed photo folder (tests/fixtures/photos.make_mixed_inputs) with the builtin
      pack at 128 px, from and to a local folder;
    - "photos_s3": the same inputs copied to the S3 store, ingested from and to s3://;
    - "synth": a held-out synthetic face table (64 faces of split test, 200 identities: the
      committed model's and the judges', 32 px, seed 5).
    """
    import json

    from sfsr.io import storage
    from tests.fixtures.photos import make_mixed_inputs
    from tests.fixtures.ray_jobs import submit_all_ok

    root = tmp_path_factory.mktemp("tables")
    src, out = root / "in", str(root / "out")
    make_mixed_inputs(src)
    src_s3, out_s3 = s3_server.uri("ingest-in"), s3_server.uri("ingest-out")
    for f in src.iterdir():
        storage.write_bytes(storage.join(src_s3, f.name), f.read_bytes())
    synth = str(root / "synth")
    submit_all_ok(
        platform_env,
        ("jobs.ingest", "--input", str(src), "--output", out, "--crop-size", "128"),
        ("jobs.ingest", "--input", src_s3, "--output", out_s3, "--crop-size", "128"),
        ("jobs.ingest", "--synthetic", "64", "--synthetic-split", "test", "--crop-size", "32",
         "--identities", "200", "--seed", "5", "--output", synth),
        timeout=900,
    )  # fmt: skip

    def run(out: str) -> dict:
        return json.loads(storage.read_bytes(storage.join(out, "run.json")))

    return {
        "photos": {"src": str(src), "out": out, "run": run(out)},
        "photos_s3": {"src": src_s3, "out": out_s3, "run": run(out_s3)},
        "synth": synth,
    }


@pytest.fixture(scope="session")
def photo_table(_ingested: dict) -> dict:
    """The mixed photo folder ingested once with the builtin pack at 128 px: {"src", "out",
    "run"} (run: the first run's run.json). The ingest test checks its accounting and re-runs it;
    the photo-model test trains on it."""
    return _ingested["photos"]


@pytest.fixture(scope="session")
def photo_table_s3(_ingested: dict) -> dict:
    """The same inputs ingested from and to the S3 store: {"src", "out", "run"}, s3:// URIs."""
    return _ingested["photos_s3"]


@pytest.fixture(scope="session")
def synth_table(_ingested: dict) -> str:
    """The held-out synthetic face table's folder (faces/, errors/, expression_bank.parquet,
    run.json). The ingest, evaluation and model-evaluation tests share it."""
    return _ingested["synth"]


@pytest.fixture(scope="session")
def served_app(platform_env: dict[str, str], tmp_path_factory) -> Iterator[str]:
    """Base URL of the Serve app (tiny random model, token TOKEN, one small Generator replica),
    deployed once for the HTTP tests and the page test (a deployment costs ~30 s on 2 cores)."""
    from tests.fixtures.serve_app import deployed_app

    # its tests run last (pytest_collection_modifyitems) and the session's cluster goes down right
    # after them (platform_config), taking the app with it: no graceful shutdown to wait for
    with deployed_app(platform_env, tmp_path_factory.mktemp("serve"), shutdown=False) as url:
        yield url


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests on the Serve app run last, together: its replicas hold Ray CPUs (and a little
    memory) from the first of them to the end of the session, which would otherwise slow the
    ingest and training jobs of the tests collected after them."""
    items.sort(key=lambda item: "served_app" in getattr(item, "fixturenames", ()))
