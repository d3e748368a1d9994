"""imports: import closures and code fingerprints."""

from __future__ import annotations

import shutil
from pathlib import Path

from capsearch.imports import code_fingerprint, import_closure

PROJECT = Path(__file__).resolve().parents[1]


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


def test_import_closure_follows_every_kind_of_import(tmp_path):
    write_package(
        tmp_path,
        {
            "scripts/run.py": "import helper\nfrom pkg.a import thing\n",
            "scripts/helper.py": "def f():\n    import pkg.sub.deep  # inside a function: still a dependency\n",
            "pkg/__init__.py": "",
            "pkg/a.py": "import numpy\nfrom . import b\nthing = 1\n",
            "pkg/b.py": "from .sub import c\n",
            "pkg/unused.py": "",
            "pkg/sub/__init__.py": "from ..b import *\n",
            "pkg/sub/c.py": "",
            "pkg/sub/deep.py": "from pkg import a\n",
        },
    )
    closure = import_closure([tmp_path / "scripts/run.py"], [tmp_path / "scripts", tmp_path])
    assert {str(path.relative_to(tmp_path)) for path in closure} == {
        "scripts/run.py",
        "scripts/helper.py",
        "pkg/__init__.py",
        "pkg/a.py",
        "pkg/b.py",
        "pkg/sub/__init__.py",
        "pkg/sub/c.py",
        "pkg/sub/deep.py",
    }


def test_code_fingerprint_changes_with_any_imported_file_and_only_those(tmp_path):
    root = tmp_path / "src"
    shutil.copytree(PROJECT / "src" / "capsearch", root / "capsearch", ignore=shutil.ignore_patterns("__pycache__"))
    before = code_fingerprint("capsearch.models.embedder", root)
    (root / "capsearch/report.py").write_text("# not imported by the CLIP wrapper\n", encoding="utf-8")
    code_fingerprint.cache_clear()
    assert code_fingerprint("capsearch.models.embedder", root) == before
    with (root / "capsearch/models/pixels.py").open("a", encoding="utf-8") as handle:
        handle.write("# an edit to the resize code\n")
    code_fingerprint.cache_clear()
    assert code_fingerprint("capsearch.models.embedder", root) != before
