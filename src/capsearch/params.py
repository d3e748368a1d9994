"""params.yaml, typed: one dataclass per section, with its defaults and its checks; every error names the param.

The stage scripts, the ``capsearch`` command and the demo all read params through here; the library itself takes
plain values. A section read from a file must list every key (a missing one is an error naming it); the defaults
serve code that builds params (the demo, ``capsearch`` outside a project). Nothing here imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from capsearch.errors import CapsearchError
from capsearch.io import read_yaml

PARAMS_FILE = "params.yaml"
SPLITS = ("test", "dev", "train", "all")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")
SEARCH_METHODS = ("image", "caption", "fusion")
BATCH_TASKS = ("caption", "embed_images", "embed_texts")
SOURCE_KINDS = ("flickr8k", "flickr30k", "coco", "webdataset", "imagefolder", "hf_dataset")
LOCAL_SOURCES = ("webdataset", "imagefolder")  # read where they are: nothing to fetch
FETCHED_IMAGES = "data/raw"  # where fetch puts the downloads
ENGINES = ("local", "ray")
DECODE_PATHS = ("auto", "cpu", "gpu")
DEFAULT_BLIP = "Salesforce/blip-image-captioning-base"
DEFAULT_CLIP = "openai/clip-vit-base-patch32"
DEFAULT_CLIP_REVISION = "c237dc49a33fc61debc9276459120b7eac67e7ef"  # refs/pr/66: the safetensors conversion
OPTIONAL = "optional"  # field metadata: may be left out of params.yaml

S = TypeVar("S", bound="Section")


class ParamError(CapsearchError, ValueError):
    """A bad or missing param; the message starts with its dotted name."""


def _integer(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParamError(f"{name}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ParamError(f"{name}: expected >= {minimum}, got {value}")
    return value


def _choice(value: Any, name: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ParamError(f"{name}: unknown {what} {value!r}; choose one of {', '.join(choices)}")
    return value


def _text(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ParamError(f"{name}: expected a non-empty string, got {value!r}")
    return value


def _count_or_all(value: Any, name: str) -> int | str:
    """A positive integer, or ``all``."""
    if isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ParamError(f"{name}: expected a positive integer or 'all', got {value!r}")
    return value


def _auto_or_count(value: Any, name: str, minimum: int, expected: str) -> int | str:
    if value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ParamError(f"{name}: expected {expected}, or 'auto', got {value!r}")
    return value


def check_decoding(num_beams: Any, max_new_tokens: Any, min_new_tokens: Any, prompt: Any = None) -> None:
    """The ``generate`` settings of ``caption.*``: beams >= 1, 1 <= max tokens, 0 <= min tokens <= max tokens, and
    a prompt that is null or a non-empty string."""
    _integer(num_beams, "caption.num_beams", 1)
    _integer(max_new_tokens, "caption.max_new_tokens", 1)
    _integer(min_new_tokens, "caption.min_new_tokens")
    if not 0 <= min_new_tokens <= max_new_tokens:
        raise ParamError(f"caption.min_new_tokens: expected 0..max_new_tokens ({max_new_tokens}), got {min_new_tokens}")
    if prompt is not None:
        _text(prompt, "caption.prompt")


DEFAULT_DECODE = "auto"  # runtime.decode: auto | cpu | gpu (see capsearch.models.gpu_decode)


@dataclass(frozen=True)
class Section:
    """Base of the sections: reading from a mapping, checking, and writing back for params.yaml."""

    NAME = ""

    @classmethod
    def from_mapping(cls: type[S], values: Any) -> S:
        """The section from params.yaml's mapping: every required key present, no unknown key, each checked."""
        if not isinstance(values, Mapping):
            raise ParamError(f"params.yaml: section '{cls.NAME}' is missing or not a mapping")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ParamError(f"{cls.NAME}.{unknown[0]}: unknown param; {cls.NAME} has {', '.join(known)}")
        missing = [name for name, f in known.items() if name not in values and not f.metadata.get(OPTIONAL)]
        if missing:
            raise ParamError(f"params.yaml: {', '.join(f'{cls.NAME}.{name}' for name in missing)} missing")
        return cls(**{name: values[name] for name in known if name in values})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise a :class:`ParamError` naming the first bad value."""

    def name(self, key: str) -> str:
        """The dotted name of one of this section's params."""
        return f"{self.NAME}.{key}"

    def as_yaml(self) -> dict[str, Any]:
        """Plain values for params.yaml (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class FetchParams(Section):
    """Where each source's files come from, with their MD5s (or a Kaggle-layout folder to pack for Flickr8k).

    The Flickr8k keys are required; the Karpathy-split sources' keys (Flickr30k, COCO) may be left out and default
    to the public URLs and checksums below.
    """

    NAME = "fetch"
    images_url: str = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip"
    images_md5: str = "f18a1e2920de5bd84dae7cf08ec78978"
    text_url: str = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip"
    text_md5: str = "bf6c1abcb8e4a833b7f922104de18627"
    kaggle_dir: str | None = field(default=None, metadata={OPTIONAL: True})
    karpathy_url: str = field(
        default="https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip", metadata={OPTIONAL: True}
    )
    karpathy_md5: str = field(default="4fa8c08369d22fe16e41dc124bd1adc2", metadata={OPTIONAL: True})
    flickr30k_images_url: str = field(
        default="https://uofi.app.box.com/shared/static/1cpolrtkckn4hxr1zhmfg0ln9veo6jpl.gz", metadata={OPTIONAL: True}
    )
    flickr30k_images_md5: str = field(default="985ac761bbb52ca49e0c474ae806c07c", metadata={OPTIONAL: True})
    coco_images_url: str = field(default="http://images.cocodataset.org/zips/val2014.zip", metadata={OPTIONAL: True})
    coco_images_md5: str = field(default="a3d79f5ed8d289b7a7554ce06a5782b3", metadata={OPTIONAL: True})

    def check(self) -> None:
        for key in ("images_url", "text_url", "karpathy_url", "flickr30k_images_url", "coco_images_url"):
            _text(getattr(self, key), self.name(key))
        for key in ("karpathy_md5", "flickr30k_images_md5", "coco_images_md5"):
            self._md5(key)
        if self.kaggle_dir is not None:  # the release zips are packed from that folder: URLs and MD5s unused
            _text(self.kaggle_dir, self.name("kaggle_dir"))
            return
        for key in ("images_md5", "text_md5"):
            self._md5(key)

    def _md5(self, key: str) -> None:
        value = getattr(self, key)
        if not isinstance(value, str) or not MD5.fullmatch(value):
            raise ParamError(f"{self.name(key)}: expected 32 lower-case hex digits, got {value!r}")


@dataclass(frozen=True)
class SourceParams(Section):
    """Where the images and their captions come from: Flickr8k, Flickr30k or COCO (fetch's download; the last two
    with Karpathy's splits), webdataset shards, a captioned image folder (Hugging Face ImageFolder layout), or a
    Hugging Face dataset (fetch loads it with ``datasets``).

    ``images`` is the path the image-reading stages list as their DVC dependency: ``data/raw`` for the fetched
    sources; for webdataset a folder of ``.tar`` shards or a list file of shard paths (a glob works in the library and
    ``capsearch``, but DVC cannot track one); for imagefolder the folder. ``caption_column`` and ``split_column``
    name an imagefolder's metadata columns (:mod:`capsearch.data.imagefolder`). An ``hf_dataset`` is ``dataset``
    (a hub id at ``revision``, or a local folder) with ``config``, its ``image_column`` and ``caption_column``, and
    ``splits``: capsearch's test/dev/train mapped to the dataset's split names, or one name whose rows are divided
    by hash (:mod:`capsearch.data.hf_dataset`).
    """

    NAME = "source"
    kind: str = field(default="flickr8k", metadata={OPTIONAL: True})  # a project from before shards: Flickr8k
    images: str = field(default=FETCHED_IMAGES, metadata={OPTIONAL: True})
    caption_column: str = field(default="text", metadata={OPTIONAL: True})
    split_column: str | None = field(default=None, metadata={OPTIONAL: True})
    dataset: str | None = field(default=None, metadata={OPTIONAL: True})
    revision: str | None = field(default=None, metadata={OPTIONAL: True})
    config: str | None = field(default=None, metadata={OPTIONAL: True})
    image_column: str = field(default="image", metadata={OPTIONAL: True})
    splits: str | dict[str, str | None] = field(
        default_factory=lambda: {"test": "test", "dev": "validation", "train": "train"}, metadata={OPTIONAL: True}
    )

    def check(self) -> None:
        _choice(self.kind, self.name("kind"), SOURCE_KINDS, "source kind")
        for key in ("dataset", "revision", "config"):
            if getattr(self, key) is not None:
                _text(getattr(self, key), self.name(key))
        _text(self.image_column, self.name("image_column"))
        self._check_splits()
        if self.kind == "hf_dataset" and self.dataset is None:
            raise ParamError("source.dataset: source.kind hf_dataset needs a Hugging Face dataset id or a local folder")
        _text(self.images, self.name("images"))
        _text(self.caption_column, self.name("caption_column"))
        if self.split_column is not None:
            _text(self.split_column, self.name("split_column"))
        if self.kind not in LOCAL_SOURCES and self.images.rstrip("/") != FETCHED_IMAGES:
            raise ParamError(
                f"source.images: the {self.kind} source reads fetch's download, {FETCHED_IMAGES}; got "
                f"{self.images!r} (set source.kind: webdataset for shards, imagefolder for a captioned folder)"
            )
        if self.kind in LOCAL_SOURCES and any(ch in self.images for ch in "*?["):
            raise ParamError(
                f"source.images: {self.images!r} is a glob, which DVC cannot track as a dependency; "
                "give the shard folder or a list file of shard paths"
            )

    def _check_splits(self) -> None:
        if isinstance(self.splits, str):
            _text(self.splits, self.name("splits"))
            return
        if not isinstance(self.splits, Mapping) or set(self.splits) - {"test", "dev", "train"}:
            raise ParamError(
                f"source.splits: expected test/dev/train mapped to split names (or null), or one split name; "
                f"got {self.splits!r}"
            )
        for ours, theirs in self.splits.items():
            if theirs is not None:
                _text(theirs, self.name(f"splits.{ours}"))

    @property
    def columns(self) -> tuple[str, str | None]:
        """An imagefolder's caption and split columns."""
        return self.caption_column, self.split_column


@dataclass(frozen=True)
class SampleParams(Section):
    """A seeded sample of a split: ``num_images`` of ``split`` (or ``all``) in the order ``seed`` gives."""

    split: str = "test"
    num_images: int | str = 1000
    seed: int = 0

    def check(self) -> None:
        _choice(self.split, self.name("split"), SPLITS, "split")
        object.__setattr__(self, "num_images", _count_or_all(self.num_images, self.name("num_images")))
        _integer(self.seed, self.name("seed"))

    @property
    def count(self) -> int | None:
        """``num_images`` as an int, None for ``all``."""
        return None if self.num_images == "all" else int(self.num_images)


@dataclass(frozen=True)
class SubsetParams(SampleParams):
    """Which images are evaluated."""

    NAME = "subset"


@dataclass(frozen=True)
class ModelParams(Section):
    """A hub id (at ``revision``) or a local folder, and the precision it runs in."""

    model: str = ""
    revision: str | None = "main"
    precision: str = "auto"

    def check(self) -> None:
        _text(self.model, self.name("model"))
        if self.revision is not None:
            _text(self.revision, self.name("revision"))
        _choice(self.precision, self.name("precision"), PRECISIONS, "precision")


@dataclass(frozen=True)
class CaptionParams(ModelParams):
    """The captioning model (any supported image-to-text family) and its ``generate`` settings."""

    NAME = "caption"
    model: str = DEFAULT_BLIP
    revision: str | None = "main"
    num_beams: int = 3
    max_new_tokens: int = 30
    min_new_tokens: int = 5
    precision: str = "auto"
    # the text captions continue (BLIP-2, GIT, BLIP take one); optional: projects from before it have none
    prompt: str | None = field(default=None, metadata={OPTIONAL: True})

    def check(self) -> None:
        super().check()
        check_decoding(self.num_beams, self.max_new_tokens, self.min_new_tokens, self.prompt)


@dataclass(frozen=True)
class ClipParams(ModelParams):
    """The dual encoder (CLIP, SigLIP, ...) embedding images and texts into one space."""

    NAME = "clip"
    model: str = DEFAULT_CLIP
    revision: str | None = DEFAULT_CLIP_REVISION
    precision: str = "auto"


@dataclass(frozen=True)
class EvaluateParams(Section):
    """The K of Recall@K."""

    NAME = "evaluate"
    ks: tuple[int, ...] = (1, 5, 10)

    def check(self) -> None:
        ks = self.ks
        if (
            not isinstance(ks, list | tuple)
            or not ks
            or not all(isinstance(k, int) and not isinstance(k, bool) and k > 0 for k in ks)
        ):
            raise ParamError(f"evaluate.ks: expected a non-empty list of positive integers, got {ks!r}")
        if len(set(ks)) != len(ks):
            raise ParamError(f"evaluate.ks: duplicate values in {list(ks)!r}")
        object.__setattr__(self, "ks", tuple(sorted(ks)))


@dataclass(frozen=True)
class FusionParams(SampleParams):
    """Where and over which grid the fusion weight alpha is chosen (never on the reported split)."""

    NAME = "fusion"
    split: str = "dev"
    num_images: int | str = 500
    seed: int = 0
    alphas: tuple[float, ...] = tuple(i / 10 for i in range(11))

    def check(self) -> None:
        super().check()
        alphas = self.alphas
        if not isinstance(alphas, list | tuple) or not alphas:
            raise ParamError(f"fusion.alphas: expected a non-empty list of numbers within 0..1, got {alphas!r}")
        for alpha in alphas:
            if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0.0 <= alpha <= 1.0:
                raise ParamError(f"fusion.alphas: every alpha must be a number within 0..1, got {alpha!r}")
        object.__setattr__(self, "alphas", tuple(float(a) for a in alphas))

    def check_against(self, reported_split: str) -> None:
        """alpha must be chosen on another split than the one reported (``subset.split``)."""
        if self.split in (reported_split, "all") or reported_split == "all":
            raise ParamError(
                f"fusion.split: alpha must be chosen on another split than the reported one "
                f"(subset.split is {reported_split!r}, fusion.split is {self.split!r})"
            )


@dataclass(frozen=True)
class ReportParams(Section):
    """The report pages: example queries, hits per query, method, caption samples, worst queries."""

    NAME = "report"
    queries: tuple[str, ...] = ("man riding a horse", "dog jumping into a pool", "children playing on the beach")
    k: int = 5
    method: str = "image"
    samples: int = 8
    seed: int = 0
    failures: int = 5

    def check(self) -> None:
        queries = self.queries
        if (
            not isinstance(queries, list | tuple)
            or not queries
            or not all(isinstance(q, str) and q.strip() for q in queries)
        ):
            raise ParamError(f"report.queries: expected a list of non-empty queries, got {queries!r}")
        object.__setattr__(self, "queries", tuple(q.strip() for q in queries))
        _integer(self.k, self.name("k"), 1)
        _choice(self.method, self.name("method"), SEARCH_METHODS, "method")
        _integer(self.samples, self.name("samples"), 1)
        _integer(self.seed, self.name("seed"))
        _integer(self.failures, self.name("failures"), 1)


FREEZE = ("none", "vision", "text")
CAPTIONER_FREEZE = ("none", "vision")
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")


def _number(value: Any, name: str, minimum: float, inclusive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ParamError(f"{name}: expected a number, got {value!r}")
    if value < minimum or (not inclusive and value == minimum):
        raise ParamError(f"{name}: expected {'>=' if inclusive else '>'} {minimum:g}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class FinetuneParams(Section):
    """What every fine-tuning section has (``epochs: 0``: off, the base model is used as it is).

    Each epoch is validated on ``dev_images`` of the dev split; the best epoch's weights are what the stages after
    it, search and the service then use.
    """

    epochs: int = 0
    learning_rate: float = 1e-5
    batch_size: int = 64
    weight_decay: float = 0.1
    warmup_steps: int = 50
    train_images: int | str = "all"
    dev_images: int | str = 500
    freeze: str = "none"
    lora_rank: int = 0
    precision: str = "auto"
    seed: int = 0
    FREEZE_CHOICES = FREEZE
    SMALLEST_BATCH = 1

    def check(self) -> None:
        _integer(self.epochs, self.name("epochs"), 0)
        _number(self.learning_rate, self.name("learning_rate"), 0.0, inclusive=False)
        _integer(self.batch_size, self.name("batch_size"), self.SMALLEST_BATCH)
        _number(self.weight_decay, self.name("weight_decay"), 0.0)
        _integer(self.warmup_steps, self.name("warmup_steps"), 0)
        object.__setattr__(self, "train_images", _count_or_all(self.train_images, self.name("train_images")))
        object.__setattr__(self, "dev_images", _count_or_all(self.dev_images, self.name("dev_images")))
        _choice(self.freeze, self.name("freeze"), self.FREEZE_CHOICES, "freeze setting")
        _integer(self.lora_rank, self.name("lora_rank"), 0)
        if self.lora_rank and self.freeze != "none":
            raise ParamError(
                f"{self.name('freeze')}: {self.freeze!r} with lora_rank {self.lora_rank}: LoRA adapts the whole "
                "model; set freeze: none, or lora_rank: 0"
            )
        _choice(self.precision, self.name("precision"), TRAIN_PRECISIONS, "training precision")
        _integer(self.seed, self.name("seed"))

    def check_against(self, reported_split: str) -> None:
        """Fine-tuning trains on train and picks its epoch on dev: the reported split must be neither."""
        if self.epochs and reported_split != "test":
            raise ParamError(
                f"{self.name('epochs')}: fine-tuning trains on the train split and picks its epoch on dev, so the "
                f"reported split must be test (subset.split is {reported_split!r}); or set epochs: 0"
            )


@dataclass(frozen=True)
class FinetuneClipParams(FinetuneParams):
    """Contrastive fine-tuning of the dual encoder on the train split; each epoch validated by Recall@K on dev (as
    the evaluate stage defines it). ``freeze``: none | vision | text (that tower stays fixed)."""

    NAME = "finetune.clip"
    SMALLEST_BATCH = 2  # a contrastive batch needs negatives


@dataclass(frozen=True)
class FinetuneCaptionerParams(FinetuneParams):
    """Teacher-forced fine-tuning of the captioner on the train split's reference captions; each epoch validated
    by CIDEr-D of greedy captions on dev. ``freeze``: none | vision (the image encoder stays fixed; BLIP-2 always
    trains its Q-Former and projection only)."""

    NAME = "finetune.captioner"
    learning_rate: float = 1e-5
    batch_size: int = 32
    weight_decay: float = 0.05
    dev_images: int | str = 200
    FREEZE_CHOICES = CAPTIONER_FREEZE


INDEX_KINDS = ("auto", "exact", "hnsw", "ivf_sq8", "ivf_pq")


@dataclass(frozen=True)
class IndexParams(Section):
    """The nearest-neighbour index over the embeddings (faiss): its kind and each kind's knobs.

    ``auto`` picks by gallery size: exact up to ``exact_max`` vectors, IVF-SQ8 up to ``compressed_above``, IVF-PQ
    beyond. Search always re-ranks the index's top ``candidates`` exactly.
    """

    NAME = "index"
    kind: str = "auto"
    exact_max: int = 200_000
    compressed_above: int = 10_000_000
    candidates: int = 200
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    ivf_nlist: int | str = "auto"
    ivf_nprobe: int = 64
    pq_bytes: int = 32

    def check(self) -> None:
        _choice(self.kind, self.name("kind"), INDEX_KINDS, "index kind")
        _integer(self.exact_max, self.name("exact_max"), 0)
        _integer(self.compressed_above, self.name("compressed_above"), 1)
        _integer(self.candidates, self.name("candidates"), 1)
        for key in ("hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "ivf_nprobe", "pq_bytes"):
            _integer(getattr(self, key), self.name(key), 1)
        _auto_or_count(self.ivf_nlist, self.name("ivf_nlist"), 1, "a positive integer")


@dataclass(frozen=True)
class RuntimeParams(Section):
    """Untracked knobs (no stage lists them, so they re-run nothing): device, workers, batch sizes, cache, and the
    engine (``local``, or ``ray`` at ``ray_address``: None starts a local Ray; ``auto`` joins a running cluster)."""

    NAME = "runtime"
    device: str = field(default="auto", metadata={OPTIONAL: True})
    num_workers: int | str = field(default="auto", metadata={OPTIONAL: True})
    batch_size: Mapping[str, int | str] = field(default_factory=dict, metadata={OPTIONAL: True})
    cache: bool = field(default=True, metadata={OPTIONAL: True})
    cache_dir: str | None = field(default=None, metadata={OPTIONAL: True})
    engine: str = field(default="local", metadata={OPTIONAL: True})
    ray_address: str | None = field(default=None, metadata={OPTIONAL: True})
    ray_actors: int | str = field(default="auto", metadata={OPTIONAL: True})
    decode: str = field(default=DEFAULT_DECODE, metadata={OPTIONAL: True})  # where JPEGs are decoded
    # the Ray engine's watchdog: a run that brings back no result for this long ends with one line saying why
    ray_stall_seconds: int = field(default=600, metadata={OPTIONAL: True})
    # fine-tuning saves a resumable checkpoint this often (and after every epoch); results do not depend on it
    checkpoint_steps: int = field(default=100, metadata={OPTIONAL: True})

    def check(self) -> None:
        _choice(self.engine, self.name("engine"), ENGINES, "engine")
        _integer(self.checkpoint_steps, self.name("checkpoint_steps"), 1)
        _choice(self.decode, self.name("decode"), DECODE_PATHS, "decode path")
        _integer(self.ray_stall_seconds, self.name("ray_stall_seconds"), 1)
        if self.engine == "ray" and self.decode == "gpu":
            raise ParamError("runtime.decode: 'gpu' is for the local engine; the ray engine decodes in CPU tasks")
        if self.ray_address is not None:
            _text(self.ray_address, self.name("ray_address"))
        _auto_or_count(self.ray_actors, self.name("ray_actors"), 1, "a positive integer")
        _choice(self.device, self.name("device"), DEVICES, "device")
        _auto_or_count(self.num_workers, self.name("num_workers"), 0, "0 or more")
        sizes = self.batch_size if self.batch_size is not None else {}
        if not isinstance(sizes, Mapping):
            raise ParamError(f"runtime.batch_size: expected a mapping of stage names to sizes, got {sizes!r}")
        unknown = sorted(set(sizes) - set(BATCH_TASKS))
        if unknown:
            raise ParamError(f"runtime.batch_size.{unknown[0]}: unknown task; choose among {', '.join(BATCH_TASKS)}")
        full = {task: sizes.get(task, "auto") for task in BATCH_TASKS}
        for task, size in full.items():
            if size != "auto" and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
                raise ParamError(f"runtime.batch_size.{task}: expected a positive integer or 'auto', got {size!r}")
        object.__setattr__(self, "batch_size", full)
        if not isinstance(self.cache, bool):
            raise ParamError(f"runtime.cache: expected true or false, got {self.cache!r}")
        if self.cache_dir is not None:
            _text(self.cache_dir, self.name("cache_dir"))


SECTIONS: dict[str, type[Section]] = {
    section.NAME: section
    for section in (
        FetchParams,
        SourceParams,
        SubsetParams,
        CaptionParams,
        ClipParams,
        EvaluateParams,
        FusionParams,
        ReportParams,
        IndexParams,
        FinetuneClipParams,
        FinetuneCaptionerParams,
        RuntimeParams,
    )
}


def load_raw(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """params.yaml as a mapping; a missing or malformed file is a :class:`ParamError` naming it."""
    path = Path(path)
    if not path.exists():
        raise ParamError(f"{path.resolve()} not found: run from the project root (where dvc.yaml is)")
    try:
        data = read_yaml(path) or {}
    except yaml.YAMLError as exc:  # one line: the file, the line and column, what the parser found
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ParamError(f"{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc
    if not isinstance(data, dict):
        raise ParamError(f"{path}: expected a mapping of sections")
    top = dict.fromkeys(name.split(".")[0] for name in SECTIONS)
    unknown = sorted(str(name) for name in data if name not in top)
    if unknown:
        raise ParamError(
            f"{path}: unknown section{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"the sections are {', '.join(top)}"
        )
    for parent in (name for name in top if name not in SECTIONS):  # a section of sections (finetune)
        children = [name.split(".", 1)[1] for name in SECTIONS if name.startswith(parent + ".")]
        values = data.get(parent)
        if values is not None and not isinstance(values, Mapping):
            raise ParamError(f"{path}: section '{parent}' is not a mapping")
        for child in sorted(set(values or {}) - set(children)):
            raise ParamError(f"{parent}.{child}: unknown section; {parent} has {', '.join(children)}")
    return data


def _lookup(raw: Mapping[str, Any], dotted: str) -> Any:
    """The value at a dotted path of a params mapping (None where any part is missing)."""
    value: Any = raw
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def read_section(raw: Mapping[str, Any], cls: type[S]) -> S:
    """One section of a params mapping, checked; ``runtime`` and ``source`` may be left out entirely."""
    values = _lookup(raw, cls.NAME)
    if values is None and all(f.metadata.get(OPTIONAL) for f in fields(cls)):
        values = {}
    return cls.from_mapping(values)


def read_key(raw: Mapping[str, Any], dotted: str) -> Any:
    """One param (``section.key``), checked as its section checks it; for stages that depend on one key only."""
    name, key = dotted.rsplit(".", 1)
    values = _lookup(raw, name)
    if not isinstance(values, Mapping) or key not in values:
        raise ParamError(f"params.yaml: {dotted} missing")
    return getattr(SECTIONS[name](**{key: values[key]}), key)


def default_params(**sections: Section) -> dict[str, Any]:
    """A whole params.yaml mapping from the typed defaults, with the given sections replacing them."""
    params: dict[str, Any] = {}
    for name, cls in SECTIONS.items():
        *parents, leaf = name.split(".")
        place = params
        for parent in parents:
            place = place.setdefault(parent, {})
        place[leaf] = (sections.get(name.replace(".", "_")) or cls()).as_yaml()
    return params
