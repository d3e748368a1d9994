"""Stage embed_images: L2-normalised CLIP image embeddings, one .npy plus the id order."""

from pathlib import Path

from _common import Timer, fail, read_params, summary

from capsearch.data.flickr8k import IMAGE_ZIP_NAME
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.io import read_csv, save_npy, write_text
from capsearch.models.clip import ClipEmbedder
from capsearch.models.runtime import ModelLoadError, precision_name, resolve_runtime
from capsearch.params import ClipParams, RuntimeParams

OUT = Path("data/embeddings")


def main() -> None:
    p, knobs = read_params("embed_images", ClipParams, RuntimeParams)
    image_ids = [row["image_id"] for row in read_csv("data/subset/images.csv", ["image_id", "width", "height"])]
    try:
        rt = resolve_runtime(knobs)
        embedder = ClipEmbedder(p.model, p.revision, p.precision, rt.device)
        timer = Timer()
        source = ImageSource(Path("data/raw") / IMAGE_ZIP_NAME)
        vectors = embedder.embed_images(source, image_ids, rt.batch_sizes["embed_images"], rt.num_workers, rt.cache)
    except (ValueError, OSError, ModelLoadError, ImageReadError) as exc:
        fail("embed_images", exc)
    save_npy(OUT / "images.npy", vectors)
    write_text(OUT / "images.ids.txt", "".join(f"{image_id}\n" for image_id in image_ids))
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
