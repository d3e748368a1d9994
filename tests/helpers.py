"""Small helpers shared by several test modules."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from capsearch.io import read_csv
from capsearch.models.captioner import DecodingSettings
from capsearch.params import default_params

CAPSEARCH = str(Path(sys.executable).parent / "capsearch")

GREEDY = DecodingSettings(num_beams=1, max_new_tokens=12, min_new_tokens=2)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two arrays of the same shape."""
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def kaggle_folder(root: Path, count: int = 12, splits: bool = False) -> Path:
    """A Kaggle-layout folder (Images/, captions.txt with commas in captions, one broken image)."""
    folder = root / "kaggle"
    (folder / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    for i in range(count):
        name = f"img_{i:02d}.jpg"
        Image.new("RGB", (40 + i, 30), (20 * i, 100, 200)).save(folder / "Images" / name)
        lines += [f'{name},"A box, number {i}, caption {k} ."' for k in range(5)]
    (folder / "Images" / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    lines += ['broken.jpg,"a, b"'] * 5
    (folder / "captions.txt").write_text("\n".join(lines) + "\n")
    if splits:
        names = [f"img_{i:02d}.jpg" for i in range(count)]
        (folder / "Flickr_8k.testImages.txt").write_text("\n".join([*names[:4], "broken.jpg"]) + "\n")
        (folder / "Flickr_8k.devImages.txt").write_text("\n".join(names[4:8]) + "\n")
        (folder / "Flickr_8k.trainImages.txt").write_text("\n".join(names[8:]) + "\n")
    return folder


def write_typed_params(workspace: Path, **sections) -> None:
    """The workspace's params.yaml: the typed defaults with ``sections`` changed."""
    (workspace / "params.yaml").write_text(yaml.safe_dump(default_params(**sections)), encoding="utf-8")


def capsearch(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the ``capsearch`` command of this environment in ``cwd``."""
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    return subprocess.run([CAPSEARCH, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)


def capsearch_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``capsearch ARGS`` run in this process (``capsearch.cli.main``) from ``cwd``: the same code as the console
    script without a new interpreter's imports (seconds each); the result as :func:`capsearch` gives it."""
    import contextlib
    import io

    from capsearch.cli import main

    out, err = io.StringIO(), io.StringIO()
    before = Path.cwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exit_:  # argparse's usage errors
                code = int(exit_.code or 0)
    finally:
        os.chdir(before)
    return subprocess.CompletedProcess(["capsearch", *args], code, out.getvalue(), err.getvalue())


def references(workspace: Path) -> dict[str, list[str]]:
    """The lower-cased reference captions of a run's subset, by image id."""
    refs: dict[str, list[str]] = {}
    for row in read_csv(workspace / "data/subset/references.csv", ["image_id", "caption_index", "caption"]):
        refs.setdefault(row["image_id"], []).append(row["caption"].lower())
    return refs


def pending(workspace: Path) -> set[str]:
    """The stages `dvc status` says would run next in ``workspace`` (their dependencies changed)."""
    from capsearch.demo.workspace import run_dvc

    status = json.loads(run_dvc(workspace, "status", "--json").stdout or "{}")
    return {name.split(":")[-1] for name in status}


def experiment_rows(shown: object) -> list[dict]:
    """Every named row of `dvc exp show --json` (baselines and experiments): its name, rev, params.yaml's values and
    its metrics by file."""
    rows: list[dict] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            data = node.get("data")
            if isinstance(data, dict) and "params" in data and node.get("name"):
                metrics = {path: value.get("data", {}) for path, value in data.get("metrics", {}).items()}
                params = data["params"]["params.yaml"]["data"]
                rows.append({"name": node["name"], "rev": node.get("rev"), "params": params, "metrics": metrics})
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(shown)
    return rows


def wait_for(predicate, timeout: float, what: str) -> None:
    """Poll ``predicate`` every 50 ms until it holds; past ``timeout`` seconds, fail naming ``what``."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@contextlib.contextmanager
def dvc_in_background(workspace: Path, *args: str):
    """`dvc ARGS` started in ``workspace`` in its own process group (the venv's dvc, as a user runs it); SIGKILLed
    with everything it started when the block ends, if it still runs."""
    import signal

    from capsearch.demo.workspace import tool_env

    dvc = str(Path(sys.executable).parent / "dvc")
    process = subprocess.Popen(
        [dvc, *args], cwd=workspace, env=tool_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def ray_core_warning(line: str) -> bool:
    """The one line Ray's C++ core writes to the driver's stderr on every run of Ray Data actors with restarts
    (``core_worker.cc: ... has constructor arguments in the object store and max_restarts > 0``): not silenced, as
    the only switch for it (``RAY_BACKEND_LOG_LEVEL``) prints a line of its own (docs/cluster.md)."""
    return "core_worker.cc" in line and "constructor arguments in the object store" in line
