"""capsearch: search images by text, caption your own pictures, index a folder, and run the offline demo.

Run `capsearch COMMAND --help` for each command. Examples, from a project where `dvc repro` has run:

  capsearch search "man riding a horse" -k 3 --out hits.png
  capsearch caption photos/ holiday/*.jpg
  capsearch index ~/Pictures && capsearch search "a dog on a beach" --index ~/Pictures
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from capsearch.errors import EXPECTED, CapsearchError


class UsageError(CapsearchError):
    """A problem the user can fix; printed as one line, exit status 2."""


def _quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


@functools.cache
def _raw_params(project: str) -> dict[str, Any]:
    """The project's params.yaml, read once per command (empty where the project has none)."""
    from capsearch.params import PARAMS_FILE, load_raw

    path = Path(project) / PARAMS_FILE
    return load_raw(path) if path.exists() else {}


def _project_params(args: argparse.Namespace, *sections: Any) -> Any:
    """The project's params sections (from its params.yaml where listed there, else the typed defaults)."""
    from capsearch.params import read_section

    raw = _raw_params(str(Path(args.project).resolve()))
    return tuple(read_section(raw, section) if section.NAME in raw else section() for section in sections)


def _runtime(args: argparse.Namespace, use_cache: bool = True) -> Any:
    """``runtime`` of params.yaml (device, workers, batch sizes, cache dir), with --device/--batch-size/--no-cache."""
    from dataclasses import replace

    from capsearch.models.runtime import resolve_runtime
    from capsearch.params import BATCH_TASKS, RuntimeParams

    (knobs,) = _project_params(args, RuntimeParams)
    if getattr(args, "device", None):
        knobs = replace(knobs, device=args.device)
    if getattr(args, "batch_size", None):
        knobs = replace(knobs, batch_size=dict.fromkeys(BATCH_TASKS, args.batch_size))
    if getattr(args, "no_cache", False):
        knobs = replace(knobs, cache=False)
    return resolve_runtime(knobs, use_cache=use_cache)


def _embedder(args: argparse.Namespace, device: str) -> Any:
    from capsearch.models.registry import load_dual_encoder
    from capsearch.params import ClipParams

    (clip,) = _project_params(args, ClipParams)
    if args.clip_model:
        return load_dual_encoder(
            args.clip_model, "main", args.precision or clip.precision, device, param="--clip-model"
        )
    return load_dual_encoder(clip.model, clip.revision, args.precision or clip.precision, device)


def _captioner(args: argparse.Namespace, device: str) -> Any:
    from capsearch.models.captioner import Captioner, DecodingSettings
    from capsearch.params import CaptionParams

    (section,) = _project_params(args, CaptionParams)
    settings = DecodingSettings.of(section)
    precision = args.precision or section.precision
    if args.caption_model:
        return Captioner(args.caption_model, "main", precision, device, param="--caption-model"), settings
    return Captioner(section.model, section.revision, precision, device), settings


def _read_queries(args: argparse.Namespace) -> list[str]:
    from capsearch.search import is_blank

    queries = list(args.queries)
    if args.queries_file:
        try:
            lines = Path(args.queries_file).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise UsageError(f"cannot read --queries-file: {exc}") from exc
        queries += [line.strip() for line in lines if not is_blank(line)]
    if not queries:
        raise UsageError("no query given: pass one or more queries, or --queries-file FILE")
    empty = [i + 1 for i, q in enumerate(queries) if is_blank(q)]
    if empty:
        raise UsageError(f"query {empty[0]} is empty: give some words to search for")
    return [q.strip() for q in queries]


def _server_url(args: argparse.Namespace) -> str | None:
    """The URL of a capsearch server to ask: --server or $CAPSEARCH_SERVER, else the live one announced for this
    index (checked: its process runs and answers as itself); why an announced one is not used goes to stderr."""
    if args.no_server or args.out:
        return None
    configured = args.server or os.environ.get("CAPSEARCH_SERVER")
    if configured:
        return configured.rstrip("/")
    from capsearch.index import server_file
    from capsearch.serve import running_server

    announced = server_file(args.project, args.index)
    url, why = running_server(announced)
    if url is None and announced.exists():
        print(f"capsearch search: {why}; searching in this process instead", file=sys.stderr)
    return url


def _http_json(url: str, timeout: float = 30.0) -> Any:
    """GET ``url`` and decode its JSON; a 4xx/5xx becomes a UsageError with the server's message."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise UsageError(f"the server at {url.split('/api/')[0]} answered {exc.code}: {message}") from None


def _search_on_server(args: argparse.Namespace, url: str, queries: list[str]) -> list[tuple[list[dict], int]]:
    """Each query's hits from a running server, and the gallery size."""
    from urllib.parse import urlencode

    answers = []
    for query in queries:
        fields: dict[str, Any] = {"q": query, "k": args.k, "method": args.method, "exact": int(args.exact)}
        if args.alpha is not None:
            fields["alpha"] = args.alpha
        try:
            body = _http_json(f"{url}/api/search?{urlencode(fields)}")
        except OSError as exc:
            raise UsageError(f"no capsearch server answers at {url} ({exc}); start one with `capsearch serve`") from exc
        answers.append((body["hits"], body["images"]))
    return answers


def _load_searchable(args: argparse.Namespace) -> tuple[Any, str]:
    """The index to search (the pipeline's or --index's), with its faiss indexes where built; and a note."""
    from capsearch.index import ann_files, attach_ann, load_index
    from capsearch.params import IndexParams

    index = load_index(args.project, args.index)
    files = ann_files(args.project, args.index)
    if not all(path.exists() for path in files):
        how = "`dvc repro index`" if args.index is None else f"`capsearch index {args.index}`"
        return index, f"exact search (no faiss index: run {how} for one)"
    (knobs,) = _project_params(args, IndexParams)
    attach_ann(index, files, knobs)
    return index, f"{index.ann['image'].kind} index, {index.candidates} candidates re-ranked exactly"


def _search(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise UsageError(f"-k must be at least 1, got {args.k}")
    queries = _read_queries(args)
    started = time.perf_counter()
    url = _server_url(args)
    if url is not None:
        answers = _search_on_server(args, url, queries)
        where = f"answered by the capsearch server at {url}"
    else:
        _quiet_libraries()
        from capsearch.models.registry import load_dual_encoder
        from capsearch.search import search

        index, note = _load_searchable(args)
        runtime = _runtime(args, use_cache=False)
        embedder = load_dual_encoder(index.clip.model, index.clip.revision, index.clip.precision, runtime.device)
        started = time.perf_counter()
        vectors = embedder.embed_texts(queries).vectors
        results = search(index, vectors, args.k, args.method, args.alpha, exact=args.exact)
        answers = [([asdict(hit) for hit in hits], len(index.ids)) for hits in results]
        where = "exact search" if args.exact else note
    seconds = time.perf_counter() - started
    if args.out:
        from capsearch.contact_sheet import render_contact_sheet, save_png
        from capsearch.report import hit_tiles

        rows = [(f'"{q}" ({args.method})', hit_tiles(index, hits)) for q, hits in zip(queries, results, strict=True)]
        save_png(render_contact_sheet(rows), args.out)
    if args.json:
        payload = [
            {"query": q, "method": args.method, "hits": hits} for q, (hits, _) in zip(queries, answers, strict=True)
        ]
        print(json.dumps(payload, indent=2))
    else:
        for query, (hits, images) in zip(queries, answers, strict=True):
            print(f'"{query}"  ({args.method}, {images} images)')
            if hits and all(hit["weak"] for hit in hits):
                print("no image matches this query well: every hit below is a weak match")
            print(f"{'rank':>4}  {'score':>6}  {'image':<60}  caption")
            for hit in hits:
                weak = "  (weak match)" if hit["weak"] else ""
                print(f"{hit['rank']:>4}  {hit['score']:>6.3f}  {hit['path']:<60}  {hit['caption']}{weak}")
            print()
    from capsearch.progress import counted

    per_query = 1000 * seconds / len(queries)
    print(
        f"{counted(len(queries), 'query')} in {1000 * seconds:.1f} ms ({per_query:.1f} ms/query); {where}",
        file=sys.stderr,
    )
    if args.out:
        print(f"contact sheet: {args.out}", file=sys.stderr)
    return 0


def _serve(args: argparse.Namespace) -> int:
    from capsearch.index import server_file
    from capsearch.serve import bind, exposure_warning, running_server

    announce = server_file(args.project, args.index)
    running, _ = running_server(announce)
    if running is not None:
        raise UsageError(f"a capsearch server for this index already runs at {running}; stop it first")
    try:  # the port first: a busy one is reported before the model loads
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from exc
    warning = exposure_warning(args.host)
    if warning:
        print(f"capsearch serve: {warning}", file=sys.stderr, flush=True)
    _quiet_libraries()
    from capsearch.artifacts import RunLayout, read_references
    from capsearch.models.registry import load_dual_encoder
    from capsearch.serve import Service, serve

    index, note = _load_searchable(args)
    runtime = _runtime(args, use_cache=False)
    embedder = load_dual_encoder(index.clip.model, index.clip.revision, index.clip.precision, runtime.device)
    references = RunLayout.under(args.project).references
    service = Service(
        index,
        lambda queries: embedder.embed_texts(queries).vectors,
        str(Path(args.index or args.project).resolve()),
        read_references(references).by_image() if args.index is None and references.exists() else {},
    )
    print(f"capsearch serve: {note}", flush=True)
    serve(service, sock, announce)
    return 0


def _caption(args: argparse.Namespace) -> int:
    from capsearch.data.images import find_images

    badly_named: list[tuple[str, str]] = []
    files = [p.resolve() for p in find_images(args.paths, badly_named)]
    _quiet_libraries()
    from capsearch.data.images import ImageSource

    source = ImageSource(Path.cwd())
    runtime = _runtime(args)
    captioner, settings = _captioner(args, runtime.device)
    ids = [str(p) for p in files]
    captions = captioner.caption_images(
        source,
        ids,
        settings,
        runtime.batch_for("caption", captioner.family),
        runtime.num_workers,
        runtime.cache,
        runtime.decode,
        skip_unreadable=True,
    )
    bad = captioner.last_run.skipped
    for name, reason in badly_named:
        print(f"capsearch caption: {name}: {reason}", file=sys.stderr)
    for _, reason in bad:
        print(f"capsearch caption: {reason}", file=sys.stderr)
    unreadable = {image_id for image_id, _ in bad}
    good = [image_id for image_id in ids if image_id not in unreadable]
    here = Path.cwd().resolve()
    shown = {p: str(Path(p).relative_to(here)) if Path(p).is_relative_to(here) else p for p in good}  # no ../../
    if args.json:
        print(json.dumps([{"path": shown[p], "caption": c} for p, c in zip(good, captions, strict=True)], indent=2))
    else:
        for path, caption in zip(good, captions, strict=True):
            print(f"{shown[path]}\t{caption}")
    return 1 if bad or badly_named else 0


def _index(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: not a folder")
    from capsearch.data.images import find_images

    if not find_images([folder]):  # before any model loads: an empty folder is not a model problem
        from capsearch.data.flickr8k import SUFFIXES_SHOWN

        raise UsageError(f"{folder}: no images ({SUFFIXES_SHOWN}) in it or below it")
    _quiet_libraries()
    from capsearch.index import INDEX_DIR_NAME
    from capsearch.params import IndexParams
    from capsearch.pipeline import index_folder

    out = Path(args.out) if args.out else folder / INDEX_DIR_NAME
    started = time.perf_counter()
    runtime = _runtime(args)
    captioner, settings = _captioner(args, runtime.device)
    embedder = _embedder(args, runtime.device)
    (ann,) = _project_params(args, IndexParams)
    index, skipped = index_folder(folder, out, captioner, embedder, settings, runtime, ann)
    print(
        f"indexed {len(index.ids)} images under {folder.resolve()} into {out} "
        f"({len(skipped)} unreadable skipped; {captioner.last_run.cached} captions and "
        f"{embedder.last_run.cached} embeddings from the cache) in {time.perf_counter() - started:.1f}s; "
        f'search it with: capsearch search "..." --index {args.out or args.folder}'
    )
    for image_id, reason in skipped:
        print(f"skipped {image_id}: {reason}", file=sys.stderr)
    return 0


DEMO_DATASETS = ("flickr8k", "coco", "flickr30k", "shards")


def _demo(args: argparse.Namespace) -> int:
    from capsearch.demo.model_cache import TOY_MODELS, cached_toy_models, set_folder
    from capsearch.demo.workspace import commit_run, create_demo_workspace, demo_summary, dvc_command, tool_env

    started = time.perf_counter()
    workspace = Path(args.dir).resolve()
    if args.models:
        models = Path(args.models).resolve()
    else:
        print("toy models: trained once per version of their code, kept in ~/.cache/capsearch/toy-models", flush=True)
        if not TOY_MODELS.exist(set_folder(TOY_MODELS)):
            print("training the toy CLIP and BLIP side by side (about 2 minutes on 2 cores)...", flush=True)
        models = cached_toy_models()
    shards = args.shards or (4 if args.dataset == "shards" else 0)
    karpathy = args.dataset if args.dataset in ("coco", "flickr30k") else None
    create_demo_workspace(
        workspace, models, images=args.images, num_images=args.num_images, shards=shards, karpathy=karpathy
    )
    print(f"dvc repro in {workspace} ({args.dataset}; each stage prints one line when it is done):", flush=True)
    # live output: stage by stage, progress bars on a terminal
    repro = subprocess.run([dvc_command(), "repro"], cwd=workspace, env=tool_env())
    if repro.returncode != 0:
        print(f"dvc repro failed in {workspace}", file=sys.stderr)
        return repro.returncode
    commit_run(workspace, "demo run")
    print(demo_summary(workspace / "metrics"))
    here = Path(os.path.relpath(workspace))
    venv = Path(sys.executable).parent  # `make demo` runs this with the venv on its own PATH, not on the user's
    activated = os.environ.get("VIRTUAL_ENV") and Path(os.environ["VIRTUAL_ENV"]).resolve() == venv.parent.resolve()
    activate = "" if activated else f"  first:   source {os.path.relpath(venv / 'activate')}   (capsearch and dvc)\n"
    print(
        f"demo finished in {time.perf_counter() - started:.0f}s. Workspace: {here}\n{activate}"
        f'  search:  cd {here} && capsearch search "a red circle" -k 3\n'
        f"  compare: dvc exp run -S caption.num_beams=1 && dvc metrics diff\n"
        f"  serve:   capsearch serve   (a search page at http://127.0.0.1:8765)"
    )
    return 0


def _plots(args: argparse.Namespace) -> int:
    from capsearch.demo.workspace import run_dvc
    from capsearch.plots import PlotsError, render_plots

    def dvc(*words: str) -> str:
        result = run_dvc(Path.cwd(), *words, check=False)
        if result.returncode != 0:
            lines = (result.stderr or result.stdout).strip().splitlines()
            raise UsageError(f"dvc {' '.join(words)} failed: {lines[-1] if lines else result.returncode}")
        return result.stdout

    if not Path("dvc.yaml").is_file():
        raise UsageError("no dvc.yaml here: run capsearch plots in a capsearch project (e.g. build/demo)")
    revisions = args.revisions or ["HEAD", *dvc("exp", "ls", "--name-only").split()]
    shown = dvc("plots", "diff", "--json", *revisions)
    try:
        drawn = render_plots(json.loads(shown[shown.index("{") :])["data"], args.out)
    except PlotsError as exc:
        raise UsageError(str(exc)) from None
    print(f"{len(drawn)} plots of {', '.join(revisions)} drawn to {Path(args.out) / 'index.html'}")
    return 0


def _toy_models(args: argparse.Namespace) -> int:
    from capsearch.demo.model_cache import (
        TOY_FAMILIES,
        TOY_MODELS,
        TOY_OPEN_CLIP,
        TOY_VLMS,
        build_models,
        ensure_toy_models,
    )

    sets = [TOY_MODELS, TOY_FAMILIES, TOY_OPEN_CLIP, TOY_VLMS] if args.families else [TOY_MODELS]
    if args.vlms:
        sets = [TOY_VLMS]
    if args.dir is None:  # the shared cache the demo and the tests use
        for folder in ensure_toy_models(sets):
            print(folder)
        return 0
    out = Path(args.dir)
    print(json.dumps(build_models([(model, out) for models in sets for model in models.models])[out], indent=2))
    return 0


def _toy_data(args: argparse.Namespace) -> int:
    from capsearch.demo.scenes import write_flickr8k_layout
    from capsearch.demo.shards import write_webdataset_shards

    if args.shards:
        shards = write_webdataset_shards(args.dir, args.images, -(-args.images // args.shards), args.seed)
        print(f"wrote {len(shards)} webdataset shards to {args.dir} ({args.images} images, one caption each)")
        return 0
    paths = write_flickr8k_layout(args.dir, args.images, args.seed)
    print(f"wrote {paths['images']} and {paths['text']} ({args.images} images)")
    return 0


def _model_options(parser: argparse.ArgumentParser, captioner: bool, clip: bool, precision: bool = True) -> None:
    parser.add_argument("--project", default=".", help="project folder with params.yaml and the pipeline's data/")
    if captioner:
        parser.add_argument(
            "--caption-model",
            "--blip-model",
            dest="caption_model",
            help="captioner (BLIP, BLIP-2, GIT, ...) hub id or local folder (default: caption.model of params.yaml)",
        )
    if clip:
        parser.add_argument(
            "--clip-model", help="dual encoder (CLIP, SigLIP, ...) hub id or local folder (default: clip.model)"
        )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: runtime.device of params.yaml")
    if precision:
        parser.add_argument("--precision", choices=("auto", "fp32", "fp16", "bf16"), help="default: from params.yaml")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``capsearch``."""
    parser = argparse.ArgumentParser(
        prog="capsearch", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    search = commands.add_parser(
        "search",
        help="find the images that best match a text query",
        description="Rank the indexed images for each query: by the image itself (the dual encoder: CLIP, SigLIP, "
        "...), by its generated "
        "caption, or a fusion of both. Uses the pipeline's artifacts (run `dvc repro` first) or --index.",
    )
    search.add_argument("queries", nargs="*", help='one or more queries, e.g. "man riding a horse"')
    search.add_argument("-k", type=int, default=5, help="how many images per query (default 5)")
    search.add_argument("--method", choices=("image", "caption", "fusion"), default="image", help="default: image")
    search.add_argument(
        "--alpha",
        type=float,
        help="fusion weight of the image score (default: the alpha tune_fusion chose on dev, else 0.5)",
    )
    search.add_argument("--queries-file", help="a file with one query per line")
    search.add_argument("--index", help="a folder indexed by `capsearch index` (default: this project's pipeline)")
    search.add_argument("--out", help="write a contact sheet PNG of the hits")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.add_argument("--exact", action="store_true", help="score every image, bypassing the faiss index (a check)")
    search.add_argument(
        "--server", help="ask the capsearch server at this URL (default: $CAPSEARCH_SERVER, else one found running)"
    )
    search.add_argument("--no-server", action="store_true", help="search in this process even if a server runs")
    _model_options(search, captioner=False, clip=False, precision=False)
    search.set_defaults(func=_search)

    serve = commands.add_parser(
        "serve",
        help="serve search over HTTP: a web page and a JSON API",
        description="Load the dual encoder and the index once and answer /api/search, /api/images/ID, /api/info/ID, "
        "/api/health and a search page at /. `capsearch search` finds a running server and uses it.",
    )
    serve.add_argument("--index", help="a folder indexed by `capsearch index` (default: this project's pipeline)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    _model_options(serve, captioner=False, clip=False, precision=False)
    serve.set_defaults(func=_serve)

    caption = commands.add_parser(
        "caption",
        help="caption image files, folders or globs (caption.model: BLIP, BLIP-2, GIT, ...)",
        description="Print `path<TAB>caption` for each image. Folders are searched recursively for "
        ".jpg/.jpeg/.png/.webp. Unreadable images are reported on stderr and make the exit status 1.",
    )
    caption.add_argument("paths", nargs="+", help="image files, folders or glob patterns")
    caption.add_argument("--json", action="store_true", help="print JSON instead of lines")
    caption.add_argument("--batch-size", type=int, help="default: runtime.batch_size of params.yaml")
    _model_options(caption, captioner=True, clip=False)
    caption.set_defaults(func=_caption)

    index = commands.add_parser(
        "index",
        help="caption and embed a folder of images so `search --index` can search it",
        description="Caption (caption.model: BLIP, GIT, ...) and embed (clip.model: CLIP, SigLIP, ...) every "
        "image under FOLDER, recursively, with the pipeline's "
        "code. Unreadable images are skipped and listed. The index goes to FOLDER/.capsearch by default.",
    )
    index.add_argument("folder")
    index.add_argument("--out", help="index folder (default: FOLDER/.capsearch)")
    index.add_argument("--batch-size", type=int, help="default: runtime.batch_size of params.yaml")
    index.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute everything (default: reuse the result cache, see docs/speed.md)",
    )
    _model_options(index, captioner=True, clip=True)
    index.set_defaults(func=_index)

    demo = commands.add_parser("demo", help="run the whole pipeline offline on generated data with toy models")
    demo.add_argument("--dir", default="build/demo", help="workspace to (re)create (default: build/demo)")
    demo.add_argument(
        "--models", help="toy model folder (default: ~/.cache/capsearch/toy-models/<code key>, built if missing)"
    )
    demo.add_argument("--images", type=int, default=800, help="generated images; the test split is 1/8 of them")
    demo.add_argument("--num-images", type=int, default=80, help="subset.num_images of the demo run")
    demo.add_argument(
        "--dataset",
        choices=DEMO_DATASETS,
        default="flickr8k",
        help="the generated source: Flickr8k's release zips, COCO's or Flickr30k's download with Karpathy's split "
        "file, or webdataset shards (default: flickr8k)",
    )
    demo.add_argument("--shards", type=int, default=0, help="with --dataset shards: how many shards (default: 4)")
    demo.set_defaults(func=_demo)
    plots = commands.add_parser(
        "plots", help="draw the recall curves of the run and its experiments to PNG + HTML, offline"
    )
    plots.add_argument(
        "revisions", nargs="*", help="git revisions or experiment names (default: HEAD and its experiments)"
    )
    plots.add_argument("--out", default="dvc_plots/offline", help="folder to write (default: dvc_plots/offline)")
    plots.set_defaults(func=_plots)
    toy = commands.add_parser("toy-models", help="train and save the toy models (CLIP and BLIP; the others on request)")
    toy.add_argument("dir", nargs="?", help="where to save them (default: the shared cache the demo uses; prints it)")
    which = toy.add_mutually_exclusive_group()
    which.add_argument("--families", action="store_true", help="also SigLIP, GIT, open_clip, PaliGemma and LLaVA")
    which.add_argument("--vlms", action="store_true", help="only the instruction VLMs (toy-paligemma, toy-llava)")
    toy.set_defaults(func=_toy_models)
    data = commands.add_parser("toy-data", help="write generated Flickr8k zips in the release layout, or shards")
    data.add_argument("dir")
    data.add_argument("--images", type=int, default=800)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--shards", type=int, default=0, help="write this many img2dataset-style webdataset shards")
    data.set_defaults(func=_toy_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``capsearch`` console script: expected problems exit with one clear line."""

    args = build_parser().parse_args(argv)
    _raw_params.cache_clear()  # once per command (a long-lived caller may edit params.yaml between commands)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"capsearch {args.command}: {exc}", file=sys.stderr)
        return 2
    except EXPECTED as exc:
        print(f"capsearch {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
