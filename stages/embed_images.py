"""Stage embed_images: L2-normalised CLIP image embeddings, one .npy plus the id order."""

from pathlib import Path

from _common import Timer, fail, load_params, runtime, section, summary

from capsearch.data.flickr8k import IMAGE_ZIP_NAME
from capsearch.data.images import ImageReadError, ImageSource
from capsearch.io import read_csv, save_npy, write_text
from capsearch.models.clip import ClipEmbedder
from capsearch.models.runtime import ModelLoadError, precision_name

OUT = Path("data/embeddings")


def main() -> None:
    params = load_params()
    p = section(params, "clip", ("model", "revision", "precision"))
    device, batch_size, workers = runtime(params, "embed_images")
    image_ids = [row["image_id"] for row in read_csv("data/subset/images.csv", ["image_id", "width", "height"])]
    try:
        embedder = ClipEmbedder(p["model"], p["revision"], p["precision"], device)
        timer = Timer()
        vectors = embedder.embed_images(ImageSource(Path("data/raw") / IMAGE_ZIP_NAME), image_ids, batch_size, workers)
    except (ValueError, ModelLoadError, ImageReadError) as exc:
        fail("embed_images", exc)
    save_npy(OUT / "images.npy", vectors)
    write_text(OUT / "images.ids.txt", "".join(f"{image_id}\n" for image_id in image_ids))
    summary(
        "embed_images",
        f"{len(image_ids)} images embedded by {p['model']} into {vectors.shape[1]} dims "
        f"({precision_name(embedder.dtype)} on {embedder.device.type}, batch {batch_size}) in {timer.seconds:.1f}s "
        f"({len(image_ids) / max(timer.seconds, 1e-9):.1f} images/s)",
    )


if __name__ == "__main__":
    main()
