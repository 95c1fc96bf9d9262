"""Where a trained artefact came from: the commit of the code that produced it.

Model and judge cards record this so anyone can check out the same code and reproduce them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit(watched: tuple[str, ...] = ("sfsr", "jobs")) -> str:
    """HEAD's commit; with " (modified: ...)" when files under `watched` (paths relative to the
    repository) differ from it, since then HEAD alone does not reproduce the artefact; "unknown"
    outside a git checkout (an installed wheel, a Ray working_dir copy without .git)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", *watched], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    changed = sorted({line[3:].strip() for line in dirty if line.strip()})
    return f"{head} (modified: {', '.join(changed)})" if changed else head
