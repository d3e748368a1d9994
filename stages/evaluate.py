"""Stage evaluate: Recall@K, median and mean rank in both directions, caption quality, as DVC metrics and plots."""

import json

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout, load_vectors, read_generated, read_image_embeddings, read_references
from capsearch.cache import ResultCache
from capsearch.errors import EXPECTED
from capsearch.evaluation.run import CAPTION_SCORES_HEADER, EvaluationInputs, caption_quality, retrieval_metrics
from capsearch.io import write_csv, write_json
from capsearch.params import EvaluateParams, RuntimeParams

RUN = RunLayout()


def read_inputs() -> EvaluationInputs:
    """The run's tables and arrays, as the upstream stages wrote them."""
    generated_ids, generated = read_generated(RUN.generated)
    tuned = json.loads(RUN.alpha.read_text(encoding="utf-8"))
    image_ids, image_vectors = read_image_embeddings(RUN.image_vectors)
    return EvaluationInputs(
        image_ids=image_ids,
        references=read_references(RUN.references),
        generated_ids=generated_ids,
        generated=generated,
        image_vectors=image_vectors,
        reference_vectors=load_vectors(RUN.reference_vectors),
        generated_vectors=load_vectors(RUN.generated_vectors),
        reference_clipscore_vectors=load_vectors(RUN.reference_clipscore_vectors),
        generated_clipscore_vectors=load_vectors(RUN.generated_clipscore_vectors),
        alpha=float(tuned["alpha"]),
        alpha_images=int(tuned["images"]),
    )


def main() -> None:
    timer = Timer()
    p, knobs = read_params("evaluate", EvaluateParams, RuntimeParams)
    try:
        inputs = read_inputs()
        report, curve = retrieval_metrics(inputs, p.ks)
        cache = ResultCache(knobs.cache_dir) if knobs.cache else None  # METEOR's jar: seconds to start
        quality, per_image = caption_quality(inputs, cache)
    except EXPECTED as exc:
        fail("evaluate", exc)
    write_json(RUN.metrics / "retrieval.json", report)
    write_json(RUN.metrics / "recall_curve.json", curve)
    write_json(RUN.metrics / "caption_quality.json", quality)
    write_csv(RUN.metrics / "caption_scores.csv", CAPTION_SCORES_HEADER, per_image)
    t2i, i2t = report["text_to_image"], report["image_to_text"]
    k = p.ks
    summary(
        "evaluate",
        f"{report['gallery_images']} images, {report['query_captions']} captions: text→image R@{k[0]} "
        f"{t2i[f'R@{k[0]}']:.1f} R@{k[-1]} {t2i[f'R@{k[-1]}']:.1f}, image→text R@{k[0]} {i2t[f'R@{k[0]}']:.1f} "
        f"R@{k[-1]} {i2t[f'R@{k[-1]}']:.1f}; captions BLEU-4 {quality['BLEU-4']:.1f} METEOR {quality['METEOR']:.1f} "
        f"ROUGE-L {quality['ROUGE-L']:.1f} CIDEr-D {quality['CIDEr-D']:.1f} "
        f"CLIP-S {quality['CLIP-S']:.3f} in {timer.seconds:.1f}s -> metrics/retrieval.json, caption_quality.json",
    )


if __name__ == "__main__":
    main()
