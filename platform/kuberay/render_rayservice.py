"""Regenerate the serveConfigV2 block of rayservice.yaml from deployments/serve_config.yaml.

The Serve config has one source of truth, deployments/serve_config.yaml (what `serve deploy`
uses locally). A RayService must carry it inline, so this script copies it between the BEGIN and
END marker comments of rayservice.yaml, changing one thing only (POD_OVERRIDES below): the HTTP
proxy binds the pod's interfaces instead of 127.0.0.1, because inside Kubernetes the pod IP is the
isolation boundary and KubeRay's serve Service reaches the proxy on it.

Usage, from anywhere (paths are resolved from this file's location):
    python platform/kuberay/render_rayservice.py          # rewrite rayservice.yaml in place
    python platform/kuberay/render_rayservice.py --check  # exit 1 if rayservice.yaml is stale

Standard library plus PyYAML only; platform/ is not a Python package, so tests load this file by
path (see tests/unit/test_manifests.py).
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
SERVE_CONFIG = REPO_ROOT / "deployments" / "serve_config.yaml"
RAYSERVICE = HERE / "rayservice.yaml"

BEGIN_MARKER = "# BEGIN serveConfigV2"
END_MARKER = "# END serveConfigV2"
# The only differences between the embedded copy and deployments/serve_config.yaml.
POD_OVERRIDES: dict[str, dict[str, Any]] = {"http_options": {"host": "0.0.0.0"}}
HOST_COMMENT = "# pod IP = isolation boundary: KubeRay's serve Service and probes reach the proxy on it"


def pod_serve_config(config: dict[str, Any]) -> dict[str, Any]:
    """Return the Serve config as it must run inside a pod: `config` plus POD_OVERRIDES."""
    result = copy.deepcopy(config)
    for section, values in POD_OVERRIDES.items():
        merged = dict(result.get(section) or {})
        merged.update(values)
        result[section] = merged
    return result


def load_serve_config(text: str, source: str) -> dict[str, Any]:
    """Parse a Serve config and check what a RayService needs; `source` names it in errors."""
    config = yaml.safe_load(text)
    if not isinstance(config, dict):
        raise ValueError(
            f"{source}: expected a mapping (a Serve config with an `applications` list), "
            f"got {type(config).__name__}; see `serve build` for the format"
        )
    apps = config.get("applications")
    if not isinstance(apps, list) or not apps:
        raise ValueError(
            f"{source}: `applications` must be a non-empty list; a RayService with no "
            "application would deploy nothing. Add at least one application with an import_path"
        )
    for i, app in enumerate(apps):
        if not isinstance(app, dict) or not app.get("import_path"):
            raise ValueError(
                f"{source}: applications[{i}] has no import_path (expected 'module:attribute', "
                "for example deployments.app:app)"
            )
    return config


def render_block(serve_config_text: str, source: str, indent: str = "    ") -> str:
    """Return the serveConfigV2 literal-block lines (without the key line), indented."""
    config = pod_serve_config(load_serve_config(serve_config_text, source))
    dumped = yaml.safe_dump(config, sort_keys=False, default_flow_style=False, width=4096)
    lines = []
    in_http_options = False
    for line in dumped.splitlines():
        if line and not line[0].isspace():
            in_http_options = line.startswith("http_options:")
        if in_http_options and re.fullmatch(r"\s+host: ['\"]?0\.0\.0\.0['\"]?", line):
            line = f"{line}  {HOST_COMMENT}"
        lines.append(f"{indent}{line}" if line else "")
    return "\n".join(lines) + "\n"


def splice(rayservice_text: str, block: str) -> str:
    """Replace what lies between the marker comments of rayservice.yaml with a new block."""
    lines = rayservice_text.splitlines(keepends=True)
    begin = [i for i, line in enumerate(lines) if line.strip().startswith(BEGIN_MARKER)]
    end = [i for i, line in enumerate(lines) if line.strip().startswith(END_MARKER)]
    if len(begin) != 1 or len(end) != 1 or end[0] < begin[0]:
        raise ValueError(
            f"{RAYSERVICE.name}: expected exactly one '{BEGIN_MARKER}' line followed by one "
            f"'{END_MARKER}' line around serveConfigV2, found {len(begin)} and {len(end)}; "
            "restore them (same indentation as the serveConfigV2 key) and re-run"
        )
    key_indent = lines[begin[0]][: len(lines[begin[0]]) - len(lines[begin[0]].lstrip())]
    new_middle = f"{key_indent}serveConfigV2: |\n{block}"
    return "".join(lines[: begin[0] + 1]) + new_middle + "".join(lines[end[0] :])


def render(rayservice_text: str, serve_config_text: str, source: str) -> str:
    """Return rayservice.yaml text with its serveConfigV2 regenerated from the Serve config."""
    return splice(rayservice_text, render_block(serve_config_text, source))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--serve-config",
        type=Path,
        default=SERVE_CONFIG,
        help=f"Serve config to embed (default: {SERVE_CONFIG.relative_to(REPO_ROOT)})",
    )
    parser.add_argument(
        "--rayservice",
        type=Path,
        default=RAYSERVICE,
        help=f"RayService manifest to update (default: {RAYSERVICE.relative_to(REPO_ROOT)})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only report whether the manifest is up to date; exit 1 if not (default: off)",
    )
    args = parser.parse_args(argv)
    if not args.serve_config.is_file():
        print(
            f"{args.serve_config}: not found. It is the Serve config the RayService embeds; "
            "write it first (or pass --serve-config PATH)",
            file=sys.stderr,
        )
        return 2
    current = args.rayservice.read_text()
    updated = render(current, args.serve_config.read_text(), str(args.serve_config))
    if args.check:
        if updated != current:
            print(
                f"{args.rayservice}: serveConfigV2 differs from {args.serve_config}; run "
                "python platform/kuberay/render_rayservice.py",
                file=sys.stderr,
            )
            return 1
        print(f"{args.rayservice}: up to date")
        return 0
    if updated != current:
        args.rayservice.write_text(updated)
        print(f"{args.rayservice}: serveConfigV2 regenerated from {args.serve_config}")
    else:
        print(f"{args.rayservice}: already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
