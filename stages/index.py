"""Stage index: faiss indexes over the image and generated-caption embeddings, and what they cost against exact
search for the run's text queries (the reference captions) -> metrics/index.json."""

from _common import Timer, fail, read_params, summary

from capsearch.ann import build_index, save_index
from capsearch.artifacts import RunLayout, load_vectors, read_image_embeddings, read_references
from capsearch.errors import EXPECTED
from capsearch.evaluation.index_quality import index_quality
from capsearch.evaluation.ranks import index_of
from capsearch.io import write_json
from capsearch.params import IndexParams

RUN = RunLayout()


def main() -> None:
    timer = Timer()
    p, ks = read_params("index", IndexParams, "evaluate.ks")
    try:
        image_ids, image_vectors = read_image_embeddings(RUN.image_vectors)
        references = read_references(RUN.references)
        galleries = {
            "image": image_vectors,
            "caption": load_vectors(RUN.generated_vectors, len(image_ids), "embed_texts"),
        }
        queries = load_vectors(RUN.reference_vectors, len(references.texts), "embed_texts")
        targets = index_of(image_ids, references.image_ids)
        built = {method: build_index(vectors, p) for method, vectors in galleries.items()}
        report: dict[str, object] = {"kind": built["image"].kind, "requested": p.kind, "vectors": len(image_ids)}
        for (method, ann), path in zip(built.items(), (RUN.ann_images, RUN.ann_generated), strict=True):
            report[method] = {
                "factory": ann.description,
                "build_seconds": round(ann.build_seconds, 4),
                "bytes_per_vector": round(save_index(ann, path), 1),
                **index_quality(queries, galleries[method], targets, ann.candidates, p.candidates, ks),
            }
    except EXPECTED as exc:
        fail("index", exc)
    write_json(RUN.metrics / "index.json", report)
    image = report["image"]
    summary(
        "index",
        f"{built['image'].description} over {len(image_ids)} images (+ generated captions), "
        f"{image['bytes_per_vector']:.0f} bytes/vector; {len(queries)} text queries: recall@10 vs exact "
        f"{image['recall_at_10']:.3f} ({image['reranked_recall_at_10']:.3f} re-ranked) in {timer.seconds:.1f}s "
        "-> data/index/, metrics/index.json",
    )


if __name__ == "__main__":
    main()
