"""Shared by every stage script: read its params sections, time the stage, print its summary line or one error."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, NoReturn

# Every stage runs the library beside it, this project's src/: the code dvc.yaml hashes as the stage's dependencies,
# whichever capsearch is installed. In a copy of the project (the workspace `capsearch demo` makes) that is the
# copy's code, not the installed clone's.
PROJECT_SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(PROJECT_SRC))

from capsearch.params import ParamError, load_raw, read_key, read_section  # noqa: E402  (after the path is set)


def read_params(stage: str, *sections: Any) -> Any:
    """The stage's sections of params.yaml (typed and checked, see capsearch.params), in the order asked.

    A section is given by its class; a single param by its dotted name (``"subset.split"``). A bad or missing
    param ends the stage with one line naming it, before any data or model is touched.
    """
    try:
        raw = load_raw()
        values = tuple(read_key(raw, s) if isinstance(s, str) else read_section(raw, s) for s in sections)
    except ParamError as exc:
        fail(stage, exc)
    return values if len(values) > 1 else values[0]


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


def fail(stage: str, error: Exception) -> NoReturn:
    """Exit with one clear line instead of a traceback for expected errors."""
    sys.exit(f"[{stage}] error: {error}")
