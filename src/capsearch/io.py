"""Atomic writes: every output is written to a temporary name in the same folder and renamed."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets the mode a plain ``open(path, "w")`` would give it (0666 less the umask), not ``mkstemp``'s 0600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_paths(*paths: str | os.PathLike[str]) -> Iterator[list[Path]]:
    """Files that belong together: yield a temporary path beside each of ``paths``; only if the whole block succeeds
    are they renamed onto their targets (one rename after another, nothing computed between them), else none is."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(atomic_path(path)) for path in paths]


@contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a new folder beside ``path`` to fill; if the block succeeds it takes ``path``'s place as one unit (the old
    folder is moved aside first and deleted last), else it is removed and the old folder stays as it was. Leftovers
    of an interrupted earlier call are removed first."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(out)
    building = Path(tempfile.mkdtemp(prefix=f"{out.name}.building-", dir=out.parent))
    try:
        yield building
        os.chmod(building, 0o777 & ~_umask())
        if out.exists():
            old = out.with_name(f"{out.name}.old-{os.getpid()}")
            out.rename(old)
            building.rename(out)
            shutil.rmtree(old)
        else:
            building.rename(out)
    finally:
        if building.exists():
            shutil.rmtree(building)


def recover_folder(path: str | os.PathLike[str], keep_old: bool = True) -> None:
    """Tidy what an :func:`atomic_folder` call killed midway left beside ``path``: a half-filled new folder is
    removed; the old folder, moved aside when the kill came between the two renames, is put back (``keep_old``) or
    removed."""
    out = Path(path)
    for stray in out.parent.glob(f"{out.name}.building-*"):
        shutil.rmtree(stray, ignore_errors=True)
    for stray in out.parent.glob(f"{out.name}.old-*"):
        if out.exists() or not keep_old:
            shutil.rmtree(stray, ignore_errors=True)
        else:  # killed between the two renames: the old folder is the one to keep
            stray.rename(out)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


class _SafeLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml's parser where PyYAML has it: its pure-Python one takes 0.4 s for a 60 KB
    dvc.lock) with YAML 1.2's floats. PyYAML resolves scalars by YAML 1.1, where ``1e-05``, ``1e-5`` and ``5E+3``
    are strings; DVC (ruamel, YAML 1.2) writes ``dvc exp run -S lr=1e-5`` as ``1e-05`` and reads it as a number."""


_SafeLoader.yaml_implicit_resolvers = {  # the float resolver replaced, the others kept (copied, not shared)
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in _SafeLoader.yaml_implicit_resolvers.items()
}
_SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """A YAML file's data, safely loaded (:class:`_SafeLoader`: no object construction, YAML 1.2's floats)."""
    return yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_SafeLoader)  # a safe loader


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write pretty, key-sorted JSON atomically (byte-stable for the same data)."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Write a CSV table with a header row atomically (LF line endings)."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def read_csv(path: str | os.PathLike[str], expected_header: Sequence[str]) -> list[dict[str, str]]:
    """Read a CSV table written by :func:`write_csv`, checking its header."""
    with Path(path).open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or list(header[: len(expected_header)]) != list(expected_header):
            raise ValueError(f"{path}: expected header {list(expected_header)}, found {header}")
        return [dict(zip(header, row, strict=True)) for row in reader]


def save_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save one numpy array atomically."""
    with atomic_path(path) as tmp, tmp.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)


def load_npy(path: str | os.PathLike[str], mmap: bool = False) -> np.ndarray:
    """Load a numpy array saved by :func:`save_npy` (pickles refused); ``mmap``: memory-mapped, read-only, so a
    gallery larger than RAM is paged in as it is read."""
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
