"""Shared fixtures: toy models trained once per session, generated Flickr8k data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from capsearch.demo.toy_models import cached_toy_models

# Results cached by the tests (and the dvc runs they start) stay out of the user's ~/.cache.
os.environ.setdefault("CAPSEARCH_CACHE_DIR", tempfile.mkdtemp(prefix="capsearch-test-cache-"))

PROJECT = Path(__file__).resolve().parents[1]
SHARED_FLICKR8K = PROJECT.parent / "shared" / "flickr8k"


@pytest.fixture(scope="session")
def toy_models() -> Path:
    """Toy CLIP/BLIP (and their early checkpoints): trained once per version of their code and kept outside the
    repository (``~/.cache/capsearch/toy-models/<key>``, or under ``$CAPSEARCH_TOY_MODELS``), shared with
    ``make demo``.
    """
    return cached_toy_models()


@pytest.fixture(scope="session")
def shared_flickr8k() -> Path:
    """The real Flickr8k annotation files in ../shared/flickr8k, or a skip where they are absent."""
    if not (SHARED_FLICKR8K / "Flickr8k.token.txt").exists():
        pytest.skip(f"real Flickr8k annotations not found at {SHARED_FLICKR8K}")
    return SHARED_FLICKR8K


@pytest.fixture(scope="session")
def demo_run(toy_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A demo workspace after one full `dvc repro`, committed; tests must not change it."""
    from capsearch.demo.workspace import commit_run, create_demo_workspace, run_dvc

    workspace = create_demo_workspace(tmp_path_factory.mktemp("demo") / "ws", toy_models, images=480, num_images=60)
    result = run_dvc(workspace, "repro", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    commit_run(workspace, "demo run")
    return workspace


@pytest.fixture
def run_copy(demo_run: Path, tmp_path: Path) -> Path:
    """A private copy of the demo run (git, DVC cache, outputs): a test may change it freely."""
    import shutil

    workspace = tmp_path / "ws"
    shutil.copytree(demo_run, workspace, symlinks=True)
    return workspace
