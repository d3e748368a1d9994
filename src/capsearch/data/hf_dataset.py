"""A Hugging Face dataset as a caption source (``source.kind: hf_dataset``), loaded with the ``datasets`` library.

``source.dataset`` is a hub id (``org/name``, at ``source.revision``: pin a commit, as for the models) or a local
folder (a repo's files, e.g. ``data/*.parquet`` with its README's configs, or a ``save_to_disk`` folder);
``source.config`` picks a configuration. Fetch keeps two columns of the splits ``source.splits`` names, the image
column (a ``datasets.Image``) and the caption column (a text or a list of texts), under capsearch's split names, and
writes them with ``save_to_disk`` to ``data/raw/hf_dataset``: images stay the encoded bytes of the dataset's Arrow
files (image files a local dataset names by path are read in, never re-encoded). ``source.splits`` maps capsearch's
``test``/``dev``/``train`` to the dataset's split names, or names one split that is divided by the stable hash
the webdataset source uses (80/10/10). Image ids are ``<split>/<row>.<format>`` (``test/000017.png``).

A bad row is one error naming the dataset, split and row (an empty caption, a caption that is not text, a row without
image bytes); a missing column or split names the param and what the dataset has. Two of capsearch's splits mapped to
one split of the dataset (train = test), a split left with no rows, a damaged saved folder (an invalid
``dataset_dict.json``, a truncated ``.arrow`` file), a local folder that is not there, and ``source.revision`` or
``source.config`` where they cannot apply are each one line naming the param or the folder.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capsearch.data.flickr8k import IMAGE_SUFFIXES
from capsearch.data.imagefolder import caption_texts
from capsearch.data.webdataset import split_of
from capsearch.errors import CapsearchError
from capsearch.hub import offline_when_unreachable
from capsearch.io import atomic_folder, write_json

FOLDER = "hf_dataset"  # under fetch's data/raw
IMAGE, CAPTIONS, IMAGE_ID = "image", "captions", "image_id"  # the saved columns
DICT_FILE = "dataset_dict.json"  # what save_to_disk writes for a DatasetDict, as fetch saves one
SOURCE_FILE = "SOURCE.json"  # what was loaded: dataset, revision, commit, config, columns, splits
OUR_SPLITS = ("test", "dev", "train")
MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG", ".png"), (b"RIFF", ".webp"), (b"GIF8", ".gif"), (b"BM", ".bmp"))


class HfDatasetError(CapsearchError, ValueError):
    """A dataset that cannot be used as a caption source; the message names the param, split or row."""


@dataclass
class HfFetchResult:
    """What fetch wrote: the folder, the commit loaded (None for a local folder) and the rows of each split."""

    path: Path
    commit: str | None
    rows: dict[str, int]


def datasets_library() -> Any:
    """The ``datasets`` module (its progress bars following capsearch's), or one line saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise HfDatasetError("source.kind hf_dataset needs the datasets library: pip install 'capsearch[hf]'") from None
    from capsearch.progress import shown

    if not shown():
        datasets.disable_progress_bars()
    return datasets


def is_saved_folder(folder: Path) -> bool:
    """Whether ``folder`` was written by ``save_to_disk`` (a DatasetDict or one Dataset)."""
    return (folder / DICT_FILE).is_file() or (folder / "state.json").is_file()


def _snapshot(dataset: str, revision: str | None) -> tuple[Path, str]:
    """The files of a hub dataset at ``revision`` (downloaded into the Hugging Face cache, checked by it) and the
    commit they are from."""
    if not revision:
        raise HfDatasetError(
            f"source.revision: pin the commit of {dataset!r} (or a branch or tag; a commit keeps the data the same "
            "when the repo changes)"
        )
    offline_when_unreachable()
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars

    from capsearch.progress import shown

    if not shown():
        disable_progress_bars()
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RevisionNotFoundError

    try:
        folder = Path(snapshot_download(dataset, repo_type="dataset", revision=revision))
    except RevisionNotFoundError:
        raise HfDatasetError(f"source.revision: {dataset!r} has no branch, tag or commit {revision!r}") from None
    except LocalEntryNotFoundError:
        raise HfDatasetError(
            f"source.dataset: {dataset!r} at {revision!r} is not in the Hugging Face cache and the Hub cannot be "
            "reached (or HF_HUB_OFFLINE=1): run fetch once with network access, or give a local folder"
        ) from None
    except (OSError, HFValidationError) as exc:
        lines = str(exc).strip().splitlines()
        raise HfDatasetError(
            f"source.dataset: could not download {dataset!r} at {revision!r}: {lines[0] if lines else exc!r}"
        ) from None
    return folder, folder.name  # .../snapshots/<commit>


def load_saved(folder: str | Path, param: str) -> Any:
    """``load_from_disk`` of a saved folder; a damaged one (an invalid ``dataset_dict.json`` or ``state.json``, a
    truncated or missing ``.arrow`` file) is one line naming the folder and ``param``."""
    datasets = datasets_library()
    try:
        return datasets.load_from_disk(str(folder))
    except Exception as exc:  # json, pyarrow and datasets each raise their own kind
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        why = f"{type(exc).__name__}: {first}"
        raise HfDatasetError(f"{param}: {folder} is not a readable saved dataset ({why})") from None


def load_source(dataset: str, revision: str | None, config: str | None, cache_dir: Path) -> tuple[Any, str | None]:
    """The DatasetDict of ``dataset`` (a hub id or a local folder) and the commit it came from (None: local)."""
    datasets = datasets_library()
    local = Path(dataset).expanduser()
    commit = None
    if local.is_dir():
        if revision:
            raise HfDatasetError(
                f"source.revision: {revision!r} is set, but {dataset!r} is a local folder, which has no revisions; "
                "set it to null (or name a hub id)"
            )
        if is_saved_folder(local):
            if config:
                raise HfDatasetError(
                    f"source.config: {config!r} is set, but {dataset!r} is a save_to_disk folder, which has no "
                    "configurations; set it to null"
                )
            loaded = load_saved(local, "source.dataset")
            return (loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict(train=loaded)), None
    elif dataset.startswith((".", "/", "~")) or (local.parent.is_dir() and local.parent != Path(".")):
        named_as_path = dataset.startswith((".", "/", "~"))
        hint = "" if named_as_path else f" ({local.parent}/ is a folder here, so this is no hub id)"
        raise HfDatasetError(f"source.dataset: local dataset folder {dataset!r} does not exist{hint}")
    else:
        local, commit = _snapshot(dataset, revision)
    try:
        loaded = datasets.load_dataset(str(local), name=config, cache_dir=str(cache_dir))
    except ValueError as exc:  # an unknown config names the ones there are; an empty data file says so
        first = str(exc).strip().splitlines()[0]
        param = "source.config" if "onfig" in first else "source.dataset"
        raise HfDatasetError(f"{param}: {dataset!r}: {first}") from None
    except FileNotFoundError as exc:
        raise HfDatasetError(f"source.dataset: {dataset!r}: {str(exc).strip().splitlines()[0]}") from None
    return loaded, commit


def _split_plan(splits: str | Mapping[str, str | None], available: list[str], dataset: str) -> dict[str, str]:
    """capsearch split -> the dataset's split (a str ``splits``: that one split for all three, divided by hash)."""
    wanted = dict.fromkeys(OUR_SPLITS, splits) if isinstance(splits, str) else dict(splits)
    plan = {ours: theirs for ours, theirs in wanted.items() if theirs is not None}
    for ours, theirs in plan.items():
        if theirs not in available:
            param = "source.splits" if isinstance(splits, str) else f"source.splits.{ours}"
            raise HfDatasetError(f"{param}: {dataset!r} has no split {theirs!r} (it has {', '.join(available)})")
    if not isinstance(splits, str):
        for ours, theirs in plan.items():
            same = [other for other, name in plan.items() if name == theirs and other != ours]
            if same:
                raise HfDatasetError(
                    f"source.splits.{ours}: {theirs!r} is mapped to {same[0]} too, so one split's images would be "
                    "trained or tuned on and reported; map each to a split of its own (null for none), or give one "
                    "split name to divide it by hash"
                )
    if not plan:
        raise HfDatasetError("source.splits: no split mapped (test, dev, train: each a split name or null)")
    return plan


def _suffix(head: bytes, path: str | None) -> str:
    """The image's file suffix: from its path where that has one, else from its first bytes."""
    if path and Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return Path(path).suffix.lower()
    for magic, suffix in MAGIC:
        if head.startswith(magic):
            return suffix
    return ".img"


def _columns(part: Any, image_column: str, caption_column: str, where: str) -> Any:
    """``part`` with only the image (undecoded, bytes read in) and caption columns, renamed to ours."""
    datasets = datasets_library()
    for param, column in (("source.image_column", image_column), ("source.caption_column", caption_column)):
        if column not in part.column_names:
            raise HfDatasetError(f"{param}: {where} has no column {column!r} (it has {', '.join(part.column_names)})")
    if not isinstance(part.features[image_column], datasets.Image):
        raise HfDatasetError(
            f"source.image_column: {where}: column {image_column!r} holds {part.features[image_column]}, not images"
        )
    from datasets.table import embed_table_storage

    part = part.select_columns([image_column, caption_column]).cast_column(image_column, datasets.Image(decode=False))
    part = part.with_format("arrow").map(embed_table_storage, batched=True, desc="read images").with_format(None)
    return part.rename_columns({image_column: IMAGE, caption_column: CAPTIONS})


def _ids_and_captions(part: Any, where: str, image_column: str, caption_column: str) -> tuple[list[str], list]:
    """Each row's image id (``<row>.<format>``) and its captions checked; image bytes are only peeked at."""
    ids, texts = [], []
    for batch in part.data.to_batches(max_chunksize=1024):  # row-aligned across the two columns
        data, paths = batch.column(IMAGE).field("bytes"), batch.column(IMAGE).field("path")
        for i, value in enumerate(batch.column(CAPTIONS).to_pylist()):
            at = f"{where} row {len(ids)}"
            head = data[i].as_buffer()[:8].to_pybytes() if data[i].is_valid else b""
            if not head:
                raise HfDatasetError(f"{at}: no image bytes in column {image_column!r}")
            ids.append(f"{len(ids):06d}{_suffix(head, paths[i].as_py())}")
            texts.append(caption_texts(value, at, caption_column, HfDatasetError))
    return ids, texts


def fetch_hf_dataset(
    dataset: str,
    revision: str | None,
    config: str | None,
    image_column: str,
    caption_column: str,
    splits: str | Mapping[str, str | None],
    out: str | Path,
) -> HfFetchResult:
    """Write the source's images and captions to ``out`` (replaced as one unit; see the module's docstring)."""
    datasets = datasets_library()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".hf-cache-", dir=out.parent))  # load_dataset's Arrow copy, then deleted
    try:
        loaded, commit = load_source(dataset, revision, config, scratch)
        plan = _split_plan(splits, list(loaded), dataset)
        parts: dict[str, Any] = {}
        for theirs in dict.fromkeys(plan.values()):
            where = f"{dataset} split {theirs!r}"
            part = _columns(loaded[theirs], image_column, caption_column, where)
            ids, texts = _ids_and_captions(part, where, image_column, caption_column)
            part = part.remove_columns(CAPTIONS).add_column(CAPTIONS, texts).add_column(IMAGE_ID, ids)
            parts[theirs] = part
        saved = {}
        for ours, theirs in plan.items():
            part = parts[theirs]
            if isinstance(splits, str):  # one split for all three: each row goes where its hash says
                part = part.select([i for i, name in enumerate(part[IMAGE_ID]) if split_of(name) == ours])
            if len(part) == 0:
                raise HfDatasetError(
                    f"source.splits: dividing {dataset!r} split {theirs!r} ({len(parts[theirs])} rows) by hash leaves "
                    f"{ours} with no rows; map the splits to the dataset's own" if isinstance(splits, str) else
                    f"source.splits.{ours}: {dataset!r} split {theirs!r} has no rows"
                )  # fmt: skip
            named = [f"{ours}/{name}" for name in part[IMAGE_ID]]
            saved[ours] = part.remove_columns(IMAGE_ID).add_column(IMAGE_ID, named)
        with atomic_folder(out) as building:
            datasets.DatasetDict(saved).save_to_disk(str(building))
            described = {
                "dataset": dataset,
                "revision": revision,
                "commit": commit,
                "config": config,
                "image_column": image_column,
                "caption_column": caption_column,
                "splits": plan if not isinstance(splits, str) else splits,
            }
            write_json(building / SOURCE_FILE, described)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return HfFetchResult(out, commit, {ours: len(part) for ours, part in saved.items()})


class SavedImages:
    """The images of a fetched dataset folder by id, read from its Arrow files (memory-mapped, opened once per
    process)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.holds(self.folder):
            raise FileNotFoundError(f"{self.folder}: no fetched Hugging Face dataset here; run the fetch stage")
        self._rows: dict[str, tuple[Any, int]] | None = None

    @staticmethod
    def holds(folder: Path) -> bool:
        """Whether ``folder`` is a dataset fetch saved (a DatasetDict)."""
        return (folder / DICT_FILE).is_file()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_rows": None}

    def _index(self) -> dict[str, tuple[Any, int]]:
        if self._rows is None:
            saved = load_saved(self.folder, "source.images")
            self._rows = {}
            for name in saved:
                table = saved[name].data
                for row, image_id in enumerate(table.column(IMAGE_ID).to_pylist()):
                    self._rows[image_id] = (table, row)
        return self._rows

    def ids(self) -> list[str]:
        """Every image id (split folders in the order test, dev, train; rows in order)."""
        return list(self._index())

    def read_bytes(self, image_id: str) -> bytes:
        """The encoded image ``image_id`` (KeyError where there is none)."""
        table, row = self._index()[image_id]
        return table.column(IMAGE)[row]["bytes"].as_py()


def read_saved_captions(folder: str | Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """The captions of every image of a fetched dataset folder, and the image ids of each split."""
    saved = load_saved(folder, "source.images")
    captions: dict[str, list[str]] = {}
    splits: dict[str, list[str]] = {name: [] for name in OUR_SPLITS}
    for name in saved:
        table = saved[name].data
        for image_id, texts in zip(table.column(IMAGE_ID).to_pylist(), table.column(CAPTIONS).to_pylist(), strict=True):
            captions[image_id] = texts
            splits[name].append(image_id)
    return captions, splits
