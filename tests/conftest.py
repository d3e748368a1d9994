"""Shared fixtures: toy models trained once per session, generated Flickr8k data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from capsearch.demo.model_cache import cached_toy_families, cached_toy_models

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
def toy_families() -> Path:
    """Toy SigLIP and GIT (the second dual-encoder and captioner families), cached like ``toy_models``."""
    return cached_toy_families()


@pytest.fixture(scope="session")
def shared_flickr8k() -> Path:
    """The real Flickr8k annotation files in ../shared/flickr8k, or a skip where they are absent."""
    if not (SHARED_FLICKR8K / "Flickr8k.token.txt").exists():
        pytest.skip(f"real Flickr8k annotations not found at {SHARED_FLICKR8K}")
    return SHARED_FLICKR8K


@pytest.fixture(scope="session")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """64 generated scenes in the Flickr8k release layout (zips), with the text zip also extracted."""
    import zipfile

    from capsearch.demo.scenes import write_flickr8k_layout

    root = tmp_path_factory.mktemp("gen")
    paths = write_flickr8k_layout(root / "zips", 64, seed=3)
    with zipfile.ZipFile(paths["text"]) as archive:
        archive.extractall(root / "text")
    return root, paths


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[str]]:
    """16 generated scenes: their image source and ids."""
    from capsearch.data.images import ImageSource
    from capsearch.demo.scenes import write_flickr8k_layout

    paths = write_flickr8k_layout(tmp_path_factory.mktemp("imgs"), 16, seed=5)
    source = ImageSource(paths["images"])
    return source, source.ids()


@pytest.fixture(scope="session")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[str], dict[str, Path]]:
    """64 generated scenes: their image source, ids and layout paths."""
    from capsearch.data.images import ImageSource
    from capsearch.demo.scenes import write_flickr8k_layout

    paths = write_flickr8k_layout(tmp_path_factory.mktemp("scenes"), 64, seed=11)
    source = ImageSource(paths["images"])
    return source, source.ids(), paths


@pytest.fixture(scope="session")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of the odd and broken image files of image_cases.py."""
    from image_cases import bad_cases, good_cases

    out = tmp_path_factory.mktemp("cases")
    for name, data in good_cases().items():
        (out / name).write_bytes(data)
    for name, (data, _) in bad_cases().items():
        (out / name).write_bytes(data)
    return out


@pytest.fixture(scope="session")
def demo_run(toy_models: Path, tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A demo workspace after one full `dvc repro`, committed; tests must not change it.

    Built once per test run: under pytest-xdist the first worker builds it in the run's shared temporary folder
    while the others wait on a lock, then all read the same workspace.
    """
    import fcntl

    from capsearch.demo.workspace import commit_run, create_demo_workspace, run_dvc

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    workspace, done = shared / "demo-run" / "ws", shared / "demo-run" / "built"
    with open(shared / "demo-run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            create_demo_workspace(workspace, toy_models, images=480, num_images=60)
            result = run_dvc(workspace, "repro", check=False)
            assert result.returncode == 0, result.stdout + result.stderr
            commit_run(workspace, "demo run")
            done.touch()
    return workspace


@pytest.fixture
def run_copy(demo_run: Path, tmp_path: Path) -> Path:
    """A private copy of the demo run (git, DVC cache, outputs): a test may change it freely."""
    import shutil

    workspace = tmp_path / "ws"
    shutil.copytree(demo_run, workspace, symlinks=True)
    return workspace


@pytest.fixture(scope="session")
def ray_cluster() -> str:
    """One local Ray for the whole test run (2 CPUs, no dashboard, a 512 MiB object store), never a running
    cluster; its address lets stage subprocesses join it. Tests using it carry ``xdist_group("ray")`` so one
    worker runs them all."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=512 * 1024**2)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
