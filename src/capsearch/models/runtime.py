"""Device, precision and safe model loading shared by the captioner and dual-encoder wrappers."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch

from capsearch.cache import COMMIT, ResultCache
from capsearch.hub import offline_when_unreachable
from capsearch.models import ModelLoadError
from capsearch.params import DEVICES, PRECISIONS, RuntimeParams

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

T = TypeVar("T")


def resolve_device(name: str, param: str = "runtime.device") -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error naming ``param``."""
    if name not in DEVICES:
        raise ValueError(f"{param}: unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{param}: 'cuda' requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    return torch.device(name)


NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX512-BF16 and AMX; Arm's BF16 extension


def cpu_supports_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has native bf16 matrix instructions, from the flags of ``/proc/cpuinfo`` (``cpuinfo``).

    oneDNN also calls bf16 "supported" on AVX-512 CPUs without those instructions, where it emulates bf16 and runs
    slower than fp32 (CLIP's image tower: 6.8 images/s in bf16 against 15.7 in fp32 one at a time, on a 2-core
    Xeon with AVX-512 but no AVX512-BF16); its answer is used only where ``/proc/cpuinfo`` cannot be read.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            checker = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
            try:
                return bool(checker()) if checker is not None else False
            except RuntimeError:
                return False
    return bool(NATIVE_BF16_FLAGS & set(cpuinfo.split()))


def resolve_precision(name: str, device: torch.device, param: str = "precision") -> torch.dtype:
    """``auto``: bf16 (or fp16) on CUDA, bf16 on CPUs with native support, else fp32."""
    if name not in PRECISIONS:
        raise ValueError(f"{param}: unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


def precision_name(dtype: torch.dtype) -> str:
    """The short name (fp32/fp16/bf16) of a dtype."""
    return {v: k for k, v in _DTYPES.items()}[dtype]


SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")


@dataclass(frozen=True)
class ModelSource:
    """Where a model's files come from: a local folder (``commit`` None) or a Hub repo at one commit."""

    model_id: str
    revision: str | None  # as asked: a branch, tag, PR ref or commit (hub ids only)
    commit: str | None  # the commit every file is loaded from

    @property
    def load_revision(self) -> str | None:
        """The ``revision`` to give ``from_pretrained``: the resolved commit, so all files come from one commit."""
        return self.commit or self.revision

    @property
    def note(self) -> str:
        """How the weights were read, where summaries should say (safetensors, the only way here: nothing)."""
        return ""

    def __str__(self) -> str:
        """``id@commit`` for a hub model (the commit to pin), the folder for a local one."""
        return model_label(self.model_id, self.commit)


def model_label(model_id: str, commit: str | None) -> str:
    """How summaries name a model: ``id@commit`` for a hub model, the folder alone for a local one (no commit)."""
    return f"{model_id}@{commit}" if commit else model_id


def _is_local_folder(model_id: str, param: str) -> bool:
    """Whether ``model_id`` is a local folder (refused if only a pickle is there); a missing path is an error."""
    local = Path(model_id).expanduser()
    if local.is_dir():
        has_config = (local / "config.json").exists()
        if not has_config and (local / "open_clip_config.json").exists():
            raise ModelLoadError(
                f"{param}: {local} is an open_clip checkpoint (open_clip_config.json, no config.json): a dual encoder "
                "of the open_clip family, which clip.model loads (capsearch.models.registry.load_dual_encoder), "
                "not a transformers model"
            )
        if has_config and not any(local.glob("*.safetensors")) and any(local.glob("*.bin")):
            raise ModelLoadError(
                f"{param}: {local} has only a pickle checkpoint (*.bin); capsearch loads safetensors only. "
                "Convert it with save_pretrained(..., safe_serialization=True)."
            )
        return True
    if model_id.startswith((".", "/", "~")):
        raise ModelLoadError(f"{param}: local model folder {model_id!r} does not exist")
    return False


def precision_param(model_param: str) -> str:
    """The precision param beside a model param (``clip.model`` -> ``clip.precision``), for errors."""
    return f"{model_param.rsplit('.', 1)[0]}.precision"


def _revision_param(param: str) -> str:
    return f"{param.rsplit('.', 1)[0]}.revision" if "." in param else "the revision"


def _hub_error(param: str, model_id: str, revision: str, exc: Exception) -> ModelLoadError:
    """One line saying why a hub id could not be resolved, and what to do."""
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    fix = f"Set {param} to a folder saved with save_pretrained"
    if isinstance(exc, RevisionNotFoundError):
        why = f"the repo has no branch, tag or commit {revision!r}"
        fix = f"Set {_revision_param(param)} to one it has"
    elif isinstance(exc, RepositoryNotFoundError):
        why = "no such repo on the Hugging Face Hub (or it is private)"
    elif isinstance(exc, LocalEntryNotFoundError):
        cached = cached_commits(model_id)
        if cached:
            why = (
                f"the Hugging Face Hub cannot be reached (or HF_HUB_OFFLINE=1) and its cache has no revision "
                f"{revision!r} of it, but it holds commit{'s' if len(cached) > 1 else ''} {', '.join(cached)}"
            )
            fix = f"Pin {_revision_param(param)}: {cached[0]} to load that one offline"
        else:
            why = (
                "not a local folder and not available from the Hugging Face Hub or its cache (the Hub cannot be "
                "reached, or HF_HUB_OFFLINE=1, and these files were never downloaded)"
            )
            fix += ", or run once with network access to fill the cache (then a pinned commit also loads offline)"
    else:
        lines = str(exc).strip().splitlines()
        why = f"the Hub answered: {lines[0] if lines else type(exc).__name__}"
    return ModelLoadError(f"{param}: could not load {model_id!r} (revision {revision!r}): {why}. {fix}.")


def cached_commits(model_id: str) -> list[str]:
    """The commits of a hub repo whose config and safetensors weights are in the local Hugging Face cache, newest
    first."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    snapshots = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=model_id, repo_type="model") / "snapshots"
    if not snapshots.is_dir():
        return []
    found = [
        folder
        for folder in snapshots.iterdir()
        if COMMIT.fullmatch(folder.name)
        and (folder / "config.json").exists()
        and any((folder / name).exists() for name in SAFETENSORS_FILES)
    ]
    return [folder.name for folder in sorted(found, key=lambda f: f.stat().st_mtime, reverse=True)]


def _safetensors_hint(model_id: str) -> str:
    """Where the repo's safetensors weights are, if a pull request (the Hub's conversion bot's) has them."""
    try:
        from huggingface_hub import HfApi

        api = HfApi()
        refs = api.list_repo_refs(model_id, include_pull_requests=True)
        for pull in refs.pull_requests or []:
            if any(api.file_exists(model_id, name, revision=pull.target_commit) for name in SAFETENSORS_FILES):
                return f"its safetensors weights are at {pull.ref} (commit {pull.target_commit}): pin that commit"
    except Exception:  # only a hint: the error itself is already clear
        pass
    return "pin a commit that has model.safetensors (a repo whose main branch has only pytorch_model.bin often has "
    "one at its safetensors conversion pull request, refs/pr/N)"


def resolve_model(model_id: str, revision: str | None, param: str) -> ModelSource:
    """Check a local folder, or resolve a hub id's revision to the commit its safetensors weights load from.

    Online, ``revision`` (a branch, tag, ``refs/pr/N`` or commit) is resolved on the Hub; offline
    (``HF_HUB_OFFLINE=1``) from the local cache. A commit without safetensors weights is refused with one line
    naming the param and, where the Hub has one, the commit to pin instead: capsearch never loads pickles, and
    transformers' own fallback (converting on the fly, only for "main" and only online) would make the weights
    depend on the day.
    """
    if _is_local_folder(model_id, param):
        return ModelSource(model_id, revision, None)
    offline_when_unreachable()
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError

    asked = revision or "main"
    try:
        config = Path(hf_hub_download(model_id, "config.json", revision=asked))
    except (OSError, HFValidationError) as exc:
        raise _hub_error(param, model_id, asked, exc) from exc
    commit = config.parent.name  # .../snapshots/<commit>/config.json
    if not COMMIT.fullmatch(commit):
        raise ModelLoadError(f"{param}: unexpected hub cache layout at {config}")
    for name in SAFETENSORS_FILES:
        try:
            hf_hub_download(model_id, name, revision=commit)
            return ModelSource(model_id, revision, commit)
        except LocalEntryNotFoundError as exc:  # a subclass of EntryNotFoundError: offline, not cached
            raise _hub_error(param, model_id, asked, exc) from exc
        except EntryNotFoundError:
            continue
        except OSError as exc:
            raise _hub_error(param, model_id, asked, exc) from exc
    raise ModelLoadError(
        f"{param}: {model_id!r} at revision {asked!r} (commit {commit}) has no safetensors weights "
        f"(capsearch never loads pickled *.bin checkpoints); {_safetensors_hint(model_id)}, "
        f"in {_revision_param(param)}."
    )


def model_config_path(source: ModelSource) -> Path:
    """The ``config.json`` the model loads with: in its folder, or the hub cache's copy at the resolved commit."""
    if source.commit is None:
        return Path(source.model_id).expanduser() / "config.json"
    from huggingface_hub import hf_hub_download

    return Path(hf_hub_download(source.model_id, "config.json", revision=source.commit))


# transformers' own SiglipTextConfig defaults (a 32,000-token vocabulary with CLIP's start and end ids 49406/49407)
# fail its own token-id check: every SigLIP load warns about a config it builds itself, not the model's.
_DEFAULT_SIGLIP_TOKENS = re.compile(
    r"Model config: (bos|eos)_token_id must be .* \(between 0 and 31999\), got 4940[67]\."
)


class _TransformersDefaults(logging.Filter):
    """Drops transformers' warning about its own default SigLIP text config (:data:`_DEFAULT_SIGLIP_TOKENS`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _DEFAULT_SIGLIP_TOKENS.match(record.getMessage())


def _quiet_loading() -> None:
    """Before loading: transformers' weight-loading bar only where capsearch shows progress, and its false warning
    about default SigLIP configs dropped (both once per process)."""
    import transformers

    from capsearch.progress import shown

    config_logger = logging.getLogger("transformers.configuration_utils")
    if not any(isinstance(f, _TransformersDefaults) for f in config_logger.filters):
        config_logger.addFilter(_TransformersDefaults())
    if not shown():
        transformers.utils.logging.disable_progress_bar()


def load_pretrained(
    loader: Any, model_id: str, revision: str | None, param: str, weights: bool = True, **kwargs: Any
) -> Any:
    """``loader.from_pretrained`` with safetensors only and no remote code, with a one-line error.

    ``model_id`` is a local folder (saved with ``save_pretrained``) or a Hugging Face Hub id at ``revision``
    (pass the commit :func:`resolve_model` found). A folder with only a pickle checkpoint is refused.
    ``weights=False`` loads a processor or tokenizer (no checkpoint).
    """
    _is_local_folder(model_id, param)
    _quiet_loading()
    try:
        if weights:
            kwargs["use_safetensors"] = True
        return loader.from_pretrained(model_id, revision=revision, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"{param}: could not load {model_id!r} (revision {revision!r}): not a local folder and not "
            f"available from the Hugging Face Hub or its cache ({first_line}). Set {param} to a folder "
            "saved with save_pretrained, or run once with network access to fill the cache."
        ) from exc


@dataclass
class Runtime:
    """The ``runtime`` params resolved for this machine: device, batch size per task, decoding workers, cache."""

    device: str
    batch_sizes: dict[str, int]  # caption, embed_images, embed_texts
    num_workers: int
    cache: ResultCache | None
    decode: str  # runtime.decode as asked (auto, cpu, gpu), resolved per model by the job; Ray decodes on CPUs: cpu
    auto_batches: frozenset[str] = frozenset()  # the tasks whose batch size was asked as auto

    def batch_for(self, task: str, family: Any = None) -> int:
        """The batch size of ``task``; where it was ``auto``, the model family's own starting size if it has one
        (:meth:`capsearch.models.families.ModelFamily.auto_batch`: instruction VLMs, whose images take many tokens
        in the prompt)."""
        own = family.auto_batch(self.device) if task in self.auto_batches and family is not None else None
        return own or self.batch_sizes[task]

    def cache_note(self) -> str:
        """Where results are cached, for a summary line."""
        return f"cache {self.cache.path}" if self.cache is not None else "cache off"


def resolve_runtime(params: RuntimeParams, use_cache: bool = True) -> Runtime:
    """``auto`` values resolved for this machine, the result cache opened (``use_cache=False``: not opened)."""
    from capsearch.models.batching import resolve_batch_size, resolve_num_workers

    device = resolve_device(params.device)
    batch_sizes = {
        task: resolve_batch_size(size, task, device, f"runtime.batch_size.{task}")
        for task, size in params.batch_size.items()
    }
    cache = None
    if params.cache and use_cache:
        try:
            cache = ResultCache(params.cache_dir)
        except OSError as exc:
            message = f"runtime.cache_dir: cannot use the result cache ({exc}); fix it or set runtime.cache: false"
            raise ValueError(message) from exc
    decode = params.decode if params.engine == "local" else "cpu"
    auto = frozenset(task for task, size in params.batch_size.items() if size == "auto")
    workers = resolve_num_workers(params.num_workers, device)
    return Runtime(device.type, batch_sizes, workers, cache, decode, auto)
