"""`sfsr watermark detect|embed`: read both layers of an image, or mark one."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np

from sfsr import c2pa_sign
from sfsr import watermark as wm


def _load_rgb(path: str) -> np.ndarray:
    from sfsr.io.images import ImageLimits, decode_image

    data = Path(path).read_bytes()
    return decode_image(data, source=path, limits=ImageLimits(max_bytes=200 * 1024 * 1024, max_pixels=100_000_000))


def _anchors(path: str | None) -> bytes | None:
    """The PEM anchors C2PA signers are trusted against: the flag's file, else the local chain's."""
    if path:
        return Path(path).read_bytes()
    local = c2pa_sign.default_cert_dir() / c2pa_sign.ANCHORS_FILE
    return local.read_bytes() if local.is_file() else None


def cmd_detect(args: argparse.Namespace) -> int:
    from sfsr.io.images import ImageError

    try:
        anchors = _anchors(args.trust_anchors)
    except OSError as e:
        print(f"error: --trust-anchors: {e}", file=sys.stderr)
        return 2
    all_marked = True
    for path in args.images:
        try:
            data = Path(path).read_bytes()
            image = _load_rgb(path)
        except (OSError, ImageError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        try:
            d: wm.Detection | None = wm.detect(image)
            too_small = ""
        except ValueError as e:  # too small to decide
            d, too_small = None, str(e)
        c2 = c2pa_sign.read_c2pa(data, anchors)
        text = wm.read_png_text(data)
        all_marked &= d is not None and d.marked
        if args.json:
            mark = {"checked": False, "reason": too_small} if d is None else {"checked": True, **asdict(d)}
            print(json.dumps({"path": path, "watermark": mark, "c2pa": asdict(c2), "png_text": text}))
            continue
        if d is None:
            verdict = f"watermark NOT CHECKED: {too_small}"
        else:
            verdict = (
                f"watermark {'DETECTED' if d.marked else 'not detected'} (statistic {d.statistic:.1f}, "
                f"threshold {d.threshold:.2f}, scale {d.scale:.2f})"
            )
        if not c2.present:
            c2_line = "C2PA: no manifest"
        else:
            c2_line = (
                f"C2PA: manifest {'valid' if c2.valid else 'INVALID'}, signer {c2.signer!r} ({c2.issuer}), "
                f"{'trusted' if c2.trusted else 'not trusted'}; generator {c2.generator!r}, "
                f"source type {c2.digital_source_type.rsplit('/', 1)[-1] or '-'}"
                + (f"; failures: {', '.join(c2.failures)}" if c2.failures else "")
            )
        print(f"{path}: {verdict}\n    {c2_line}")
        for key, value in text.items():
            print(f"    {key}: {value}")
    return 0 if all_marked else 1


def cmd_embed(args: argparse.Namespace) -> int:
    from sfsr.io.images import ImageError

    try:
        image = _load_rgb(args.input)
    except (OSError, ImageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = wm.provenance(args.model, args.model_version, args.request_id, source=Path(args.input).name)
    png = wm.mark_and_encode(image, meta)
    if args.c2pa_cert_dir != "none":
        creds = c2pa_sign.ensure_chain(Path(args.c2pa_cert_dir) if args.c2pa_cert_dir else None)
        png = c2pa_sign.sign_png(png, c2pa_sign.Claim(args.model, args.model_version, args.request_id), creds)
    Path(args.output).write_bytes(png)
    signed = "" if args.c2pa_cert_dir == "none" else " and a C2PA manifest"
    print(f"{args.output}: watermarked ({wm.METHOD}) with provenance text{signed}")
    return 0


def _add_actions(sub: argparse._SubParsersAction) -> None:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    det = sub.add_parser(
        "detect",
        help="report the invisible watermark and the C2PA manifest of images; exit 1 if any lacks the watermark",
        formatter_class=fmt,
    )
    det.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG or WebP)")
    det.add_argument("--json", action="store_true", help="one JSON object per image instead of text")
    det.add_argument(
        "--trust-anchors",
        default=None,
        help="PEM file of CA certificates a C2PA signer must chain to; None: the local chain's ca.pem "
        f"in {c2pa_sign.default_cert_dir()} if present",
    )
    det.set_defaults(func=cmd_detect)
    emb = sub.add_parser(
        "embed", help="watermark an image and write it as PNG with provenance text and C2PA", formatter_class=fmt
    )
    emb.add_argument("input", metavar="IN", help="image to mark")
    emb.add_argument("output", metavar="OUT", help="PNG file to write")
    emb.add_argument("--model", default="external", help="model name to record in the PNG text and manifest")
    emb.add_argument("--model-version", default="unknown", help="model version to record")
    emb.add_argument("--request-id", default="cli", help="request id to record")
    emb.add_argument(
        "--c2pa-cert-dir",
        default=None,
        help="C2PA chain folder (chain.pem, signer.key, ca.pem); None: the local chain (created if missing); "
        "'none': no manifest",
    )
    emb.set_defaults(func=cmd_embed)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `sfsr watermark detect|embed` to the sfsr command."""
    parser = subparsers.add_parser(
        "watermark",
        help="read or write the invisible watermark and C2PA manifest of generated images",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_actions(parser.add_subparsers(dest="action", required=True))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfsr.watermark", description=(wm.__doc__ or "").splitlines()[0])
    _add_actions(parser.add_subparsers(dest="action", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))
