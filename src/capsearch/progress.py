"""Progress bars (tqdm) for long work; ``CAPSEARCH_PROGRESS=0`` turns them off (the CLI's quick commands do)."""

from __future__ import annotations

import os
from typing import Any

from tqdm.auto import tqdm


def enabled() -> bool:
    """Whether progress bars are shown."""
    return os.environ.get("CAPSEARCH_PROGRESS", "1") != "0"


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm(...)``, hidden when progress bars are turned off."""
    kwargs.setdefault("disable", not enabled())
    return tqdm(*args, **kwargs)
