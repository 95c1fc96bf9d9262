"""Cluster self-check, for `ray job submit -- python -m jobs.doctor --storage URI`.

Checks what every other job relies on, prints one table, and exits non-zero naming each problem:
- Ray: alive nodes, CPUs / GPUs / object store per node;
- storage: write, read, list and delete a probe object under --storage (local path or s3://),
  from the driver and from a Ray task on the cluster (workers must see the same store);
- face packs and model folders the user names (and the builtin pack), verified by checksum;
- the accelerator stack: torch's CUDA view and onnxruntime's providers.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import ray

from sfsr.cli_settings import parse_settings, setting, settings_parser


@dataclass(frozen=True, kw_only=True)
class DoctorConfig:
    """What to check, each setting declared once (the command line is derived from these fields)."""

    storage: str = setting("storage URI to probe (local path or s3://)", env="SFSR_STORAGE", required=True)
    pack: tuple[str, ...] = setting(
        "face pack to verify (builtin, folder or s3:// prefix); repeatable", (), action="append"
    )
    model: tuple[str, ...] = setting("model folder that must hold a config.json; repeatable", (), action="append")
    no_builtin: bool = setting("do not check the builtin face pack", False)
    timeout: float = setting("seconds per storage operation before it counts as unreachable", 10.0)


@dataclass
class Check:
    area: str
    name: str
    ok: bool
    detail: str
    required: bool = True


def check_ray() -> list[Check]:
    checks = []
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    checks.append(Check("ray", "alive nodes", bool(nodes), f"{len(nodes)} node(s)"))
    for n in nodes:
        res = n.get("Resources", {})
        gib = res.get("object_store_memory", 0) / 2**30
        checks.append(
            Check(
                "ray",
                f"node {n.get('NodeManagerAddress')}",
                res.get("CPU", 0) > 0,
                f"CPU {res.get('CPU', 0):g}, GPU {res.get('GPU', 0):g}, object store {gib:.1f} GiB",
            )
        )
    return checks


def _probe(uri: str, timeout_s: float) -> tuple[bool, str]:
    from sfsr.io.storage import StorageError, probe

    try:
        result = probe(uri, timeout_s=timeout_s)  # {backend, endpoint, timings_s: {write, read, ...}, ...}
    except StorageError as e:
        return False, str(e)
    steps = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in result["timings_s"].items())
    return True, f"{result['backend']}: {steps}"


@ray.remote(num_cpus=0.1)
def _probe_in_task(uri: str, timeout_s: float) -> tuple[bool, str]:
    return _probe(uri, timeout_s)


def check_storage(uri: str, timeout_s: float) -> list[Check]:
    ok, detail = _probe(uri, timeout_s)
    checks = [Check("storage", f"{uri} (driver)", ok, detail)]
    if ok:  # a dead endpoint would only fail again, slower
        ok_t, detail_t = ray.get(_probe_in_task.remote(uri, timeout_s), timeout=timeout_s * 3 + 30)
        checks.append(Check("storage", f"{uri} (Ray task)", ok_t, detail_t))
    return checks


def check_packs(specs: list[str]) -> list[Check]:
    from sfsr.faces import pack as packs

    checks = []
    for spec in specs:
        try:
            fp = packs.open_pack(spec)
            m = fp.manifest
            checks.append(Check("packs", spec, True, f"{m.name} {m.version} ({m.kind}), licence: {m.licence}"))
        except Exception as e:  # noqa: BLE001 - every failure is reported in the table, by name
            checks.append(Check("packs", spec, False, f"{type(e).__name__}: {e}"))
    return checks


def check_models(uris: list[str]) -> list[Check]:
    from sfsr.io import storage

    checks = []
    for uri in uris:
        config = storage.join(uri, "config.json")
        try:
            ok = storage.exists(config)
            detail = "config.json found" if ok else f"no config.json under {uri}"
        except storage.StorageError as e:
            ok, detail = False, str(e)
        checks.append(Check("models", uri, ok, detail))
    return checks


def check_accelerators() -> list[Check]:
    import onnxruntime
    import torch

    gpus = ray.cluster_resources().get("GPU", 0)
    cuda = torch.cuda.is_available()
    return [
        Check(
            "accel",
            "torch",
            True,
            f"torch {torch.__version__}, CUDA {'yes' if cuda else 'no'} on the driver",
            required=False,
        ),
        Check("accel", "onnxruntime", True, ", ".join(onnxruntime.get_available_providers()), required=False),
        Check("accel", "cluster GPUs", True, f"{gpus:g}", required=False),
    ]


def render(checks: list[Check]) -> str:
    w_area = max(len(c.area) for c in checks)
    w_name = min(48, max(len(c.name) for c in checks))
    lines = [f"{'area':<{w_area}}  {'check':<{w_name}}  result  detail", "-" * (w_area + w_name + 40)]
    for c in checks:
        mark = "ok" if c.ok else ("FAIL" if c.required else "warn")
        lines.append(f"{c.area:<{w_area}}  {c.name[:w_name]:<{w_name}}  {mark:<6}  {c.detail}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> DoctorConfig:
    p = settings_parser(DoctorConfig, __doc__, smoke_test="same checks; accepted so every job has the flag")
    return parse_settings(DoctorConfig, p, argv)[0]


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    t0 = time.monotonic()
    ray.init()  # `ray job submit` points RAY_ADDRESS at the cluster the job runs on
    checks = check_ray()
    checks += check_storage(cfg.storage, cfg.timeout)
    checks += check_packs(([] if cfg.no_builtin else ["builtin"]) + list(cfg.pack))
    checks += check_models(list(cfg.model))
    checks += check_accelerators()
    print(render(checks))
    failed = [c for c in checks if c.required and not c.ok]
    print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed in {time.monotonic() - t0:.1f} s")
    for c in failed:
        print(f"problem: {c.area} / {c.name}: {c.detail}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
