"""Contact sheets of synthetic faces, for eyeballing that identities and expressions read.

    python -m sfsr.synth.sheet --out /tmp/synth_sheet.png

Rows are identities; columns are neutral followed by the six families at full intensity.
Two blocks are stacked: one rendered at --size and one at --small-size (shown upscaled with
nearest-neighbour so the real pixels are visible).
"""

from __future__ import annotations

import argparse

import cv2
import numpy as np

from sfsr.synth.factors import FAMILIES, NEUTRAL_EXPRESSION, Pose, family_prototype, make_sample
from sfsr.synth.render import render


def contact_sheet(
    identity_ids: list[int],
    size: int = 64,
    intensity: float = 1.0,
    display: int | None = None,
    pose: Pose | None = None,
) -> np.ndarray:
    """RGB uint8 grid: one row per identity, columns neutral + FAMILIES at `intensity`."""
    display = display or size
    exprs = [NEUTRAL_EXPRESSION] + [family_prototype(f, intensity) for f in FAMILIES]
    rows = []
    for i, ident in enumerate(identity_ids):
        tiles = []
        for j, expr in enumerate(exprs):
            img, _ = render(make_sample(ident, expr, pose, background_seed=1000 * i + j), size)
            tiles.append(cv2.resize(img, (display, display), interpolation=cv2.INTER_NEAREST))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the module docstring's line breaks."""


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    ap.add_argument("--out", default="/tmp/synth_sheet.png", help="PNG path to write")
    ap.add_argument("--identities", type=int, default=8, help="number of identities (rows)")
    ap.add_argument("--first-identity", type=int, default=0, help="id of the first row")
    ap.add_argument("--size", type=int, default=64, help="render size of the upper block")
    ap.add_argument("--small-size", type=int, default=32, help="render size of the lower block")
    ap.add_argument("--intensity", type=float, default=1.0, help="family intensity, 0..1")
    args = ap.parse_args(argv)
    ids = list(range(args.first_identity, args.first_identity + args.identities))
    big = contact_sheet(ids, args.size, args.intensity)
    small = contact_sheet(ids, args.small_size, args.intensity, display=args.size)
    gap = np.full((8, big.shape[1], 3), 255, np.uint8)
    sheet = np.concatenate([big, gap, small], axis=0)
    cv2.imwrite(args.out, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print(f"wrote {args.out}: {sheet.shape[1]}x{sheet.shape[0]}, columns neutral + {FAMILIES}")


if __name__ == "__main__":
    main()
