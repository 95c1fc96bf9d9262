"""`sfsr expressions list|show`: browse the 135-word vocabulary and see a word's target.

`register(subparsers)` adds the commands to the `sfsr` parser; each sets `func(args) -> int`
(an exit status) through set_defaults, for the main command to call.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from sfsr.expressions.targets import FER_CLASSES, ExpressionTargets, builtin_face_space, targets_for_space
from sfsr.expressions.vocabulary import FAMILIES, WORDS, UnknownExpressionError, lookup


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `expressions list` and `expressions show` to an argparse subparsers object."""
    parser = subparsers.add_parser("expressions", help="the 135 emotion words (Shaver et al. 1987) and their targets")
    sub = parser.add_subparsers(dest="expressions_command", required=True)

    p_list = sub.add_parser("list", help="print the vocabulary as a table")
    p_list.add_argument(
        "--family",
        choices=FAMILIES,
        default=None,
        help="only this family (default: all six)",
    )
    p_list.set_defaults(func=cmd_list)

    p_show = sub.add_parser("show", help="print one word and its expression target")
    p_show.add_argument("word", help="a vocabulary word, any case (e.g. hysteria)")
    p_show.add_argument(
        "--space",
        choices=("builtin", "synth"),
        default="builtin",
        help="expression space of the target (default: %(default)s)",
    )
    p_show.add_argument(
        "--bank",
        default=None,
        help="expression bank Parquet file (word, vector, count) from the ingest job "
        "(default: none, use family prototypes)",
    )
    p_show.set_defaults(func=cmd_show)
    return parser


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    lines = [header, tuple("-" * w for w in widths), *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def cmd_list(args: argparse.Namespace) -> int:
    words = [w for w in WORDS if args.family in (None, w.family)]
    rows = [(w.word, w.family, w.subcluster, f"{w.intensity:.2f}", f"{w.nuance:+.2f}") for w in words]
    print(_table(("word", "family", "subcluster", "intensity", "nuance"), rows))
    print(f"\n{len(words)} words; nuance tells apart words of one subcluster at one intensity")
    return 0


def _targets(space: str, bank_path: str | None) -> ExpressionTargets:
    bank = None
    if bank_path is not None:
        import pyarrow.parquet as pq

        bank = pq.read_table(bank_path)
    if space == "synth":
        return targets_for_space("synth", bank=bank)
    dim = len(FER_CLASSES)
    if bank is not None and bank.num_rows:
        dim = len(bank.column("vector")[0].as_py())
    geometry = tuple(f"geometry_{i}" for i in range(dim - len(FER_CLASSES)))
    return ExpressionTargets.for_builtin(builtin_face_space(geometry), bank=bank)


def cmd_show(args: argparse.Namespace) -> int:
    try:
        word = lookup(args.word)
    except UnknownExpressionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        _table(
            ("word", "family", "subcluster", "intensity", "nuance"),
            [(word.word, word.family, word.subcluster, f"{word.intensity:.2f}", f"{word.nuance:+.2f}")],
        )
    )
    targets = _targets(args.space, args.bank)
    vec, source = targets.resolve(word)
    space = targets.space
    print(f"\ntarget in space {space.name!r} (dim {space.dim}, from {source}):")
    names = space.components or tuple(f"c{i}" for i in range(space.dim))
    rows = [(n, f"{v:+.4f}") for n, v in zip(names, np.asarray(vec, np.float64))]
    print(_table(("component", "value"), rows))
    if source == "prototype":
        print(
            "\nEach of the 135 words has its own target: its family's face at its intensity, moved by its "
            "subcluster and its nuance (no two words share one)."
        )
    return 0
