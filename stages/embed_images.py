"""Stage embed_images: L2-normalised CLIP image embeddings, one .npy plus the id order."""

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout, read_image_table_ids, save_vectors, write_ids
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.params import ClipParams, RuntimeParams

RUN = RunLayout()


def main() -> None:
    p, knobs = read_params("embed_images", ClipParams, RuntimeParams)
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from capsearch.models.clip import ClipEmbedder
    from capsearch.models.runtime import ModelLoadError, precision_name, resolve_runtime

    image_ids = read_image_table_ids(RUN.subset_images)
    try:
        rt = resolve_runtime(knobs)
        embedder = ClipEmbedder(p.model, p.revision, p.precision, rt.device)
        timer = Timer()
        source = ImageSource(RUN.image_zip)
        vectors = embedder.embed_images(source, image_ids, rt.batch_sizes["embed_images"], rt.num_workers, rt.cache)
    except (ValueError, OSError, ModelLoadError, ImageReadError) as exc:
        fail("embed_images", exc)
    save_vectors(RUN.image_vectors, vectors)
    write_ids(RUN.image_ids, image_ids)
    run = embedder.last_run
    summary(
        "embed_images",
        f"{len(image_ids)} images embedded by {embedder.source} into {vectors.shape[1]} dims "
        f"({precision_name(embedder.dtype)} on {embedder.device.type}, {rt.num_workers} decode workers; "
        f"{run.describe()}; {rt.cache_note()}) in {timer.seconds:.1f}s "
        f"({run.computed / max(timer.seconds, 1e-9):.1f} images/s computed)",
    )


if __name__ == "__main__":
    main()
