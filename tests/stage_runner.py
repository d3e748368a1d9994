"""Running one stage script as DVC runs it (from the workspace root), for the stage-level tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[1]


def write_params(workspace: Path, params: dict) -> None:
    """The workspace's params.yaml."""
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))


def run_stage(workspace: Path, stage: str, params: dict | None = None, **env: str) -> subprocess.CompletedProcess:
    """``python stages/<stage>.py`` in ``workspace`` (after writing ``params`` if given), extra ``env`` set."""
    if params is not None:
        write_params(workspace, params)
    return subprocess.run(
        [sys.executable, str(PROJECT / "stages" / f"{stage}.py")],
        cwd=workspace,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
