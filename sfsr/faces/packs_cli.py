"""`sfsr packs list | verify PATH | init PATH --layout NAME | arcface SRC DEST`: inspect and trust model
packs; convert a pack's ArcFace ONNX recogniser to torch weights for the identity loss."""

from __future__ import annotations

import argparse
import sys

from sfsr.faces import pack

Fmt = argparse.ArgumentDefaultsHelpFormatter


def cmd_list(args: argparse.Namespace) -> int:
    rows = pack.list_packs(args.dir, check=not args.no_verify)
    where = args.dir or pack.packs_dir()
    print(f"Face packs (builtin + folders in {where}; set $SFSR_PACKS_DIR to look elsewhere):")
    widths = [max(len(getattr(r, k)) for r in rows) for k in ("name", "kind")]
    for r in rows:
        print(f"  {r.name:<{widths[0]}}  {r.kind:<{widths[1]}}  {r.status}")
        print(f"  {'':<{widths[0]}}  {'':<{widths[1]}}  licence: {r.licence}")
        print(f"  {'':<{widths[0]}}  {'':<{widths[1]}}  at: {r.location}")
    bad = [r for r in rows if r.status not in ("ok", "not verified")]
    return 1 if bad else 0


def cmd_verify(args: argparse.Namespace) -> int:
    try:
        manifest = pack.verify(args.path)
    except pack.PackError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(
        f"ok: pack {manifest.name!r} (kind {manifest.kind}, version {manifest.version}): "
        f"{len(manifest.files)} files match their sha256"
    )
    for f in manifest.files:
        print(f"  {f.role:<16} {f.name}  {f.size / 1e6:.1f} MB  {f.licence}")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    try:
        manifest = pack.init_manifest(args.path, args.layout, name=args.name, overwrite=args.force)
    except pack.PackError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.path}/{pack.MANIFEST_NAME} for pack {manifest.name!r} ({args.layout}), trusting these files:")
    for f in manifest.files:
        print(f"  {f.role:<16} {f.name}  sha256 {f.sha256}")
    print(
        f"licence: {manifest.licence}\nFrom now on `sfsr packs verify {args.path}` and every job check these checksums."
    )
    return 0


def cmd_arcface(args: argparse.Namespace) -> int:
    from sfsr.diffusion.arcface_onnx import convert_arcface_onnx  # imports onnx: only when asked

    try:
        done = convert_arcface_onnx(args.src, args.dest)
    except (ValueError, FileNotFoundError) as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    print(
        f"ArcFace IResNet, layers {done.layers} (blocks per stage), embedding {done.embedding}\n"
        f"wrote {done.path} (use it as: python -m jobs.train ... --identity-recogniser {done.path})"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("packs", help="list, verify and initialise face model packs", formatter_class=Fmt)
    sub = p.add_subparsers(dest="packs_cmd", required=True)

    ls = sub.add_parser("list", help="show the builtin pack and the packs in $SFSR_PACKS_DIR", formatter_class=Fmt)
    ls.add_argument("--dir", default=None, help="packs folder (default: $SFSR_PACKS_DIR or ~/.cache/sfsr/packs)")
    ls.add_argument("--no-verify", action="store_true", help="only read manifests, do not hash the files")
    ls.set_defaults(func=cmd_list)

    ver = sub.add_parser("verify", help="check every file of a pack against its sha256", formatter_class=Fmt)
    ver.add_argument("path", help="'builtin', a pack folder, a name in $SFSR_PACKS_DIR, or an s3:// prefix")
    ver.set_defaults(func=cmd_verify)

    ini = sub.add_parser(
        "init",
        help="write sfsr-pack.json for a folder of downloaded model files (trust on first use)",
        description="Hash the files now in PATH and record them as the pack's reference. Run it right "
        "after downloading from a source you trust: later changes fail verification.",
        formatter_class=Fmt,
    )
    ini.add_argument("path", help="folder holding the model files")
    ini.add_argument("--layout", required=True, choices=pack.layout_names(), help="which files the folder holds")
    ini.add_argument("--name", default=None, help="pack name (default: the folder's name)")
    ini.add_argument("--force", action="store_true", help="replace an existing sfsr-pack.json (re-trust the files)")
    ini.set_defaults(func=cmd_init)

    arc = sub.add_parser(
        "arcface",
        help="convert an insightface ArcFace ONNX recogniser (w600k_r50, glintr100) to IResNet .safetensors",
        description="Read the IResNet in an ArcFace ONNX graph (BatchNorms kept or folded) and write its torch "
        "state dict, which the identity loss loads. Other graphs are refused and nothing is written.",
        formatter_class=Fmt,
    )
    arc.add_argument("src", help="the ONNX file, e.g. ~/models/buffalo_l/w600k_r50.onnx")
    arc.add_argument("dest", help="where to write the weights; a name ending in .safetensors")
    arc.set_defaults(func=cmd_arcface)
