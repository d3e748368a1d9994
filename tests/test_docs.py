"""The README and docs/ as a user meets them: every ```bash and ```python block runs, in order, in one shell per page,
in a copy of the demo workspace (the shared demo run: what `make demo` leaves in build/demo) inside a project folder
whose `.venv` is this environment. The README starts from a shell without the venv on PATH, as a new terminal is,
and its fetch URLs cannot connect, as for a user who placed the data by hand. A stale command, a renamed import or
an option that no longer exists fails here.

Two commands stand for what the suite itself is, and are not run again inside it: `make demo` (the shared demo run)
and `make test` (this suite). Blocks in other languages (```text, ```yaml) are output, layouts or params, not
commands."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from capsearch.demo.workspace import commit_run, run_dvc

PROJECT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(PROJECT)) for p in (PROJECT / "docs").glob("*.md"))]
RUN_ELSEWHERE = {"make demo": "the shared demo run is what it leaves", "make test": "this suite is what it runs"}
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
MARK = "@@@ block"


def blocks(page: str) -> list[tuple[str, str]]:
    """The (language, code) of each bash or python block of ``page``."""
    found = FENCE.findall((PROJECT / page).read_text(encoding="utf-8"))
    return [(language, code) for language, code in found if language in ("bash", "python")]


def script(page: str) -> str:
    """One bash script running the page's blocks in order, each after a marker line, stopping at the first failure."""
    parts = ["set -euo pipefail"]
    for number, (language, code) in enumerate(blocks(page)):
        parts.append(f"echo '{MARK} {number}'")
        if language == "python":
            parts.append(f"python - <<'CAPSEARCH_PY'\n{code}CAPSEARCH_PY")
            continue
        for line in code.splitlines():
            command = line.split("  #")[0].strip()
            parts.append(f": skipped, {RUN_ELSEWHERE[command]}" if command in RUN_ELSEWHERE else line)
    return "\n".join(parts) + "\n"


def test_every_page_with_commands_is_run_and_no_block_is_unlabelled():
    unlabelled = [
        f"{page}: a ``` block without a language"
        for page in PAGES
        for language, _ in FENCE.findall((PROJECT / page).read_text(encoding="utf-8"))
        if not language
    ]
    assert not unlabelled, "\n".join(unlabelled)  # a block is a command (bash, python) or says what else it is
    assert blocks("README.md") and sum(len(blocks(page)) for page in PAGES if page != "README.md")


@pytest.fixture
def project(demo_run, tmp_path):
    """A project folder as after the Quick start: .venv (this environment) and build/demo (the demo run), whose
    fetch URLs cannot connect while its data is in place (as when placed by hand), run and committed so."""
    root = tmp_path / "capsearch"
    (root / "build").mkdir(parents=True)
    (root / ".venv").symlink_to(Path(sys.prefix))
    demo = root / "build" / "demo"
    shutil.copytree(demo_run, demo, symlinks=True)
    params = yaml.safe_load((demo / "params.yaml").read_text())
    for key in ("images_url", "text_url"):
        params["fetch"][key] = f"http://127.0.0.1:9/{Path(params['fetch'][key]).name}"  # port 9: refused
    (demo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_dvc(demo, "repro")
    commit_run(demo, "the data placed by hand")
    return root


def run_page(page: str, cwd: Path, path: str) -> dict[int, str]:
    """Run the page's script in ``cwd`` with ``PATH=path``; the output of each block by its number."""
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=path, COLUMNS="120", DVC_NO_ANALYTICS="1", CAPSEARCH_PROGRESS="0")
    result = subprocess.run(["bash", "-c", script(page)], cwd=cwd, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{page}: a command failed:\n{output[-5000:]}"
    pieces = re.split(rf"^{MARK} (\d+)$", result.stdout, flags=re.M)
    return {int(number): text for number, text in zip(pieces[1::2], pieces[2::2], strict=True)}


@pytest.mark.slow
def test_the_readme_from_a_new_terminal_to_a_readable_comparison(project):
    bare = "/usr/bin:/bin"
    assert shutil.which("capsearch", path=bare) is None  # the Quick start must put it on PATH itself
    out = run_page("README.md", project, bare)
    quick, queue, back = out[0], out[1], out[2]
    assert re.search(r"^\s*1\s+[\d.]+\s+\S+\.jpg", quick, re.M), quick  # a ranked table of images
    assert "Success" in queue and "Failed" not in queue, queue  # the queued experiment ran on the hand-placed data
    table = [line for line in queue.splitlines() if line.startswith("|")]
    assert len(table) >= 4 and max(len(line) for line in table) <= 200 and "…" not in queue, table
    assert "caption.model" in table[0] and "CIDEr-D" in table[0]
    assert any("toy-llava" in line for line in table) and any("toy-blip" in line for line in table), table
    assert re.search(r"\d+ plots of HEAD, \S+ drawn to dvc_plots/offline/index.html", queue), queue
    assert (project / "build/demo/dvc_plots/offline/recall_at_k.png").stat().st_size > 10_000
    assert "caption_quality.json" in back  # dvc metrics diff of the applied experiment
    demo = project / "build/demo"
    assert run_dvc(demo, "status").stdout.strip() == "Data and pipelines are up to date."
    changed = subprocess.run(["git", "status", "--porcelain"], cwd=demo, capture_output=True, text=True).stdout
    assert not [line for line in changed.splitlines() if not line.endswith(("dvc_plots/", ".capsearch/"))], changed


@pytest.mark.slow
@pytest.mark.parametrize("page", [page for page in PAGES if page != "README.md" and blocks(page)])
def test_each_docs_page_runs_in_the_demo_workspace(run_copy, page):
    run_page(page, run_copy, str(Path(sys.executable).parent) + os.pathsep + "/usr/bin:/bin")


def documented_keys(page: str) -> set[str]:
    """The params a page's table documents: each row's backticked `section.key` names, and bare `key` names after one
    in the same row (`caption.num_beams`, `max_new_tokens`) or `.{a,b}` lists."""
    found = set()
    for row in (PROJECT / page).read_text(encoding="utf-8").splitlines():
        names = re.findall(r"`([\w.{},]+)(?:\.\*)?`", row.split("|")[1]) if row.startswith("| `") else []
        section = None
        for name in names:
            if "." in name:
                section, _, leaf = name.rpartition(".")
                for key in leaf.strip("{}").split(","):
                    found.add(f"{section}.{key}")
            elif section:
                found.add(f"{section}.{name}")
    return found


def test_every_param_is_documented_and_every_link_leads_somewhere():
    params = yaml.safe_load((PROJECT / "params.yaml").read_text(encoding="utf-8"))
    keys = {f"{name}.{key}" for name, section in params.items() if name != "finetune" for key in section}
    keys |= {f"finetune.{name}" for name in params["finetune"]}  # its own page documents every key
    documented = documented_keys("docs/params.md")
    documented |= {key.rsplit(".", 1)[0] for key in documented}  # `runtime.batch_size.{caption,...}`
    assert sorted(keys - documented) == []
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)", (PROJECT / page).read_text(encoding="utf-8")):
            if not target.startswith(("http://", "https://")) and not ((PROJECT / page).parent / target).exists():
                broken.append(f"{page}: {target}")
    assert broken == []


def test_the_code_map_lists_every_library_module():
    code_map = (PROJECT / "docs" / "architecture.md").read_text(encoding="utf-8")
    library = PROJECT / "src" / "capsearch"
    modules = sorted(str(p.relative_to(library)) for p in library.rglob("*.py") if p.name != "__init__.py")
    listed = set(re.findall(r"(?<![\w/])([\w/]+\.py)\b", code_map))
    missing = [module for module in modules if module not in listed]
    assert not missing, f"docs/architecture.md does not list {', '.join(missing)}"
