"""Which source files a script or module runs: its import closure within given roots, read with ``ast``.

Used for two promises: every stage in ``dvc.yaml`` depends on exactly the files its script imports (checked by the
tests), and the result cache is keyed by the code that computes a result (:func:`code_fingerprint`), so an edit
to, say, the resize code is never answered with embeddings computed before the edit. Imports anywhere in a file
count (inside functions too); imports of modules outside the roots (torch, numpy, ...) are ignored.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

LIBRARY_ROOT = Path(__file__).resolve().parent.parent  # the folder holding the capsearch package


def module_path(name: str, roots: Sequence[Path]) -> Path | None:
    """The file of module or package ``name`` under the first root that has it, else None."""
    parts = name.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        if base.with_suffix(".py").is_file():
            return base.with_suffix(".py")
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
    return None


def _package_inits(name: str, roots: Sequence[Path]) -> list[Path]:
    """The ``__init__.py`` of every package above module ``name`` (Python runs them on import)."""
    parts = name.split(".")
    found = [module_path(".".join(parts[:i]), roots) for i in range(1, len(parts))]
    return [path for path in found if path is not None and path.name == "__init__.py"]


def _module_name(path: Path, roots: Sequence[Path]) -> str | None:
    for root in roots:
        try:
            relative = path.relative_to(root)
        except ValueError:
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        return ".".join(parts)
    return None


def imported_names(path: Path, roots: Sequence[Path]) -> set[str]:
    """Absolute names of the modules a file imports (``from a import b`` gives ``a`` and ``a.b``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    own = _module_name(path, roots) or ""
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".") if package else []
                anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return {name for name in names if name}


def import_closure(entry_points: Iterable[Path], roots: Sequence[Path]) -> set[Path]:
    """The entry files plus every file under ``roots`` they import, directly or through each other."""
    roots = [Path(root).resolve() for root in roots]
    pending = [Path(path).resolve() for path in entry_points]
    seen: set[Path] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_names(path, roots):
            target = module_path(name, roots)
            if target is not None:
                pending += [target, *_package_inits(name, roots)]
    return seen


@cache
def code_fingerprint(module: str, root: Path = LIBRARY_ROOT) -> str:
    """SHA-256 over the source of ``module`` and every file it imports under ``root`` (the running capsearch)."""
    entry = module_path(module, [root])
    if entry is None:
        raise ValueError(f"module {module!r} not found under {root}")
    digest = hashlib.sha256()
    for path in sorted(import_closure([entry, *_package_inits(module, [root])], [root])):
        digest.update(str(path.relative_to(root.resolve())).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
