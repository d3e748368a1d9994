"""Shared by every stage script: read params.yaml per section, time the stage, print its summary line.

Kept free of model code, so that it adds no model module to any stage's deps; the stages that run models also
import ``_runtime``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import yaml

PARAMS_FILE = Path("params.yaml")


def load_params() -> dict[str, Any]:
    """All of params.yaml (stages read only the sections dvc.yaml lists for them, plus ``runtime``)."""
    if not PARAMS_FILE.exists():
        sys.exit(f"{PARAMS_FILE.resolve()} not found: run stages from the project root (dvc repro)")
    with PARAMS_FILE.open(encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def section(params: dict[str, Any], name: str, keys: tuple[str, ...]) -> dict[str, Any]:
    """One params section, with every expected key present (a missing one names itself)."""
    values = params.get(name)
    if not isinstance(values, dict):
        sys.exit(f"params.yaml: section '{name}' is missing")
    missing = [key for key in keys if key not in values]
    if missing:
        sys.exit(f"params.yaml: {', '.join(f'{name}.{key}' for key in missing)} missing")
    return values


class Timer:
    """Wall time since construction."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


def summary(stage: str, text: str) -> None:
    """The stage's one-line summary."""
    print(f"[{stage}] {text}", flush=True)


def fail(stage: str, error: Exception) -> None:
    """Exit with one clear line instead of a traceback for expected errors."""
    sys.exit(f"[{stage}] error: {error}")
