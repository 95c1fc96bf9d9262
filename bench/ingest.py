"""Faces per second of the Ray Data ingest pipeline against a plain single-process loop over the
same encoders and inputs, and the pipeline's peak memory at N and 4N inputs.

    tests/isolated.sh .venv/bin/python bench/ingest.py --n 40

Inputs: the real test photos (tests/fixtures/photos.py), copied N times under new names. The
baseline reads, decodes, analyses and encodes every file in one process, one after another; the
candidate is jobs.ingest.run on a local Ray with the machine's CPUs. Both exclude interpreter and
Ray start-up but include loading the face pack. Peak memory is the largest sum of RSS over every
process of the Ray session (sampled every 0.2 s), so it covers the driver, workers and actors.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures import photos  # noqa: E402

FACE_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "astronaut.png")


def make_inputs(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    src = photos.photos_dir()
    for i in range(n):
        name = FACE_PHOTOS[i % len(FACE_PHOTOS)]
        shutil.copyfile(src / name, folder / f"{i:05d}-{name}")


def baseline(folder: Path, crop_size: int) -> tuple[int, float]:
    from sfsr.faces.analyze import analyze_image, encode_crops
    from sfsr.faces.pack import open_pack
    from sfsr.io.images import decode_image

    t0 = time.perf_counter()
    pack = open_pack("builtin", crop_size=crop_size)
    faces = 0
    for path in sorted(folder.iterdir()):
        records = analyze_image(pack, decode_image(path.read_bytes(), source=str(path)), crop_size)
        if records:
            encode_crops(pack, [r.crop for r in records])
        faces += len(records)
    return faces, time.perf_counter() - t0


def _tree_rss(root: int) -> int:
    """Total RSS in bytes of `root` and all its descendants, from /proc."""
    parent, rss = {}, {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            parent[int(d.name)] = int(fields[1])
            rss[int(d.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            continue
    keep, frontier = {root}, [root]
    while frontier:
        kids = [p for p, pp in parent.items() if pp in frontier and p not in keep]
        keep.update(kids)
        frontier = kids
    return sum(rss.get(p, 0) for p in keep)


class PeakRSS:
    """Largest total RSS of this process and its descendants (Ray's workers are among them)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss(os.getpid()))
            self._stop.wait(0.2)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def pipeline(folder: Path, out: Path, crop_size: int) -> tuple[int, float, int]:
    from jobs.ingest import IngestConfig, run

    cfg = IngestConfig(output=str(out), input=str(folder), crop_size=crop_size)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        summary = run(cfg)
        elapsed = time.perf_counter() - t0
    return summary["face_rows"], elapsed, mem.peak


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--n", type=int, default=40, help="inputs in the small run (the large one has 4N)")
    p.add_argument("--crop-size", type=int, default=128, help="aligned crop size")
    args = p.parse_args()

    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    ray.data.DataContext.get_current().enable_progress_bars = False
    work = Path(tempfile.mkdtemp(prefix="sfsr-bench-ingest-"))
    try:
        small, large = work / "in-n", work / "in-4n"
        make_inputs(small, args.n)
        make_inputs(large, 4 * args.n)
        # speed at 4N, where start-up (actors loading the pack) is amortised as in real runs
        faces_b, t_b = baseline(large, args.crop_size)
        faces_n, t_n, peak_n = pipeline(small, work / "out-n", args.crop_size)
        faces_p, t_p, peak_4n = pipeline(large, work / "out-4n", args.crop_size)
        assert faces_b == faces_p, f"the two paths found different faces: {faces_b} vs {faces_p}"
        print(f"CPUs {os.cpu_count()}; inputs {4 * args.n}, faces {faces_b}")
        print(f"baseline (one process, sequential): {t_b:7.1f} s  {faces_b / t_b:6.2f} faces/s")
        print(
            f"Ray Data pipeline:                  {t_p:7.1f} s  {faces_p / t_p:6.2f} faces/s "
            f"(at N={args.n}: {faces_n / t_n:.2f} faces/s, start-up included)"
        )
        print(
            f"peak RSS of the Ray session: N={args.n}: {peak_n / 2**30:.2f} GiB; "
            f"4N={4 * args.n}: {peak_4n / 2**30:.2f} GiB (ratio {peak_4n / peak_n:.2f})"
        )
        print(f"speed-up of the pipeline over the baseline: {t_b / t_p:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
