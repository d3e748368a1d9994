"""Stage caption: BLIP captions for every subset image, one table image_id -> caption."""

from pathlib import Path

from _common import Timer, fail, read_params, summary

from capsearch.data.flickr8k import IMAGE_ZIP_NAME
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.io import read_csv, write_csv
from capsearch.models.blip import BlipCaptioner, DecodingSettings
from capsearch.models.runtime import ModelLoadError, precision_name, resolve_runtime
from capsearch.params import CaptionParams, RuntimeParams

OUT = Path("data/captions/generated.csv")


def main() -> None:
    p, knobs = read_params("caption", CaptionParams, RuntimeParams)
    image_ids = [row["image_id"] for row in read_csv("data/subset/images.csv", ["image_id", "width", "height"])]
    try:
        rt = resolve_runtime(knobs)
        settings = DecodingSettings(p.num_beams, p.max_new_tokens, p.min_new_tokens)
        captioner = BlipCaptioner(p.model, p.revision, p.precision, rt.device)
        timer = Timer()
        source = ImageSource(Path("data/raw") / IMAGE_ZIP_NAME)
        captions = captioner.caption_images(
            source, image_ids, settings, rt.batch_sizes["caption"], rt.num_workers, rt.cache
        )
    except (ValueError, OSError, ModelLoadError, ImageReadError) as exc:
        fail("caption", exc)
    write_csv(OUT, ["image_id", "caption"], list(zip(image_ids, captions, strict=True)))
    run = captioner.last_run
    summary(
        "caption",
        f"{len(captions)} images captioned by {captioner.source} ({precision_name(captioner.dtype)} on "
        f"{captioner.device.type}, {settings.num_beams} beams, {rt.num_workers} decode workers; {run.describe()}; "
        f"{rt.cache_note()}) in {timer.seconds:.1f}s ({run.computed / max(timer.seconds, 1e-9):.2f} images/s computed)",
    )


if __name__ == "__main__":
    main()
