"""The house's floors (DESIGN.md, "Layout"): a package imports only from floors below it, never
from a package beside it or above it, and nothing in sfsr/ or evaluation/ imports Ray.

Every import counts, the ones inside functions too: a lazy import still runs back up when called.
A provider named by a string (sfsr.conditions.PROVIDERS) is the one way down-to-up: it is data.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# lowest first; packages on one floor do not import each other
FLOORS: list[set[str]] = [
    {
        "sfsr.io",
        "sfsr.provenance",
        "sfsr.diffusion",
        "sfsr.expressions",
        "sfsr.cli_settings",
        "sfsr.c2pa_sign",
        "sfsr.model_card",
    },
    {"sfsr.progress", "sfsr.job_output"},  # the jobs' own progress lines; what a person sees of a job
    {"sfsr.faces", "sfsr.watermark"},
    {"sfsr.conditions"},  # builds a model's encoders: face packs below, providers named by string
    {"sfsr.scenes"},  # text-to-image backgrounds and head placement: faces and io below
    {"sfsr.model", "sfsr.synth"},
    {"sfsr.generate"},
    {"sfsr.release", "evaluation"},
    {"sfsr.cluster"},  # the local platform
    {"sfsr.signin"},  # the page's sign-in link, from the platform's state folder
    {"sfsr.quickstart"},  # drives the platform and submits jobs by command line
    {"sfsr.cli"},  # the `sfsr` command: every area registers its subcommands here
    {"jobs", "deployments"},
]
FLOOR = {pkg: i for i, floor in enumerate(FLOORS) for pkg in floor}
RAY_FREE = ("sfsr", "evaluation")


def package_of(module: str) -> str:
    """sfsr.model.training -> sfsr.model; evaluation.fid -> evaluation; sfsr -> sfsr."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "sfsr" and len(parts) > 1 else parts[0]


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in a file; `from sfsr import x` counts as sfsr.x."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "sfsr":
                found += [(node.lineno, f"sfsr.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def sources() -> list[tuple[str, Path]]:
    out = []
    for top in ("sfsr", "evaluation", "jobs", "deployments"):
        for path in sorted((ROOT / top).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            out.append((module, path))
    return out


def violations() -> list[str]:
    bad = []
    for module, path in sources():
        src = package_of(module)
        if src == "sfsr":  # sfsr/__init__.py
            continue
        if src not in FLOOR:
            bad.append(f"{path.relative_to(ROOT)}: package {src} has no floor in FLOORS; give it one")
            continue
        for line, target in imports(path):
            dst = package_of(target)
            where = f"{path.relative_to(ROOT)}:{line}"
            if dst == "ray" and module.split(".")[0] in RAY_FREE:
                bad.append(f"{where}: imports {target}; sfsr/ and evaluation/ run without Ray")
            if dst == src or dst not in FLOOR:
                continue
            if FLOOR[dst] >= FLOOR[src]:
                bad.append(f"{where}: {src} (floor {FLOOR[src]}) imports {target} (floor {FLOOR[dst]})")
    return bad


def test_no_import_runs_up_or_sideways_and_the_core_has_no_ray():
    assert violations() == []


def test_the_check_sees_a_lazy_import_that_runs_back_up(tmp_path, monkeypatch):
    # the check itself must be able to fail: a function-level import of a higher floor is found
    fake = tmp_path / "sfsr" / "model"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("def f():\n    from sfsr.generate import Generator\n    import ray\n")
    for top in ("evaluation", "jobs", "deployments"):
        (tmp_path / top).mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = violations()
    assert any("sfsr/model/bad.py:2" in v and "sfsr.generate" in v for v in found)
    assert any("sfsr/model/bad.py:3" in v and "without Ray" in v for v in found)


def test_loading_the_core_does_not_load_the_synthetic_faces():
    # the synth provider is imported when a synth-conditioned model asks for it, not before
    import subprocess

    code = (
        "import sys, sfsr.model, sfsr.generate, sfsr.conditions; "
        "print(sorted(m for m in sys.modules if m.startswith('sfsr.synth')))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
