"""The one base class of capsearch's expected errors, and what the stages and the CLI catch.

Every error capsearch raises on purpose (a bad param, a model that cannot load, a shard it cannot read, a failure
in the engine naming the image) is a :class:`CapsearchError`, whose message is one line naming the param, file or
line and what to do. :data:`EXPECTED` adds what the system and the parsers raise on a bad file or folder (a missing
file, a JSON or UTF-8 decode error, a missing field: ``OSError``, ``ValueError``, ``KeyError``), which the library
lets through with their own message. Stages and the CLI catch :data:`EXPECTED` and print one line; anything else is
a bug and keeps its traceback.
"""

from __future__ import annotations


class CapsearchError(Exception):
    """An expected error: its message is one line saying what is wrong (param, file, line) and what to do."""


EXPECTED: tuple[type[Exception], ...] = (CapsearchError, OSError, ValueError, KeyError)
