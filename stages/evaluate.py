"""Stage evaluate: Recall@K, median and mean rank in both directions, written as DVC metrics and a plot."""

from pathlib import Path

from _common import Timer, fail, read_params, summary

from capsearch.evaluation import caption_quality, evaluate_run
from capsearch.io import write_csv, write_json
from capsearch.params import EvaluateParams


def main() -> None:
    timer = Timer()
    p: EvaluateParams = read_params("evaluate", EvaluateParams)
    try:
        report, curve = evaluate_run(Path("data"), p.ks)
        quality, per_image = caption_quality(Path("data"))
    except (ValueError, KeyError) as exc:
        fail("evaluate", exc)
    write_json("metrics/retrieval.json", report)
    write_json("metrics/recall_curve.json", curve)
    write_json("metrics/caption_quality.json", quality)
    write_csv(
        "metrics/caption_scores.csv", ["image_id", "caption", "BLEU-4", "CIDEr-D", "CLIP-S", "RefCLIP-S"], per_image
    )
    t2i, i2t = report["text_to_image"], report["image_to_text"]
    k = p.ks
    summary(
        "evaluate",
        f"{report['gallery_images']} images, {report['query_captions']} captions: text→image R@{k[0]} "
        f"{t2i[f'R@{k[0]}']:.1f} R@{k[-1]} {t2i[f'R@{k[-1]}']:.1f}, image→text R@{k[0]} {i2t[f'R@{k[0]}']:.1f} "
        f"R@{k[-1]} {i2t[f'R@{k[-1]}']:.1f}; captions BLEU-4 {quality['BLEU-4']:.1f} CIDEr-D {quality['CIDEr-D']:.1f} "
        f"CLIP-S {quality['CLIP-S']:.3f} in {timer.seconds:.1f}s -> metrics/retrieval.json, caption_quality.json",
    )


if __name__ == "__main__":
    main()
