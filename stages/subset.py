"""Stage subset: choose the split's images deterministically, keep only decodable ones, write tables."""

from pathlib import Path

from _common import Timer, fail, read_params, summary

from capsearch.data.flickr8k import IMAGE_ZIP_NAME
from capsearch.data.images import ImageSource
from capsearch.data.subset import build_subset, find_text_dir
from capsearch.io import write_csv
from capsearch.params import SubsetParams

OUT = Path("data/subset")


def main() -> None:
    timer = Timer()
    p: SubsetParams = read_params("subset", SubsetParams)
    try:
        result = build_subset(
            find_text_dir("data/text"), ImageSource(Path("data/raw") / IMAGE_ZIP_NAME), p.split, p.num_images, p.seed
        )
    except (ValueError, FileNotFoundError) as exc:
        fail("subset", exc)
    write_csv(OUT / "images.csv", ["image_id", "width", "height"], result.images)
    write_csv(OUT / "captions.csv", ["image_id", "caption_index", "caption"], result.captions)
    write_csv(OUT / "excluded.csv", ["image_id", "reason"], result.excluded)
    summary(
        "subset",
        f"split={p.split} num_images={p.num_images} seed={p.seed}: {len(result.images)} images, "
        f"{len(result.captions)} captions, {len(result.excluded)} excluded (see {OUT / 'excluded.csv'}), "
        f"{result.stray_keys_folded} stray caption key folded, {result.in_no_split} captioned images in no split, "
        f"in {timer.seconds:.1f}s",
    )


if __name__ == "__main__":
    main()
