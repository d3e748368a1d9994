"""Stage caption: BLIP captions for every subset image, one table image_id -> caption."""

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout, read_image_table_ids, write_generated
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.params import CaptionParams, RuntimeParams

RUN = RunLayout()


def main() -> None:
    p, knobs = read_params("caption", CaptionParams, RuntimeParams)
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from capsearch.models.blip import BlipCaptioner, DecodingSettings
    from capsearch.models.runtime import ModelLoadError, precision_name, resolve_runtime

    image_ids = read_image_table_ids(RUN.subset_images)
    try:
        rt = resolve_runtime(knobs)
        settings = DecodingSettings(p.num_beams, p.max_new_tokens, p.min_new_tokens)
        captioner = BlipCaptioner(p.model, p.revision, p.precision, rt.device)
        timer = Timer()
        source = ImageSource(RUN.image_zip)
        captions = captioner.caption_images(
            source, image_ids, settings, rt.batch_sizes["caption"], rt.num_workers, rt.cache
        )
    except (ValueError, OSError, ModelLoadError, ImageReadError) as exc:
        fail("caption", exc)
    write_generated(RUN.generated, image_ids, captions)
    run = captioner.last_run
    summary(
        "caption",
        f"{len(captions)} images captioned by {captioner.source} ({precision_name(captioner.dtype)} on "
        f"{captioner.device.type}, {settings.num_beams} beams, {rt.num_workers} decode workers; {run.describe()}; "
        f"{rt.cache_note()}) in {timer.seconds:.1f}s ({run.computed / max(timer.seconds, 1e-9):.2f} images/s computed)",
    )


if __name__ == "__main__":
    main()
