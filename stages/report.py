"""Stage report: a gallery of the top images for example queries and a sample of generated vs human captions."""

from pathlib import Path

from _common import Timer, fail, load_params, section, summary
from _runtime import runtime

from capsearch.contact_sheet import save_png
from capsearch.io import load_npy, read_csv
from capsearch.models.clip import ClipEmbedder
from capsearch.models.runtime import ModelLoadError
from capsearch.report import caption_samples, query_gallery, worst_queries
from capsearch.retrieval import index_of
from capsearch.search import METHODS, load_pipeline_index

OUT = Path("metrics/report")


def main() -> None:
    timer = Timer()
    params = load_params()
    p = section(params, "report", ("queries", "k", "method", "samples", "seed", "failures"))
    clip = section(params, "clip", ("model", "revision", "precision"))
    try:
        rt = runtime(params, use_cache=False)
        queries = [str(q).strip() for q in p["queries"]]
        if not queries or not all(queries):
            raise ValueError(f"report.queries: expected a list of non-empty queries, got {p['queries']!r}")
        if int(p["k"]) < 1 or int(p["samples"]) < 1:
            raise ValueError("report.k and report.samples must be at least 1")
        if p["method"] not in METHODS:
            raise ValueError(f"report.method: unknown method {p['method']!r}; choose one of {', '.join(METHODS)}")
        index = load_pipeline_index(".")
        embedder = ClipEmbedder(clip["model"], clip["revision"], clip["precision"], rt.device)
        vectors = embedder.embed_texts(queries).vectors
        references: dict[str, list[str]] = {}
        caption_rows = read_csv("data/subset/captions.csv", ["image_id", "caption_index", "caption"])
        for row in caption_rows:
            references.setdefault(row["image_id"], []).append(row["caption"])
        save_png(query_gallery(index, queries, vectors, int(p["k"]), p["method"]), OUT / "search.png")
        save_png(caption_samples(index, references, int(p["samples"]), int(p["seed"])), OUT / "captions.png")
        targets = index_of(index.ids, [row["image_id"] for row in caption_rows])
        failures = worst_queries(
            index,
            [row["caption"] for row in caption_rows],
            load_npy("data/embeddings/captions.npy"),
            targets,
            int(p["failures"]),
        )
        save_png(failures, OUT / "failures.png")
    except (ValueError, FileNotFoundError, ModelLoadError) as exc:
        fail("report", exc)
    summary(
        "report",
        f"{len(queries)} queries x top {p['k']}, {p['samples']} caption samples and the {p['failures']} worst "
        f"queries rendered to {OUT}/search.png, captions.png, failures.png in {timer.seconds:.1f}s",
    )


if __name__ == "__main__":
    main()
