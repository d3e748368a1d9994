"""Stage report: a gallery of the top images for example queries and a sample of generated vs human captions."""

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout, load_vectors, read_references
from capsearch.contact_sheet import save_png
from capsearch.errors import EXPECTED
from capsearch.evaluation.ranks import index_of
from capsearch.finetune.handover import dual_encoder_of
from capsearch.params import ClipParams, ReportParams, RuntimeParams
from capsearch.report import caption_samples, query_gallery, worst_queries

RUN = RunLayout()
OUT = RUN.metrics / "report"


def main() -> None:
    timer = Timer()
    p, clip, knobs = read_params("report", ReportParams, ClipParams, RuntimeParams)
    try:  # the fine-tuned model where finetune_clip trained one, else clip.* as it is
        clip = dual_encoder_of(RUN.clip_model, clip)
    except EXPECTED as exc:
        fail("report", exc)
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from capsearch.index import load_pipeline_index
    from capsearch.models.registry import load_dual_encoder
    from capsearch.models.runtime import resolve_runtime

    try:
        rt = resolve_runtime(knobs, use_cache=False)
        index = load_pipeline_index(RUN.root)
        embedder = load_dual_encoder(clip.model, clip.revision, clip.precision, rt.device)
        vectors = embedder.embed_texts(list(p.queries)).vectors
        references = read_references(RUN.references)
        save_png(query_gallery(index, list(p.queries), vectors, p.k, p.method), OUT / "search.png")
        save_png(caption_samples(index, references.by_image(), p.samples, p.seed), OUT / "captions.png")
        targets = index_of(index.ids, references.image_ids)
        reference_vectors = load_vectors(RUN.reference_vectors, len(references.texts), "embed_texts")
        failures = worst_queries(index, references.texts, reference_vectors, targets, p.failures)
        save_png(failures, OUT / "failures.png")
    except EXPECTED as exc:
        fail("report", exc)
    summary(
        "report",
        f"{len(p.queries)} queries x top {p.k}, {p.samples} caption samples and the {p.failures} worst "
        f"queries rendered to {OUT}/search.png, captions.png, failures.png in {timer.seconds:.1f}s",
    )


if __name__ == "__main__":
    main()
