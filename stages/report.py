"""Stage report: a gallery of the top images for example queries and a sample of generated vs human captions."""

from pathlib import Path

from _common import Timer, fail, read_params, summary

from capsearch.contact_sheet import save_png
from capsearch.io import load_npy, read_csv
from capsearch.models.clip import ClipEmbedder
from capsearch.models.runtime import ModelLoadError, resolve_runtime
from capsearch.params import ClipParams, ReportParams, RuntimeParams
from capsearch.report import caption_samples, query_gallery, worst_queries
from capsearch.retrieval import index_of
from capsearch.search import load_pipeline_index

OUT = Path("metrics/report")


def main() -> None:
    timer = Timer()
    p, clip, knobs = read_params("report", ReportParams, ClipParams, RuntimeParams)
    try:
        rt = resolve_runtime(knobs, use_cache=False)
        index = load_pipeline_index(".")
        embedder = ClipEmbedder(clip.model, clip.revision, clip.precision, rt.device)
        vectors = embedder.embed_texts(list(p.queries)).vectors
        references: dict[str, list[str]] = {}
        caption_rows = read_csv("data/subset/captions.csv", ["image_id", "caption_index", "caption"])
        for row in caption_rows:
            references.setdefault(row["image_id"], []).append(row["caption"])
        save_png(query_gallery(index, list(p.queries), vectors, p.k, p.method), OUT / "search.png")
        save_png(caption_samples(index, references, p.samples, p.seed), OUT / "captions.png")
        targets = index_of(index.ids, [row["image_id"] for row in caption_rows])
        failures = worst_queries(
            index,
            [row["caption"] for row in caption_rows],
            load_npy("data/embeddings/captions.npy"),
            targets,
            p.failures,
        )
        save_png(failures, OUT / "failures.png")
    except (ValueError, FileNotFoundError, ModelLoadError) as exc:
        fail("report", exc)
    summary(
        "report",
        f"{len(p.queries)} queries x top {p.k}, {p.samples} caption samples and the {p.failures} worst "
        f"queries rendered to {OUT}/search.png, captions.png, failures.png in {timer.seconds:.1f}s",
    )


if __name__ == "__main__":
    main()
