"""Stage tune_fusion: choose the fusion weight alpha on a tuning split (dev), never on the reported split.

It runs the same library code as the main stages on its own seeded sample of the tuning split: BLIP captions,
CLIP embeddings of the images, the generated captions and the reference captions, then a grid of alphas.
"""

from pathlib import Path

from _common import Timer, fail, load_params, section, summary
from _runtime import runtime

from capsearch.data.flickr8k import IMAGE_ZIP_NAME
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.data.subset import build_subset, find_text_dir
from capsearch.fusion import choose_alpha
from capsearch.io import write_json
from capsearch.models.blip import BlipCaptioner, DecodingSettings
from capsearch.models.clip import ClipEmbedder
from capsearch.models.runtime import ModelLoadError
from capsearch.retrieval import index_of

OUT = Path("data/fusion/alpha.json")


def main() -> None:
    timer = Timer()
    params = load_params()
    p = section(params, "fusion", ("split", "num_images", "seed", "alphas"))
    reported = section(params, "subset", ("split",))["split"]
    c = section(params, "caption", ("model", "revision", "num_beams", "max_new_tokens", "min_new_tokens", "precision"))
    clip = section(params, "clip", ("model", "revision", "precision"))
    try:
        rt = runtime(params)
        if p["split"] in (reported, "all") or reported == "all":
            raise ValueError(
                f"fusion.split: alpha must be chosen on another split than the reported one "
                f"(subset.split is {reported!r}, fusion.split is {p['split']!r})"
            )
        source = ImageSource(Path("data/raw") / IMAGE_ZIP_NAME)
        tune = build_subset(find_text_dir("data/text"), source, p["split"], p["num_images"], int(p["seed"]))
        image_ids = [image_id for image_id, _, _ in tune.images]
        settings = DecodingSettings(int(c["num_beams"]), int(c["max_new_tokens"]), int(c["min_new_tokens"]))
        settings.validate()
        captioner = BlipCaptioner(c["model"], c["revision"], c["precision"], rt.device)
        generated = captioner.caption_images(
            source, image_ids, settings, rt.batch_sizes["caption"], rt.num_workers, rt.cache
        )
        embedder = ClipEmbedder(clip["model"], clip["revision"], clip["precision"], rt.device)
        images = embedder.embed_images(source, image_ids, rt.batch_sizes["embed_images"], rt.num_workers, rt.cache)
        captions = embedder.embed_texts(generated, rt.batch_sizes["embed_texts"]).vectors
        queries = embedder.embed_texts([text for _, _, text in tune.captions], rt.batch_sizes["embed_texts"]).vectors
        targets = index_of(image_ids, [image_id for image_id, _, _ in tune.captions])
        alpha, grid = choose_alpha(queries, images, captions, targets, [float(a) for a in p["alphas"]])
    except (ValueError, OSError, ModelLoadError, ImageReadError) as exc:
        fail("tune_fusion", exc)
    write_json(OUT, {"alpha": alpha, "split": p["split"], "images": len(image_ids), "grid": grid})
    best = next(row for row in grid if row["alpha"] == alpha)
    summary(
        "tune_fusion",
        f"alpha={alpha} chosen on {len(image_ids)} {p['split']} images (mean R@1/5/10 {best['mean_recall']:.1f}; "
        f"image only {grid[-1]['mean_recall'] if grid[-1]['alpha'] == 1.0 else 'n/a'}) in {timer.seconds:.1f}s",
    )


if __name__ == "__main__":
    main()
