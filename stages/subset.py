"""Stage subset: choose the split's images deterministically, keep only decodable ones, write tables."""

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout, write_excluded, write_image_table, write_references
from capsearch.data.images import ImageSource
from capsearch.data.subset import build_subset, find_text_dir
from capsearch.data.webdataset import ShardError
from capsearch.params import SourceParams, SubsetParams

RUN = RunLayout()


def main() -> None:
    timer = Timer()
    source, p = read_params("subset", SourceParams, SubsetParams)
    try:
        if source.kind == "flickr8k":
            result = build_subset(
                find_text_dir(RUN.text_dir), ImageSource(RUN.image_zip), p.split, p.num_images, p.seed
            )
        else:
            result = build_subset(None, ImageSource(RUN.root / source.images), p.split, p.num_images, p.seed)
    except (ValueError, FileNotFoundError, ShardError) as exc:
        fail("subset", exc)
    write_image_table(RUN.subset_images, result.images)
    write_references(RUN.references, result.references)
    write_excluded(RUN.excluded, result.excluded)
    shards = len({row[3] for row in result.images})
    summary(
        "subset",
        f"{source.kind} split={p.split} num_images={p.num_images} seed={p.seed}: {len(result.images)} images, "
        f"{len(result.references)} captions, {len(result.excluded)} excluded (see {RUN.excluded}), "
        f"{result.stray_keys_folded} stray caption key folded, {result.in_no_split} captioned images in no split; "
        f"read from {shards} file(s) in {timer.seconds:.1f}s",
    )


if __name__ == "__main__":
    main()
