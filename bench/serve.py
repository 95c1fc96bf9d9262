"""The Serve app under load: where a request's time goes, batching against no batching and the
model's own bound, overload, autoscaling, and a killed replica.

    tests/isolated.sh .venv/bin/python bench/serve.py                 # the cpu-demo model
    tests/isolated.sh .venv/bin/python bench/serve.py --model tiny    # random tiny model, quick

Everything runs on a local Ray (`ray.init`) with the app from deployments/app.py and real HTTP
clients (threads with requests) posting /v1/reenact: an aligned example face (sfsr.synth) and an
expression word, so the generator, not face detection, is what is measured.

0. profile: one client, one request at a time; the mean of each stage of the ingress's
   Server-Timing header (read, parse, detect, queue, model, finish) and what the client saw.
1. batching: the same deployment (1 generator replica) with max_batch_size B and then 1 (a
   user_config change: the replica reconfigures in place), each under C concurrent clients;
   throughput, p50 and p99 latency, and the ratio. Then the bound: the model alone in this
   process (the UNet's forward at batch 3 x B, the three guidance branches, with the replica's
   torch threads) gives the most requests per second any serving could reach; the batched
   throughput as a share of it, and the model-only ratio of batch 3 x B to batch 3 (the most
   batching can gain on this machine).
4. overload: 1 replica, the admission on (serve_config.yaml's latency budget); the unloaded p99
   (one client), then 4x the clients one replica fills (4 x B), each honouring Retry-After: how
   many were answered 503 (and how fast, with Retry-After), p99 of the admitted against the
   unloaded p99, and any 5xx other than 503. The other phases turn the admission off
   (NO_ADMISSION) to measure throughput with everything queued.
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

from deployments.timing import parse_server_timing  # noqa: E402

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
        self.timings: list[dict[str, float]] = []  # parsed Server-Timing of answered requests
        self.retry_after: list[str | None] = []  # Retry-After of 503 answers
        self.outputs: dict[int, bytes] = {}  # seed -> PNG (the seed fixes the face and the word too)
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
                        # from noise: the model-only bound counts three guidance branches per step
                        # (init=inversion, the committed card's default, adds a fourth)
                        "init": "noise",
                    },
                )
                status = r.status_code
                timing = parse_server_timing(r.headers.get("Server-Timing", ""))
                retry = r.headers.get("Retry-After")
            except requests.RequestException:
                status, timing, retry = -1, {}, None
            t1 = time.perf_counter()
            with self._lock:
                self.records.append((t0, t1, status))
                if status == 200:
                    self.timings.append({**timing, "client": (t1 - t0) * 1000})
                    self.outputs[i * 1000 + k] = r.content
                elif status == 503:
                    self.retry_after.append(retry)
            if status == 503 and retry and retry.isdigit():
                self._stop.wait(float(retry))  # a well-behaved client honours Retry-After
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


NO_ADMISSION = {"max_latency_s": 3600.0}  # throughput phases: measure the queue, do not refuse


def deploy(model: str, port: int, *, batch: int, generator: dict, threads: int = 1, ingress: dict | None = None) -> str:
    from ray import serve

    from deployments.app import build_app

    app = build_app(
        overrides={"Generator": generator},
        user_config={
            "Generator": {"model": model, "max_batch_size": batch, "torch_threads": threads},
            "Ingress": NO_ADMISSION if ingress is None else ingress,
        },
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


STAGES = ("read", "parse", "detect", "queue", "model", "generate", "finish", "total", "client")


def phase_profile(args, model: str, images: list[bytes]) -> None:
    print(f"\n== 0. profile: 1 generator replica, 1 client, {args.profile_requests} requests one at a time")
    url = deploy(model, args.port, batch=args.batch, generator=FIXED, threads=args.torch_threads)
    Load(url, 1, args.steps, images, max_requests=3).run()  # warm-up
    load = Load(url, 1, args.steps, images, max_requests=args.profile_requests).run()
    mean = {k: statistics.fmean(t.get(k, 0.0) for t in load.timings) for k in STAGES}
    rows = [
        ("read the body", mean["read"]),
        ("parse + decode", mean["parse"]),
        ("face detection / alignment", mean["detect"]),
        ("generator: waiting for a batch", mean["queue"]),
        ("generator: model call", mean["model"]),
        ("generator: handle + transport", mean["generate"] - mean["queue"] - mean["model"]),
        ("paste back + watermark + PNG", mean["finish"]),
        ("ingress total", mean["total"]),
        ("proxy + HTTP + client", mean["client"] - mean["total"]),
        ("client total", mean["client"]),
    ]
    for name, ms in rows:
        print(f"  {name:32s} {ms:8.1f} ms  {100 * ms / mean['client']:5.1f}%")


def unet_bound(model: str, steps: int, batch: int, threads: int) -> dict[str, float]:
    """Sample evaluations per second of the model alone at batch 3 x `batch` and 3 (one request's
    three guidance branches), with `threads` torch threads, and the request rates they allow."""
    import torch

    from sfsr.generate import Generator

    torch.set_num_threads(threads)
    net = Generator.from_pretrained(model).model.eval()
    s, c = net.config.image_size, net.latent_channels
    out = {}
    for rows in (3, 3 * batch):
        x = torch.randn(rows, c, s, s)
        args = (x, torch.full((rows,), 500), torch.randn(rows, c, s, s), torch.ones(rows, 1, s, s))
        cond = (torch.randn(rows, net.config.identity_dim), torch.randn(rows, net.config.expression_dim))
        with torch.no_grad():
            for _ in range(3):
                net(*args, *cond)
            reps, t0 = max(5, 120 // rows), time.perf_counter()
            for _ in range(reps):
                net(*args, *cond)
        out[rows] = rows * reps / (time.perf_counter() - t0)
    return {
        "evals_small": out[3],
        "evals_big": out[3 * batch],
        "rps_small": out[3] / (3 * steps),
        "rps_big": out[3 * batch] / (3 * steps),
    }


FIXED = {"num_replicas": 1, "autoscaling_config": None}


def phase_batching(args, model: str, images: list[bytes]) -> None:
    print(f"\n== 1. batching: 1 generator replica, {args.clients} concurrent clients, {args.requests} requests per run")
    results, outputs = {}, {}
    for batch in (args.batch, 1):
        url = deploy(model, args.port, batch=batch, generator=FIXED, threads=args.torch_threads)
        Load(url, args.clients, args.steps, images, max_requests=args.clients).run()  # warm-up
        load = Load(url, args.clients, args.steps, images, max_requests=args.requests).run()
        s = summary(load.records)
        results[batch], outputs[batch] = s, load.outputs
        sizes = [t.get("batch", 0) for t in load.timings]
        print(
            f"max_batch_size={batch:>2}: {s['ok']}/{s['n']} ok, {s['rps']:.2f} req/s, "
            f"p50 {s['p50']:.2f} s, p99 {s['p99']:.2f} s, mean batch {statistics.fmean(sizes):.1f}",
            flush=True,
        )
    same = sorted(set(outputs[args.batch]) & set(outputs[1]))
    diffs = [pixel_difference(outputs[args.batch][k], outputs[1][k]) for k in same]
    print(
        f"same seed batched and unbatched: {len(same)} outputs compared, largest pixel difference "
        f"{max(diffs, default=0)} (of 255), {sum(d == 0 for d in diffs)} identical"
    )
    serve_shutdown_apps()
    b = unet_bound(model, args.steps, args.batch, args.torch_threads)
    print(
        f"model alone ({args.torch_threads} torch thread(s), {args.steps} steps x 3 guidance branches): "
        f"{b['evals_big']:.0f} evaluations/s at batch {3 * args.batch} -> bound {b['rps_big']:.2f} req/s; "
        f"{b['evals_small']:.0f}/s at batch 3 -> {b['rps_small']:.2f} req/s"
    )
    print(f"batched throughput / model-only bound: {results[args.batch]['rps'] / b['rps_big']:.0%}")
    gain = b["rps_big"] / b["rps_small"]
    print(f"model-only ratio batch {3 * args.batch} / batch 3 (the most batching can gain): {gain:.2f}x")
    print(f"throughput ratio batched/unbatched: {results[args.batch]['rps'] / results[1]['rps']:.2f}x")


def pixel_difference(a: bytes, b: bytes) -> int:
    x, y = (np.asarray(Image.open(io.BytesIO(d)).convert("RGB"), np.int16) for d in (a, b))
    return int(np.abs(x - y).max()) if x.shape == y.shape else 255


def serve_shutdown_apps() -> None:
    """Delete the app (the model replica's threads would otherwise compete with the bound)."""
    from ray import serve

    serve.delete("sfsr")


def phase_overload(args, model: str, images: list[bytes]) -> None:
    clients = 4 * args.batch
    print(f"\n== 4. overload: 1 generator replica, unloaded p99, then {clients} clients for {args.load_seconds:.0f} s")
    url = deploy(model, args.port, batch=args.batch, generator=FIXED, threads=args.torch_threads, ingress={})
    Load(url, 1, args.steps, images, max_requests=3).run()  # warm-up, and the admission's first measurements
    alone = summary(Load(url, 1, args.steps, images, max_requests=args.profile_requests).run().records)
    load = Load(url, clients, args.steps, images).start()
    time.sleep(args.load_seconds)
    load.stop()
    s = summary(load.records)
    refused = [(e - st) for st, e, code in load.records if code == 503]
    other = sorted({code for _, _, code in load.records if code not in (200, 503)})
    with_retry = sum(r is not None for r in load.retry_after)
    print(f"unloaded (1 client): p50 {alone['p50']:.2f} s, p99 {alone['p99']:.2f} s")
    print(
        f"{clients} clients: {s['ok']} admitted at {s['rps']:.2f} req/s (p50 {s['p50']:.2f} s, p99 {s['p99']:.2f} s), "
        f"{len(refused)} answered 503 (slowest answer {max(refused, default=0):.2f} s, "
        f"{with_retry} with Retry-After), other statuses {other or 'none'}"
    )
    print(f"admitted p99 / unloaded p99: {s['p99'] / alone['p99']:.2f}x")


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
    p.add_argument("--load-seconds", type=float, default=60, help="length of the autoscaling and overload loads")
    p.add_argument("--idle-seconds", type=float, default=90, help="how long to watch the scale-down")
    p.add_argument("--kill-after", type=float, default=10, help="seconds of load before and after the kill")
    p.add_argument(
        "--phases",
        default="profile,batching,overload,kill",
        help="comma-separated phases to run: profile, batching, overload, autoscale, kill",
    )
    p.add_argument("--profile-requests", type=int, default=20, help="requests of the one-client runs")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads of the generator replica")
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
            phases = {
                "profile": phase_profile,
                "batching": phase_batching,
                "overload": phase_overload,
                "autoscale": phase_autoscale,
                "kill": phase_kill,
            }
            phases[phase](args, model, images)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
