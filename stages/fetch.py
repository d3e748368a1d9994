"""Stage fetch: download (or verify user-placed) the source's files (Flickr8k zips; Flickr30k or COCO images and
Karpathy's split file; a Hugging Face dataset's images and captions), check them, extract the annotations."""

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout
from capsearch.data.fetch import check_archive, download, safe_extract
from capsearch.data.flickr8k import IMAGE_ZIP_NAME, TEXT_ZIP_NAME
from capsearch.data.hf_dataset import FOLDER as HF_FOLDER
from capsearch.data.hf_dataset import HfDatasetError, fetch_hf_dataset
from capsearch.data.kaggle import pack_kaggle_folder
from capsearch.data.karpathy import KARPATHY_FILES, fetch_karpathy
from capsearch.errors import EXPECTED
from capsearch.io import write_text
from capsearch.params import LOCAL_SOURCES, FetchParams, SourceParams

RUN = RunLayout()


def main() -> None:
    timer = Timer()
    p, source = read_params("fetch", FetchParams, SourceParams)
    if source.kind in KARPATHY_FILES:
        try:
            got = fetch_karpathy(
                source.kind,
                p.karpathy_url,
                p.karpathy_md5,
                p.flickr30k_images_url if source.kind == "flickr30k" else p.coco_images_url,
                p.flickr30k_images_md5 if source.kind == "flickr30k" else p.coco_images_md5,
                RUN.image_zip.parent,
                RUN.text_dir,
            )
        except EXPECTED as exc:
            fail("fetch", exc)
        summary(
            "fetch",
            f"{source.kind}: {'; '.join(got.actions)}; {got.annotations.name} extracted to {RUN.text_dir}; "
            f"{got.image_count} images at {got.images} in {timer.seconds:.1f}s",
        )
        return
    if source.kind == "hf_dataset":
        fetch_dataset(source, timer)
        return
    if source.kind in LOCAL_SOURCES:  # nothing to download: the subset stage reads the shards or folder where they are
        note = f"source.kind is {source.kind}: images and captions are read from {source.images}, nothing fetched\n"
        for folder in (RUN.image_zip.parent, RUN.text_dir):
            write_text(folder / "SOURCE.txt", note)
        summary("fetch", f"nothing to fetch for the {source.kind} source ({source.images}) in {timer.seconds:.1f}s")
        return
    (RUN.image_zip.parent / "SOURCE.txt").unlink(missing_ok=True)  # left by a shard or folder run (data/raw persists)
    try:
        if p.kaggle_dir:
            packed = pack_kaggle_folder(p.kaggle_dir, RUN.image_zip.parent)
            image_members = check_archive(RUN.image_zip)
            text_files = safe_extract(RUN.text_zip, RUN.text_dir)
            summary(
                "fetch",
                f"Kaggle layout {p.kaggle_dir}: {packed.images} images packed into {RUN.image_zip} "
                f"({len(image_members)} members checked), {packed.captioned_images} captioned images, "
                f"{len(text_files)} text files ({', '.join(packed.text_files)}) in {timer.seconds:.1f}s",
            )
            return
        images = download(p.images_url, RUN.image_zip, p.images_md5)
        text = download(p.text_url, RUN.text_zip, p.text_md5)
        image_members = check_archive(images.path)
        text_files = safe_extract(text.path, RUN.text_dir)
    except EXPECTED as exc:
        fail("fetch", exc)
    summary(
        "fetch",
        f"{IMAGE_ZIP_NAME} {images.action} ({images.bytes / 1e6:.1f} MB, {len(image_members)} members checked), "
        f"{TEXT_ZIP_NAME} {text.action}, {len(text_files)} text files extracted to {RUN.text_dir} "
        f"in {timer.seconds:.1f}s",
    )


def fetch_dataset(source: SourceParams, timer: Timer) -> None:
    """A Hugging Face dataset's images and captions, saved to data/raw/hf_dataset."""
    out = RUN.image_zip.parent / HF_FOLDER
    try:
        got = fetch_hf_dataset(
            source.dataset or "",
            source.revision,
            source.config,
            source.image_column,
            source.caption_column,
            source.splits,
            out,
        )
    except HfDatasetError as exc:
        fail("fetch", exc)
    (RUN.image_zip.parent / "SOURCE.txt").unlink(missing_ok=True)
    write_text(RUN.text_dir / "SOURCE.txt", f"source.kind is hf_dataset: captions are in {out} with the images\n")
    rows = ", ".join(f"{split} {count}" for split, count in got.rows.items())
    where = f"{source.dataset}@{got.commit}" if got.commit else str(source.dataset)
    summary("fetch", f"{where}: {rows} images with their captions saved to {out} in {timer.seconds:.1f}s")


if __name__ == "__main__":
    main()
