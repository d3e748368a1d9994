"""Shared fixtures: toy models trained once per session, generated Flickr8k data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from capsearch.demo.model_cache import (
    TOY_FAMILIES,
    TOY_MODELS,
    TOY_OPEN_CLIP,
    TOY_VLMS,
    cached_toy_families,
    cached_toy_models,
    cached_toy_open_clip,
    cached_toy_vlms,
    ensure_toy_models,
)

# Results cached by the tests (and the dvc runs they start) stay out of the user's ~/.cache.
os.environ.setdefault("CAPSEARCH_CACHE_DIR", tempfile.mkdtemp(prefix="capsearch-test-cache-"))
PROJECT = Path(__file__).resolve().parents[1]
SHARED_FLICKR8K = PROJECT.parent / "shared" / "flickr8k"
# Each test worker (and every process it starts: dvc, stages, capsearch) gets its share of the cores: torch's
# thread pools spinning on cores another worker uses make both several times slower.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))


def _whole_suite(config: pytest.Config) -> bool:
    """Whether this run is the whole suite (no test files, node ids, -k or -m picked): then the shared toy models and
    workspaces are built up front, side by side; a run of a few tests builds only what its fixtures ask for."""
    picked = any(Path(arg.split("::")[0]).is_file() or "::" in arg for arg in config.args)
    return not picked and not config.getoption("keyword") and not config.getoption("markexpr")


def pytest_sessionstart(session: pytest.Session) -> None:
    """In the run's controller, for the whole suite: every missing toy model trained side by side, then the shared
    workspaces (the demo run and the shard run) built side by side, before any worker starts (no worker then waits
    on another's build with a core idle)."""
    config = session.config
    if hasattr(config, "workerinput") or not _whole_suite(config):
        return
    models, *_ = ensure_toy_models([TOY_MODELS, TOY_FAMILIES, TOY_OPEN_CLIP, TOY_VLMS])
    shared = runs_folder(models)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # each build is one `dvc repro` subprocess at a time: one core each
        builds = [pool.submit(_shared_run, shared, name, models) for name in SHARED_RUNS]
        for build in builds:
            build.result()


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
def toy_open_clip() -> Path:
    """The open_clip toy (open_clip's own CLIP class and tokenizer, its Hub layout), cached like ``toy_models``."""
    return cached_toy_open_clip()


@pytest.fixture(scope="session")
def toy_vlms() -> Path:
    """The instruction VLM toys (PaliGemma's and LLaVA's shapes: a prefix prompt and a chat template), cached like
    ``toy_models``."""
    return cached_toy_vlms()


@pytest.fixture(scope="session")
def unseen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[str], list]:
    """60 scenes no toy model was trained on, as PNG files of different sizes: the image source, the ids in scene
    order and the scenes (scene, image, captions)."""
    from capsearch.data.images import ImageSource
    from capsearch.demo.scenes import generate_scenes

    folder = tmp_path_factory.mktemp("unseen")
    scenes = generate_scenes(60, seed=777)
    for i, (_, image, _) in enumerate(scenes):
        image.convert("RGB").resize((80 + 7 * (i % 9), 64 + 5 * (i % 7))).save(folder / f"{i:03d}.png")
    return ImageSource(folder), [f"{i:03d}.png" for i in range(60)], scenes


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


def _demo_run(workspace: Path, models: Path) -> None:
    from capsearch.demo.workspace import create_demo_workspace

    create_demo_workspace(workspace, models, images=480, num_images=60)


def _shard_run(workspace: Path, models: Path) -> None:
    from capsearch.demo.workspace import create_demo_workspace

    create_demo_workspace(workspace, models, 480, 60, shards=3)


# name -> (how its workspace is made, what `dvc repro` runs): shared read-only by the tests, copied by those that change
SHARED_RUNS = {"demo-run": (_demo_run, ()), "shard-run": (_shard_run, ("evaluate",))}


PROJECT = Path(__file__).resolve().parents[1]


def runs_folder(models: Path) -> Path:
    """Where the shared workspaces are kept between test runs, like the toy models: beside them, under a key of
    everything their outputs depend on (the project's code and pipeline, the lock, this file's recipes, the toy
    models, Python and the installed libraries). Any change there builds them anew; older keys are removed."""
    import hashlib
    import json
    import shutil
    import sys
    import time

    from capsearch.versions import library_versions

    inputs = [*PROJECT.glob("src/**/*"), *PROJECT.glob("stages/*.py"), PROJECT / "dvc.yaml", PROJECT / "params.yaml"]
    digest = hashlib.sha256()
    for path in sorted(p for p in [*inputs, PROJECT / "requirements.lock", Path(__file__)] if p.is_file()):
        if "__pycache__" not in path.parts and not any(part.endswith(".egg-info") for part in path.parts):
            digest.update(str(path.relative_to(PROJECT)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps([str(models), sys.version, library_versions()]).encode())
    root = models.parent / ".test-runs"
    folder = root / digest.hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    for stale in root.iterdir():  # another key's, unused for a day
        if stale != folder and time.time() - stale.stat().st_mtime > 86_400:
            shutil.rmtree(stale, ignore_errors=True)
    return folder


def _shared_run(shared: Path, name: str, models: Path) -> Path:
    """The workspace ``name`` of :data:`SHARED_RUNS` after its `dvc repro`, committed; built once in ``shared``
    (:func:`runs_folder`: kept for later test runs of the same code): whoever comes first builds it while the
    others wait on a lock. Tests never change it (they copy it)."""
    import fcntl
    import shutil

    from capsearch.demo.workspace import commit_run, run_dvc

    make, targets = SHARED_RUNS[name]
    workspace, done = shared / name / "ws", shared / name / "built"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(shared / name, ignore_errors=True)  # an interrupted build's leftovers
            make(workspace, models)
            result = run_dvc(workspace, "repro", *targets, check=False)
            assert result.returncode == 0, result.stdout + result.stderr
            commit_run(workspace, name)
            done.touch()
    return workspace


@pytest.fixture(scope="session")
def demo_run(toy_models: Path) -> Path:
    """A demo workspace after one full `dvc repro`, committed; tests must not change it (see :func:`_shared_run`)."""
    return _shared_run(runs_folder(toy_models), "demo-run", toy_models)


@pytest.fixture(scope="session")
def shard_run(toy_models: Path) -> Path:
    """A workspace whose source is 3 generated shards, after `dvc repro evaluate` (local engine), committed."""
    return _shared_run(runs_folder(toy_models), "shard-run", toy_models)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests (whole `dvc repro` runs) first, so that no long test starts last on one worker while the
    other has nothing left to do."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def run_copy(demo_run: Path, tmp_path: Path) -> Path:
    """A private copy of the demo run (git, DVC cache, outputs): a test may change it freely."""
    import shutil

    workspace = tmp_path / "ws"
    shutil.copytree(demo_run, workspace, symlinks=True)
    return workspace


@pytest.fixture(scope="session")
def ray_cluster() -> Any:
    """A simulated two-node Ray cluster for the whole test run (``ray.cluster_utils.Cluster``: a head and a worker
    node of one CPU each, no dashboard, 256 MiB object stores), which this process and the stage subprocesses join at
    its ``address``. Tests may add a node and remove it again. Tests using it carry ``xdist_group("ray")`` so one
    worker runs them all."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    store = 256 * 1024**2
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": store},
    )
    cluster.add_node(num_cpus=1, object_store_memory=store)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
