"""The ``capsearch`` command: the offline demo and its building blocks."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from capsearch.demo import commit_run, create_demo_workspace, run_dvc
    from capsearch.models.toy import build_toy_models, toy_models_exist

    started = time.perf_counter()
    workspace = Path(args.dir).resolve()
    models = Path(args.models).resolve() if args.models else workspace.parent / "toy-models"
    if not toy_models_exist(models):
        print(f"training toy CLIP and BLIP into {models} (about 2 minutes on 2 cores)...", flush=True)
        report = build_toy_models(models)
        print(f"toy models: {report}", flush=True)
    create_demo_workspace(workspace, models, images=args.images, num_images=args.num_images)
    result = run_dvc(workspace, "repro", check=False)
    print(result.stdout + result.stderr, flush=True)
    if result.returncode != 0:
        print(f"dvc repro failed in {workspace}", file=sys.stderr)
        return result.returncode
    commit_run(workspace, "demo run")
    print(run_dvc(workspace, "metrics", "show").stdout)
    print(
        f"demo finished in {time.perf_counter() - started:.0f}s. Workspace: {workspace}\n"
        f"  metrics: {workspace / 'metrics' / 'retrieval.json'} (recall curve: metrics/recall_curve.json)\n"
        f"  compare: cd {workspace} && dvc exp run -S caption.num_beams=1 && dvc metrics diff\n"
        f"           dvc exp show; dvc plots show (writes dvc_plots/index.html)"
    )
    return 0


def _toy_models(args: argparse.Namespace) -> int:
    from capsearch.models.toy import build_toy_models

    print(build_toy_models(args.dir))
    return 0


def _toy_data(args: argparse.Namespace) -> int:
    from capsearch.data.synthetic import write_flickr8k_layout

    paths = write_flickr8k_layout(args.dir, args.images, args.seed)
    print(f"wrote {paths['images']} and {paths['text']} ({args.images} images)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``capsearch``."""
    parser = argparse.ArgumentParser(prog="capsearch", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the whole pipeline offline on generated data with toy models")
    demo.add_argument("--dir", default="build/demo", help="workspace to (re)create (default: build/demo)")
    demo.add_argument("--models", help="toy model folder (default: <dir>/../toy-models, built if missing)")
    demo.add_argument("--images", type=int, default=800, help="generated images; the test split is 1/8 of them")
    demo.add_argument("--num-images", type=int, default=80, help="subset.num_images of the demo run")
    demo.set_defaults(func=_demo)
    toy = commands.add_parser("toy-models", help="train and save the toy CLIP and BLIP models")
    toy.add_argument("dir")
    toy.set_defaults(func=_toy_models)
    data = commands.add_parser("toy-data", help="write generated Flickr8k zips in the release layout")
    data.add_argument("dir")
    data.add_argument("--images", type=int, default=800)
    data.add_argument("--seed", type=int, default=0)
    data.set_defaults(func=_toy_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``capsearch`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
