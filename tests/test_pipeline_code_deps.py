"""Pipeline: every stage depends on exactly the code it runs, and DVC sees every library edit."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from capsearch.demo.workspace import run_dvc
from capsearch.imports import import_closure, imported_names, module_path

PROJECT = Path(__file__).resolve().parents[1]


ROOTS = [PROJECT / "stages", PROJECT / "src"]


def stage_scripts() -> dict[str, Path]:
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    scripts = {}
    for name, stage in stages.items():
        match = re.fullmatch(r"python (stages/\w+\.py)", stage["cmd"])
        assert match, f"stage {name}: unexpected cmd {stage['cmd']!r}"
        scripts[name] = PROJECT / match[1]
    return scripts


def declared_code(name: str) -> set[str]:
    stage = yaml.safe_load((PROJECT / "dvc.yaml").read_text(encoding="utf-8"))["stages"][name]
    deps = [dep if isinstance(dep, str) else next(iter(dep)) for dep in stage["deps"]]
    return {dep for dep in deps if dep.endswith(".py")}


def test_every_stage_depends_on_exactly_the_code_its_script_imports():
    problems = []
    for name, script in stage_scripts().items():
        closure = {str(path.relative_to(PROJECT)) for path in import_closure([script], ROOTS)}
        declared = declared_code(name)
        if missing := sorted(closure - declared):
            problems.append(f"stage {name}: dvc.yaml lacks {', '.join(missing)}")
        if superfluous := sorted(declared - closure):
            problems.append(f"stage {name}: dvc.yaml lists {', '.join(superfluous)}, which {script.name} never imports")
    assert not problems, "\n".join(problems)


def test_report_code_is_no_dependency_of_captioning_and_model_code_none_of_evaluate():
    assert "src/capsearch/report.py" not in declared_code("caption")
    assert "src/capsearch/models/pixels.py" in declared_code("caption")
    assert not any(path.startswith("src/capsearch/models/") for path in declared_code("evaluate"))


def test_fine_tuning_does_not_rerun_for_an_edit_to_the_inference_engines():
    for stage in ("finetune_clip", "finetune_captioner"):
        code = declared_code(stage)
        assert "src/capsearch/engine.py" not in code and "src/capsearch/ray_engine.py" not in code, stage
        assert "src/capsearch/finetune/loop.py" in code


def test_the_library_imports_in_no_circle():
    library = PROJECT / "src" / "capsearch"
    graph = {
        path: {
            target
            for name in imported_names(path, [PROJECT / "src"])
            if (target := module_path(name, [PROJECT / "src"]))
        }
        for path in library.rglob("*.py")
    }
    circles, state = [], {}

    def visit(path: Path, trail: list[Path]) -> None:
        state[path] = "open"
        for target in graph.get(path, ()):
            if target.name == "__init__.py" or target == path:
                continue  # a package's opening is imported by each of its modules' names
            if state.get(target) == "open":
                circles.append(
                    " -> ".join(str(p.relative_to(library)) for p in [*trail[trail.index(target) :], target])
                )
            elif target not in state:
                visit(target, [*trail, target])
        state[path] = "done"

    for path in sorted(graph):
        if path not in state:
            visit(path, [path])
    assert not circles, "\n".join(circles)


def changed_stages(workspace: Path) -> set[str]:
    status = json.loads(run_dvc(workspace, "status", "--json").stdout or "{}")
    return {name.split(":")[-1] for name in status}


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)


@pytest.mark.slow
def test_dvc_sees_library_edits_and_the_cache_never_serves_results_of_old_code(run_copy, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the stages run the workspace's own src/ by themselves
    library = run_copy / "src" / "capsearch"
    assert changed_stages(run_copy) == set()
    original = (library / "models/pixels.py").read_text(encoding="utf-8")
    append(library / "models/pixels.py", "# an edit DVC must see\n")
    assert changed_stages(run_copy) == {
        "finetune_clip",
        "finetune_captioner",
        "caption",
        "embed_images",
        "embed_texts",
        "tune_fusion",
        "agreement",
        "report",
    }
    (library / "models/pixels.py").write_text(original, encoding="utf-8")
    append(library / "report.py", "# report code only\n")
    assert changed_stages(run_copy) == {"report"}
    assert run_dvc(run_copy, "repro", "report").returncode == 0

    # An edit of the image path only (CLIP's image embeddings come out rotated): embed_images and what follows
    # re-run, caption does not, and the new embeddings are computed, not taken from the result cache.
    before = json.loads((run_copy / "metrics/retrieval.json").read_text())["text_to_image"]["R@1"]
    append(
        library / "models/embedder.py",
        "\n_plain = DualEncoder.embed_pixels\n"
        "DualEncoder.embed_pixels = lambda self, pixels: np.roll(_plain(self, pixels), 1, axis=1)\n",
    )
    result = run_dvc(run_copy, "repro", "evaluate", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = set(re.findall(r"Running stage '([\w-]+)'", result.stdout))
    assert ran == {"finetune_clip", "embed_images", "embed_texts", "tune_fusion", "evaluate"}, result.stdout
    assert changed_stages(run_copy) == {"index", "report", "agreement"}  # the rest of what the edit reaches
    summary = next(line for line in result.stdout.splitlines() if line.startswith("[embed_images]"))
    assert "0 from the result cache" in summary, summary
    after = json.loads((run_copy / "metrics/retrieval.json").read_text())["text_to_image"]["R@1"]
    assert after < before / 2, (before, after)
    assert oct((run_copy / "metrics/retrieval.json").stat().st_mode & 0o777) == oct(0o666 & ~current_umask())


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_every_stage_but_fetch_depends_on_the_lock_that_pins_the_libraries_it_runs():
    stages = yaml.safe_load((PROJECT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    for name, stage in stages.items():
        assert ("requirements.lock" in stage["deps"]) == (name != "fetch"), name  # an upgrade re-runs them
    from capsearch.versions import library_versions

    pinned = dict(
        line.split("#")[0].strip().split("==")
        for line in (PROJECT / "requirements.lock").read_text().splitlines()
        if "==" in line
    )
    for library, installed in library_versions().items():
        assert pinned[library] == installed.split("+")[0], library  # the lock is what runs
