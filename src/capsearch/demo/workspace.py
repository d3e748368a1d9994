"""An isolated, offline DVC workspace running the real pipeline on generated data with toy models.

``make demo`` calls :func:`create_demo_workspace` then :func:`run_dvc` ``repro``. The workspace is its own git +
DVC repository (``dvc metrics diff`` and ``dvc exp`` need git) with its own ``params.yaml``; the project's
``params.yaml`` is never touched. The fetch stage "downloads" the generated zips through ``file://`` URLs with
their real MD5s, so every stage runs exactly the code it runs on real Flickr8k.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from capsearch.data.fetch import md5_of
from capsearch.demo.karpathy_layout import write_karpathy_layout
from capsearch.demo.model_cache import TOY_MODEL_NAMES
from capsearch.demo.scenes import iter_scenes, write_flickr8k_layout
from capsearch.demo.shards import write_webdataset_shards
from capsearch.params import (
    CaptionParams,
    ClipParams,
    FetchParams,
    FusionParams,
    ReportParams,
    RuntimeParams,
    SourceParams,
    SubsetParams,
    default_params,
)

PIPELINE_FILES = ("dvc.yaml", "requirements.lock", "stages", "src/capsearch")


def project_root() -> Path:
    """The source checkout this package runs from (holding dvc.yaml and stages/)."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "dvc.yaml").exists():
        raise FileNotFoundError(f"dvc.yaml not found at {root}: the demo needs a source checkout of capsearch")
    return root


def tool_env() -> dict[str, str]:
    """Environment for dvc/git subprocesses: this interpreter's bin first on PATH, no telemetry."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    env.setdefault("GIT_AUTHOR_NAME", "capsearch demo")
    env.setdefault("GIT_AUTHOR_EMAIL", "demo@capsearch.invalid")
    env.setdefault("GIT_COMMITTER_NAME", "capsearch demo")
    env.setdefault("GIT_COMMITTER_EMAIL", "demo@capsearch.invalid")
    return env


def run_tool(args: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git or dvc in ``cwd``; on failure raise with its output."""
    result = subprocess.run(args, cwd=cwd, env=tool_env(), text=True, capture_output=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}) in {cwd}:\n{result.stdout}\n{result.stderr}")
    return result


def dvc_command() -> str:
    """The dvc of this environment (beside its python)."""
    return str(Path(sys.executable).parent / "dvc")


def run_dvc(workspace: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``dvc ARGS`` in the workspace with this environment's python on PATH."""
    return run_tool([dvc_command(), *args], workspace, check)


DEMO_PHOTOS = 12  # generated scenes in the workspace's photos/, a folder to index as one's own
SHARDS_DIR = "source/shards"  # in the workspace: the webdataset demo's shards


def demo_params(
    source_dir: Path, models_dir: Path, num_images: int, shards: bool = False, karpathy: dict[str, Path] | None = None
) -> dict[str, Any]:
    """params.yaml of the demo, from the typed defaults: file:// URLs with real MD5s (of the generated Flickr8k
    zips, or of a generated Flickr30k / COCO download in ``karpathy``; or the generated webdataset shards), toy
    models, fp32 on the CPU."""
    images, text = source_dir / "Flickr8k_Dataset.zip", source_dir / "Flickr8k_text.zip"
    fetch = FetchParams(images.resolve().as_uri(), md5_of(images), text.resolve().as_uri(), md5_of(text))
    source = SourceParams("webdataset", SHARDS_DIR) if shards else SourceParams()
    if karpathy is not None:
        kind = "coco" if karpathy["images"].suffix == ".zip" else "flickr30k"
        url, md5 = karpathy["images"].resolve().as_uri(), md5_of(karpathy["images"])
        splits = {"karpathy_url": karpathy["splits"].resolve().as_uri(), "karpathy_md5": md5_of(karpathy["splits"])}
        fetch = replace(fetch, **splits, **{f"{kind}_images_url": url, f"{kind}_images_md5": md5})
        source = SourceParams(kind)
    return default_params(
        fetch=FetchParams() if shards else fetch,
        source=source,
        subset=SubsetParams(split="test", num_images=num_images, seed=0),
        caption=CaptionParams(
            model=str((models_dir / "toy-blip").resolve()),
            revision="main",
            max_new_tokens=20,
            min_new_tokens=3,
            precision="fp32",
        ),
        clip=ClipParams(model=str((models_dir / "toy-clip").resolve()), revision="main", precision="fp32"),
        fusion=FusionParams(split="dev", num_images=num_images // 2, seed=0),
        report=ReportParams(
            queries=("a red circle", "a large blue square on a white background", "a small yellow triangle")
        ),
        runtime=RuntimeParams(
            device="cpu",
            num_workers=0,
            batch_size={"caption": 32, "embed_images": 64, "embed_texts": 256},
            cache=True,
            cache_dir=None,
        ),
    )


def create_demo_workspace(
    workspace: str | Path,
    models_dir: str | Path,
    images: int = 800,
    num_images: int = 80,
    seed: int = 0,
    shards: int = 0,
    karpathy: str | None = None,
) -> Path:
    """Make a fresh git + DVC workspace with the pipeline, generated Flickr8k zips and a demo params.yaml.

    ``models_dir`` must hold the toy models (see :func:`capsearch.demo.toy_models.build_toy_models`). The test split
    of ``images`` generated images has ``images // 8`` images; ``num_images`` of them are used. With ``shards``,
    the source is instead that many webdataset shards of the images in ``source/shards`` (test split: 20%), the
    sixth image of the second shard undecodable. With ``karpathy`` (``flickr30k`` or ``coco``), the source is that
    dataset's download layout with Karpathy's split file, generated in ``source/`` (test split: 1 image in 8).
    """
    workspace = Path(workspace).resolve()
    models_dir = Path(models_dir).resolve()
    missing = [name for name in TOY_MODEL_NAMES if not (models_dir / name / "config.json").exists()]
    if missing:
        raise FileNotFoundError(f"toy models missing under {models_dir}: {', '.join(missing)}")
    if workspace.exists():
        shutil.rmtree(workspace)
    workspace.mkdir(parents=True)
    root = project_root()
    for name in PIPELINE_FILES:
        source = root / name
        if source.is_dir():
            shutil.copytree(source, workspace / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (workspace / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, workspace / name)
    source_dir = workspace / "source"
    write_flickr8k_layout(source_dir, images, seed)
    if shards:
        per_shard = -(-images // shards)
        write_webdataset_shards(workspace / SHARDS_DIR, images, per_shard, seed, corrupt=(per_shard + 5,))
    downloads = write_karpathy_layout(karpathy, source_dir / karpathy, images, seed) if karpathy else None
    (workspace / "photos").mkdir()
    for number, (_, image, _) in enumerate(iter_scenes(DEMO_PHOTOS, seed + 1)):  # for `capsearch index photos`
        image.save(workspace / "photos" / f"scene_{number:02d}.jpg", quality=90)
    params = demo_params(source_dir, models_dir, num_images, shards=bool(shards), karpathy=downloads)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    (workspace / ".gitignore").write_text(
        "/data/\n/source/\n/photos/.capsearch/\n/dvc_plots/\n__pycache__/\n", encoding="utf-8"
    )
    run_tool(["git", "init", "-q"], workspace)
    run_dvc(workspace, "init", "-q")
    run_dvc(workspace, "config", "core.analytics", "false")
    run_tool(["git", "add", "-A"], workspace)
    run_tool(["git", "commit", "-q", "-m", "capsearch demo workspace"], workspace)
    return workspace


def commit_run(workspace: Path, message: str) -> None:
    """Commit dvc.lock, params and metrics so ``dvc metrics diff`` compares against this run."""
    run_tool(["git", "add", "-A"], workspace)
    run_tool(["git", "commit", "-q", "-m", message], workspace)


def demo_summary(metrics: Path) -> str:
    """The run's headline numbers in three short lines (``dvc metrics show`` has them all)."""
    retrieval = json.loads((metrics / "retrieval.json").read_text(encoding="utf-8"))
    quality = json.loads((metrics / "caption_quality.json").read_text(encoding="utf-8"))

    def recalls(direction: str) -> str:
        return "  ".join(f"R@{k} {retrieval[direction][f'R@{k}']:.1f}" for k in (1, 5, 10))

    scores = "  ".join(f"{name} {quality[name]:.1f}" for name in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"))
    return (
        f"text→image  {recalls('text_to_image')}   ({retrieval['query_captions']} captions, "
        f"{retrieval['gallery_images']} images)\n"
        f"image→text  {recalls('image_to_text')}\n"
        f"captions    {scores}   (all of them: metrics/*.json)"
    )
