"""Stage tune_fusion: choose the fusion weight alpha on a tuning split (dev), never on the reported split.

It runs the same library code as the main stages on its own seeded sample of the tuning split: BLIP captions,
CLIP embeddings of the images, the generated captions and the reference captions, then a grid of alphas.
"""

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout
from capsearch.data.subset import build_subset, check_workers, open_source
from capsearch.errors import EXPECTED
from capsearch.evaluation.ranks import index_of
from capsearch.finetune.handover import captioner_of, dual_encoder_of
from capsearch.fusion import choose_alpha
from capsearch.io import write_json
from capsearch.params import CaptionParams, ClipParams, FusionParams, ParamError, RuntimeParams, SourceParams

RUN = RunLayout()


def main() -> None:
    timer = Timer()
    p, reported_split, source_params, c, clip, knobs = read_params(
        "tune_fusion", FusionParams, "subset.split", SourceParams, CaptionParams, ClipParams, RuntimeParams
    )
    try:  # the fine-tuned models where finetune_clip / finetune_captioner trained them, else clip.* / caption.*
        clip = dual_encoder_of(RUN.clip_model, clip)
        c = captioner_of(RUN.captioner_model, c)
    except EXPECTED as exc:
        fail("tune_fusion", exc)
    try:
        p.check_against(reported_split)
    except ParamError as exc:
        fail("tune_fusion", exc)
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from capsearch.models.captioner import Captioner, DecodingSettings
    from capsearch.models.registry import load_dual_encoder
    from capsearch.models.runtime import resolve_runtime
    from capsearch.pipeline import caption_and_embed

    try:
        rt = resolve_runtime(knobs)
        source, text_dir = open_source(source_params.kind, RUN.root / source_params.images, RUN.text_dir)
        workers = check_workers(knobs.num_workers)
        tune = build_subset(
            text_dir, source, p.split, p.num_images, p.seed, section="fusion", workers=workers,
            kind=source_params.kind, columns=source_params.columns,
        )  # fmt: skip
        image_ids = [image_id for image_id, *_ in tune.images]
        captioner = Captioner(c.model, c.revision, c.precision, rt.device)
        embedder = load_dual_encoder(clip.model, clip.revision, clip.precision, rt.device)
        settings = DecodingSettings.of(c)
        run = caption_and_embed(source, image_ids, captioner, embedder, settings, rt)
        queries = embedder.embed_texts([text for _, _, text in tune.references], rt.batch_sizes["embed_texts"]).vectors
        targets = index_of(image_ids, [image_id for image_id, _, _ in tune.references])
        alpha, grid = choose_alpha(queries, run.image_vectors, run.generated_vectors, targets, list(p.alphas))
    except EXPECTED as exc:
        fail("tune_fusion", exc)
    write_json(RUN.alpha, {"alpha": alpha, "split": p.split, "images": len(image_ids), "grid": grid})
    best = next(row for row in grid if row["alpha"] == alpha)
    image_only = next((f"{row['mean_recall']:.1f}" for row in grid if row["alpha"] == 1.0), "n/a")
    summary(
        "tune_fusion",
        f"alpha={alpha} chosen on {len(image_ids)} {p.split} images (mean R@1/5/10 {best['mean_recall']:.1f}; "
        f"image only {image_only}) in {timer.seconds:.1f}s",
    )


if __name__ == "__main__":
    main()
