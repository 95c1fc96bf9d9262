"""The Serve app under load: batching against no batching, autoscaling, and a killed replica.

    tests/isolated.sh .venv/bin/python bench/serve.py                 # the cpu-demo model
    tests/isolated.sh .venv/bin/python bench/serve.py --model tiny    # random tiny model, quick

Everything runs on a local Ray (`ray.init`) with the app from deployments/app.py and real HTTP
clients (threads with requests) posting /v1/reenact: an aligned example face (sfsr.synth) and an
expression word, so the generator, not face detection, is what is measured.

1. batching: the same deployment (1 generator replica) with max_batch_size B and then 1 (a
   user_config change: the replica reconfigures in place), each under C concurrent clients;
   throughput, p50 and p99 latency, and the ratio last.
2. autoscaling: autoscaling_config from serve_config.yaml (1 to 2 replicas), heavy load for a
   while, then none; generator replica counts printed over time.
3. failure: 2 replicas under load, one is killed (ray.kill); requests that failed, and how long
   until Serve had 2 running replicas again.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORDS = ("joy", "delight", "rage", "sorrow", "fear", "amazement", "love", "contentment")


def example_png(identity: int) -> bytes:
    from sfsr.synth import NEUTRAL_EXPRESSION, make_sample, render

    image, _ = render(make_sample(identity, NEUTRAL_EXPRESSION, background_seed=identity), 128)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


class Load:
    """C client threads posting requests until stopped; records (start, end, status) per request."""

    def __init__(self, url: str, clients: int, steps: int, images: list[bytes], max_requests: int | None = None):
        self.url, self.clients, self.steps, self.images = url, clients, steps, images
        self.max_requests = max_requests
        self.records: list[tuple[float, float, int]] = []
        self._issued = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(clients)]

    def _client(self, i: int) -> None:
        session, k = requests.Session(), 0
        while not self._stop.is_set():
            with self._lock:  # a fixed number of requests in all, shared by the clients
                if self.max_requests is not None and self._issued >= self.max_requests:
                    break
                self._issued += 1
            t0 = time.perf_counter()
            try:
                r = session.post(
                    f"{self.url}/v1/reenact",
                    timeout=300,
                    files={"source": ("face.png", self.images[(i + k) % len(self.images)])},
                    data={
                        "source_aligned": "true",
                        "expression": WORDS[(i + k) % len(WORDS)],
                        "steps": str(self.steps),
                        "seed": str(i * 1000 + k),
                    },
                )
                status = r.status_code
            except requests.RequestException:
                status = -1
            with self._lock:
                self.records.append((t0, time.perf_counter(), status))
            k += 1

    def start(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def run(self) -> Load:
        self.start()
        for t in self._threads:
            t.join()
        return self


def summary(records: list[tuple[float, float, int]]) -> dict[str, float]:
    ok = [(s, e) for s, e, code in records if code == 200]
    lat = sorted(e - s for s, e in ok)
    span = max(e for _, e in ok) - min(s for s, _ in ok) if ok else float("nan")
    return {
        "n": len(records),
        "ok": len(ok),
        "rps": len(ok) / span if ok else 0.0,
        "p50": statistics.median(lat) if lat else float("nan"),
        "p99": float(np.percentile(lat, 99)) if lat else float("nan"),
    }


def replicas(name: str = "Generator") -> dict[str, int]:
    from ray import serve

    status = serve.status().applications["sfsr"].deployments[name]
    return {str(k): v for k, v in status.replica_states.items() if v}


def deploy(model: str, port: int, *, batch: int, generator: dict) -> str:
    from ray import serve

    from deployments.app import build_app

    app = build_app(
        overrides={"Generator": generator}, user_config={"Generator": {"model": model, "max_batch_size": batch}}
    )
    serve.run(app, name="sfsr", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/v1/healthz", timeout=5).status_code == 200:
                return url
        except requests.RequestException:
            pass
        time.sleep(1)
    raise SystemExit("the app did not become healthy within 300 s")


def wait_for(pred, timeout: float, step: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def phase_batching(args, model: str, images: list[bytes]) -> None:
    print(f"\n== 1. batching: 1 generator replica, {args.clients} concurrent clients, {args.requests} requests per run")
    fixed = {"num_replicas": 1, "autoscaling_config": None}
    results = {}
    for batch in (args.batch, 1):
        url = deploy(model, args.port, batch=batch, generator=fixed)
        Load(url, args.clients, args.steps, images, max_requests=args.clients).run()  # warm-up
        s = summary(Load(url, args.clients, args.steps, images, max_requests=args.requests).run().records)
        results[batch] = s
        print(
            f"max_batch_size={batch:>2}: {s['ok']}/{s['n']} ok, {s['rps']:.2f} req/s, "
            f"p50 {s['p50']:.2f} s, p99 {s['p99']:.2f} s",
            flush=True,
        )
    print(f"throughput ratio batched/unbatched: {results[args.batch]['rps'] / results[1]['rps']:.2f}x")


def phase_autoscale(args, model: str, images: list[bytes]) -> None:
    from deployments.app import config_options

    auto = config_options()["Generator"]["autoscaling_config"]
    print(f"\n== 2. autoscaling {auto}: {args.load_clients} clients for {args.load_seconds} s, then idle")
    url = deploy(model, args.port, batch=args.batch, generator={"num_replicas": "auto", "autoscaling_config": auto})
    wait_for(lambda: replicas().get("RUNNING") == 1 and len(replicas()) == 1, 120)
    t0 = time.monotonic()
    load = Load(url, args.load_clients, args.steps, images).start()
    timeline, peak = [], 1
    while time.monotonic() - t0 < args.load_seconds:
        timeline.append((time.monotonic() - t0, replicas(), "load"))
        peak = max(peak, timeline[-1][1].get("RUNNING", 0))
        time.sleep(2)
    load.stop()
    loaded = summary(load.records)
    t_idle = time.monotonic()
    while time.monotonic() - t_idle < args.idle_seconds:
        timeline.append((time.monotonic() - t0, replicas(), "idle"))
        if time.monotonic() - t_idle > 5 and timeline[-1][1] == {"RUNNING": 1}:
            break
        time.sleep(2)
    for t, counts, phase in timeline:
        print(f"  t={t:5.1f}s {phase:4s} generator replicas {counts}")
    back = timeline[-1][1] == {"RUNNING": 1}
    print(
        f"under load: {loaded['ok']}/{loaded['n']} ok, {loaded['rps']:.2f} req/s, p50 {loaded['p50']:.2f} s; "
        f"peak {peak} running replicas; back to 1: {'yes' if back else 'no'} "
        f"({timeline[-1][0] - (t_idle - t0):.0f} s after the load stopped)"
    )


def phase_kill(args, model: str, images: list[bytes]) -> None:
    import ray

    print(f"\n== 3. failure: 2 generator replicas, {args.clients} clients, one replica killed")
    url = deploy(model, args.port, batch=args.batch, generator={"num_replicas": 2, "autoscaling_config": None})
    wait_for(lambda: replicas().get("RUNNING") == 2, 180)
    load = Load(url, args.clients, args.steps, images).start()
    time.sleep(args.kill_after)

    def names() -> set[str]:  # Serve names replica actors SERVE_REPLICA::<app>#<deployment>#<id>
        return {
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == "serve" and a["name"].startswith("SERVE_REPLICA::sfsr#Generator#")
        }

    victim = sorted(names())[0]
    t_kill = time.perf_counter()
    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
    print(f"killed {victim} at t={t_kill - load.records[0][0]:.1f}s", flush=True)
    # replaced = a new replica (another name) running beside the survivor
    recovered = wait_for(lambda: victim not in names() and len(names()) == 2 and replicas() == {"RUNNING": 2}, 120, 0.5)
    t_back = time.perf_counter()
    time.sleep(args.kill_after)
    load.stop()
    failed = [r for r in load.records if r[2] != 200]
    after = [r for r in load.records if r[0] > t_back]
    print(
        f"replica replaced: {'yes' if recovered else 'NO'} after {t_back - t_kill:.1f} s; "
        f"{len(failed)} of {len(load.records)} requests failed (statuses {sorted({r[2] for r in failed})}); "
        f"after recovery {sum(r[2] == 200 for r in after)}/{len(after)} ok"
    )


def resolve_model(name: str) -> str:
    """--model as an absolute folder: 'tiny' writes a random tiny model to a temp folder."""
    if name == "tiny":
        from sfsr.model.presets import write_random_model

        return str(write_random_model(Path(tempfile.mkdtemp(prefix="sfsr-bench-tiny-"))).resolve())
    return str(Path(name).resolve())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument(
        "--model",
        default="sfsr/model/pretrained/cpu-demo",
        help="model folder, or 'tiny' for a random tiny model written to a temp folder",
    )
    p.add_argument("--steps", type=int, default=10, help="denoising steps per request")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients in phases 1 and 3")
    p.add_argument("--requests", type=int, default=48, help="requests per batching run")
    p.add_argument("--batch", type=int, default=8, help="max_batch_size of the batched run")
    p.add_argument("--load-clients", type=int, default=16, help="concurrent clients in the autoscaling phase")
    p.add_argument("--load-seconds", type=float, default=60, help="length of the autoscaling load")
    p.add_argument("--idle-seconds", type=float, default=90, help="how long to watch the scale-down")
    p.add_argument("--kill-after", type=float, default=10, help="seconds of load before and after the kill")
    p.add_argument("--phases", default="batching,autoscale,kill", help="comma-separated phases to run")
    p.add_argument("--port", type=int, default=8123, help="HTTP port on 127.0.0.1")
    p.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    args = p.parse_args(argv)

    import os

    import ray
    from ray import serve

    model = resolve_model(args.model)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=args.num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": args.port})
    images = [example_png(i) for i in (3, 11, 27, 42)]
    print(f"model {model}, {args.steps} steps per request, {args.num_cpus} CPUs")
    try:
        for phase in args.phases.split(","):
            {"batching": phase_batching, "autoscale": phase_autoscale, "kill": phase_kill}[phase](args, model, images)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
