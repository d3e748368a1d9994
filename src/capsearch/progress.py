"""What a person sees of long work: progress bars (tqdm), shown on a terminal, nothing on a pipe or in a log file;
and counts worded for the summary lines ("1 query", "3 queries").

``CAPSEARCH_PROGRESS=0`` turns them off everywhere, ``CAPSEARCH_PROGRESS=1`` shows them on a pipe too.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``count`` and ``noun``, plural unless one: "1 query", "3 queries", "1 beam"."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {plural or (noun[:-1] + 'ies' if noun.endswith('y') else noun + 's')}"


def enabled() -> bool | None:
    """Whether progress bars are shown: False (off), True (on), None (on where stderr is a terminal)."""
    setting = os.environ.get("CAPSEARCH_PROGRESS", "")
    return {"0": False, "1": True}.get(setting)


def shown() -> bool:
    """Whether progress bars are shown here and now (a library's own bars follow this too)."""
    setting = enabled()
    return sys.stderr.isatty() if setting is None else setting


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm(...)`` on stderr, hidden when progress bars are off (see :func:`enabled`)."""
    kwargs.setdefault("disable", not shown())
    return tqdm(*args, **kwargs)
