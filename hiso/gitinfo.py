"""Which code produced a result: the git commit of the suite's source tree.  Light (no torch), so the workflow's
DAG code, the benchmarks and the runner share it."""
from __future__ import annotations

import subprocess
from pathlib import Path

SOURCE = Path(__file__).resolve().parent


def git(*args: str, cwd: str | Path = SOURCE) -> str:
    """git's stdout, stripped ("" outside a repository or without git)."""
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=cwd).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def commit(cwd: str | Path = SOURCE) -> str:
    """The short commit, "-dirty" when tracked files differ from it; "unknown" outside a repository."""
    sha = git("rev-parse", "--short=10", "HEAD", cwd=cwd)
    if not sha:
        return "unknown"
    return sha + ("-dirty" if git("status", "--porcelain", "--untracked-files=no", cwd=cwd) else "")
