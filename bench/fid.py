"""FD/FID throughput against torchmetrics on the same feature network and images, and our peak
memory at N and 4N images (it should be flat: statistics are O(D^2), images are streamed).

    python bench/fid.py [--n 128] [--batch 32] [--weights FID_INCEPTION_WEIGHTS] [--device cpu]

Both sides run the same network on the same uint8 images in the same batches and end with a
score; images/s counts both sets (real + fake). Memory is the peak RSS of a fresh process that
streams N (then 4N) rendered images per side through our extractor, moments and KID sample.
The ratio (ours / torchmetrics, >1 = we are faster) is printed last.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.features import load_extractor  # noqa: E402
from evaluation.fid import feature_moments, frechet_distance, merge_moments  # noqa: E402
from evaluation.kid import kid_sample, merge_samples  # noqa: E402
from sfsr.synth import render_batch  # noqa: E402


def _sets(n: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    return render_batch(n, seed=1, size=size)[0], render_batch(n, seed=2, size=size, split="test")[0]


def ours(extractor, real: np.ndarray, fake: np.ndarray, batch: int) -> float:  # noqa: ANN001
    parts_r, parts_f = [], []
    for i in range(0, len(real), batch):
        parts_r.append(feature_moments(extractor(real[i : i + batch]), extractor.info.name))
        parts_f.append(feature_moments(extractor(fake[i : i + batch]), extractor.info.name))
    return frechet_distance(merge_moments(*parts_r), merge_moments(*parts_f))


def theirs(net: torch.nn.Module, real: np.ndarray, fake: np.ndarray, batch: int) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=net)
    for i in range(0, len(real), batch):
        metric.update(torch.from_numpy(real[i : i + batch]).permute(0, 3, 1, 2), real=True)
        metric.update(torch.from_numpy(fake[i : i + batch]).permute(0, 3, 1, 2), real=False)
    return float(metric.compute())


def memory_run(n: int, batch: int, weights: str | None) -> None:
    """Stream n images per side (rendered batch by batch) through our statistics; print peak RSS."""
    extractor = load_extractor("auto", weights)
    mr = mf = kr = kf = None
    for start in range(0, n, batch):
        k = min(batch, n - start)
        real = render_batch(k, seed=1000 + start, size=64)[0]
        fake = render_batch(k, seed=5000 + start, size=64, split="test")[0]
        fr, ff = extractor(real), extractor(fake)
        keys = np.arange(start, start + k)
        parts = (
            feature_moments(fr, extractor.info.name),
            feature_moments(ff, extractor.info.name),
            kid_sample(fr, keys, 64, extractor.info.name),
            kid_sample(ff, keys, 64, extractor.info.name),
        )
        if mr is None:
            mr, mf, kr, kf = parts
        else:
            mr, mf = merge_moments(mr, parts[0]), merge_moments(mf, parts[1])
            kr, kf = merge_samples(kr, parts[2]), merge_samples(kf, parts[3])
    fd = frechet_distance(mr, mf)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n} {peak_mb:.1f} {fd:.6f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=128, help="images per set for the speed run (default %(default)s)")
    p.add_argument("--batch", type=int, default=32, help="images per network call (default %(default)s)")
    p.add_argument(
        "--weights",
        default=None,
        help="FID Inception weights (folder, s3:// or file); default: the offline EfficientNet-Lite0 FD",
    )
    p.add_argument("--memory-run", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_run:
        memory_run(args.memory_run, args.batch, args.weights)
        return

    extractor = load_extractor("auto", args.weights)
    real, fake = _sets(args.n)
    ours(extractor, real[: args.batch], fake[: args.batch], args.batch)  # warm-up (oneDNN primitives)
    theirs(extractor.net, real[: args.batch], fake[: args.batch], args.batch)
    t = time.perf_counter()
    fd_ours = ours(extractor, real, fake, args.batch)
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    fd_theirs = theirs(extractor.net, real, fake, args.batch)
    t_theirs = time.perf_counter() - t
    print(
        f"feature network: {extractor.info.name} ({extractor.info.score_name}); {args.n} real + {args.n} fake "
        f"images at 64 px, batch {args.batch}, torch threads {torch.get_num_threads()}"
    )
    print(
        f"score: ours {fd_ours:.6f}  torchmetrics {fd_theirs:.6f}  relative difference "
        f"{abs(fd_ours - fd_theirs) / abs(fd_theirs):.2e}"
    )
    ips_ours, ips_theirs = 2 * args.n / t_ours, 2 * args.n / t_theirs
    print(f"images/s: ours {ips_ours:.1f} ({t_ours:.1f} s)  torchmetrics {ips_theirs:.1f} ({t_theirs:.1f} s)")

    peaks = {}
    for n in (args.n, 4 * args.n):
        cmd = [sys.executable, __file__, "--memory-run", str(n), "--batch", str(args.batch)]
        if args.weights:
            cmd += ["--weights", args.weights]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.split()
        peaks[n] = float(out[1])
        print(f"peak RSS streaming {n} images per side: {peaks[n]:.1f} MB")
    print(f"peak memory 4N / N: {peaks[4 * args.n] / peaks[args.n]:.3f}")
    print(f"ratio images/s ours / torchmetrics: {ips_ours / ips_theirs:.3f}")


if __name__ == "__main__":
    main()
