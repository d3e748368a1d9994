"""Stage subset: choose the split's images deterministically, keep only decodable ones, write tables."""

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout, write_excluded, write_image_table, write_references
from capsearch.data.subset import build_subset, check_workers, open_source
from capsearch.data.webdataset import describe_unread, unread_files
from capsearch.errors import EXPECTED
from capsearch.io import atomic_paths
from capsearch.params import RuntimeParams, SourceParams, SubsetParams

RUN = RunLayout()


def main() -> None:
    timer = Timer()
    source, p, knobs = read_params("subset", SourceParams, SubsetParams, RuntimeParams)
    workers = check_workers(knobs.num_workers)
    try:
        images, text_dir = open_source(source.kind, RUN.root / source.images, RUN.text_dir)
        result = build_subset(
            text_dir, images, p.split, p.num_images, p.seed, workers=workers, kind=source.kind, columns=source.columns
        )
    except EXPECTED as exc:
        fail("subset", exc)
    with atomic_paths(RUN.subset_images, RUN.references, RUN.excluded) as (images_csv, references_csv, excluded_csv):
        write_image_table(images_csv, result.images)  # the three tables are replaced together or not at all
        write_references(references_csv, result.references)
        write_excluded(excluded_csv, result.excluded)
    shards = len({row[3] for row in result.images})
    unread = describe_unread(unread_files(RUN.root / source.images)) if source.kind == "webdataset" else ""
    summary(
        "subset",
        f"{source.kind} split={p.split} num_images={p.num_images} seed={p.seed}: {len(result.images)} images, "
        f"{len(result.references)} captions, {len(result.excluded)} excluded (see {RUN.excluded}), "
        f"{result.stray_keys_folded} stray caption key folded, {result.in_no_split} captioned images in no split; "
        f"read from {shards} file(s), checked in {workers} process(es) in {timer.seconds:.1f}s"
        + (f"; {unread}" if unread else ""),
    )


if __name__ == "__main__":
    main()
