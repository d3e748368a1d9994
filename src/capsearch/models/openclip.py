"""The open_clip family of ``clip.model``: LAION, DataComp, DFN, MetaCLIP, EVA, MobileCLIP, timm's SigLIP towers.

Three ways to name one, as open_clip itself does:

* ``hf-hub:org/name``: a Hub repo in open_clip's layout (``open_clip_config.json`` and the weights), resolved to one
  commit like every hub id (:func:`capsearch.models.runtime.resolve_model`), then loaded from the Hub's cache (offline
  with a pinned commit);
* ``ARCH/TAG``, open_clip's built-in names (``ViT-B-32/laion2b_s34b_b79k``): the architecture's config from the
  open_clip package, the weights from the Hub repo open_clip names for the tag (refused where it names only a URL);
* a local folder holding ``open_clip_config.json``.

Weights load from safetensors (``open_clip_model.safetensors`` first); a repo or folder with only a pickle
(``open_clip_pytorch_model.bin``) loads through torch's weights-only loader, and :attr:`OpenClipEncoder.weights_note`
says so for the stage summary. No remote code is run.

Preprocessing is capsearch's fast pipeline (:class:`capsearch.models.pixels.PixelPipeline`) set from open_clip's
preprocess config and checked, on a probe image at load, against open_clip's own transform (torchvision); a resize
mode it cannot reproduce (``longest``: resize and pad) is refused in one line. Tokenizers are open_clip's own
(``get_tokenizer``: its BPE, the HF tokenizer of an HF text tower, SigLIP's). Embeddings are open_clip's
``encode_image`` / ``encode_text``, L2-normalised, so they equal open_clip's own code's on the same inputs.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from capsearch.cache import COMMIT
from capsearch.hub import offline_when_unreachable
from capsearch.models import ModelLoadError
from capsearch.models.base import PIXEL_TOLERANCE
from capsearch.models.batching import RunStats
from capsearch.models.embedder import DualEncoder, normalised
from capsearch.models.families import ModelFamily, TextSettings, checked_model_type, read_config
from capsearch.models.open_clip_names import HUB_PREFIX, OPEN_CLIP_CONFIG, builtin_architecture
from capsearch.models.pixels import PixelPipeline, probe_image
from capsearch.models.runtime import ModelSource, _hub_error, precision_param, resolve_device, resolve_precision
from capsearch.versions import library_versions

SAFE_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "model.safetensors")
PICKLED_WEIGHTS = ("open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth", "pytorch_model.bin")
RESAMPLE = {"bicubic": 3, "bilinear": 2, "nearest": 0}  # open_clip's interpolation names -> PIL filters


@dataclass(frozen=True)
class OpenClipSource(ModelSource):
    """Where an open_clip model's files are: a :class:`ModelSource`, plus the config (model and preprocessing) and
    the one weights file."""

    config: dict[str, Any] = field(default_factory=dict)  # open_clip_config.json's model_cfg and preprocess_cfg
    weights: Path = Path()
    architecture: str = ""  # the built-in architecture, or the config's folder name for hub and local models

    @property
    def builtin(self) -> bool:
        """Whether it is a built-in ARCH/TAG (its config from the open_clip package, its weights from the Hub)."""
        return self.commit is not None and not self.model_id.startswith(HUB_PREFIX)

    @property
    def pickled(self) -> bool:
        """Whether the weights are a pickle (loaded with torch's weights-only loader)."""
        return self.weights.suffix != ".safetensors"

    @property
    def note(self) -> str:
        """How the weights were read, for summaries (a pickle: said; safetensors: nothing)."""
        return f"{self.weights.name}: a pickle, read with torch's weights-only loader" if self.pickled else ""


def _read_config(path: Path, param: str) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{param}: cannot read {path}: {exc}") from exc
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise ModelLoadError(f"{param}: {path} has no model_cfg mapping (not an open_clip config)")
    return config


def check_text_tower(config: dict[str, Any], param: str) -> None:
    """Refuse, before open_clip reads them, an HF text tower (BiomedCLIP's PubMedBERT) or its tokenizer whose config
    names remote code (``auto_map``) or a model type transformers does not know: transformers would otherwise ask
    on the terminal whether to run the repo's code."""
    text = config["model_cfg"].get("text_cfg", {})
    for name, file in (
        (text.get("hf_model_name"), "config.json"),
        (text.get("hf_tokenizer_name"), "tokenizer_config.json"),
    ):
        path = _tower_file(name, file, param) if name else None
        if path is None:
            continue
        if file == "config.json":
            checked_model_type(read_config(path, param), param)
        elif read_config(path, param).get("auto_map"):
            raise ModelLoadError(
                f"{param}: the text tower's tokenizer needs its own code from {name} (auto_map in {file}); capsearch "
                "never runs remote code (trust_remote_code)"
            )


def _tower_file(name: str, file: str, param: str) -> Path | None:
    """``file`` of the text tower ``name`` (a folder, or a Hub repo at its main branch, as open_clip reads it);
    None where the tower has no such file."""
    local = Path(name).expanduser()
    if local.is_dir():
        return local / file if (local / file).is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(name, file))
    except LocalEntryNotFoundError as exc:
        raise _hub_error(param, name, "main", exc) from exc
    except EntryNotFoundError:
        return None
    except OSError as exc:
        raise _hub_error(param, name, "main", exc) from exc


def _local_weights(folder: Path, param: str) -> Path:
    for name in (*SAFE_WEIGHTS, *PICKLED_WEIGHTS):
        if (folder / name).is_file():
            return folder / name
    names = ", ".join((*SAFE_WEIGHTS, *PICKLED_WEIGHTS))
    raise ModelLoadError(f"{param}: {folder} has open_clip_config.json but no weights ({names})")


def _hub_file(repo: str, names: Sequence[str], revision: str, param: str, shown: str) -> Path | None:
    """The first of ``names`` the repo has at ``revision``, downloaded (None when it has none of them)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    for name in names:
        try:
            return Path(hf_hub_download(repo, name, revision=revision))
        except LocalEntryNotFoundError as exc:
            raise _hub_error(param, shown, revision, exc) from exc
        except EntryNotFoundError:
            continue
        except OSError as exc:
            raise _hub_error(param, shown, revision, exc) from exc
    return None


def _hub_weights(repo: str, commit: str, param: str, shown: str) -> Path:
    found = _hub_file(repo, SAFE_WEIGHTS, commit, param, shown) or _hub_file(
        repo, PICKLED_WEIGHTS, commit, param, shown
    )
    if found is None:
        raise ModelLoadError(
            f"{param}: {shown!r} at commit {commit} has no open_clip weights ({', '.join(SAFE_WEIGHTS)})"
        )
    return found


def _resolve_hub(repo: str, revision: str | None, param: str, shown: str) -> tuple[str, Path]:
    """The commit ``revision`` names in ``repo`` and the config file at it (a repo without one is refused)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HFValidationError

    offline_when_unreachable()
    asked = revision or "main"
    try:
        config = Path(hf_hub_download(repo, OPEN_CLIP_CONFIG, revision=asked))
    except EntryNotFoundError:
        raise ModelLoadError(
            f"{param}: {shown!r} has no {OPEN_CLIP_CONFIG} at revision {asked!r}: not an open_clip repo"
        ) from None
    except (OSError, HFValidationError) as exc:
        raise _hub_error(param, shown, asked, exc) from exc
    commit = config.parent.name
    if not COMMIT.fullmatch(commit):
        raise ModelLoadError(f"{param}: unexpected hub cache layout at {config}")
    return commit, config


def resolve_open_clip(model_id: str, revision: str | None, param: str) -> OpenClipSource:
    """Check a local folder, or resolve a hub or built-in name to one commit and its files (see the module)."""
    local = Path(model_id).expanduser()
    if local.is_dir():
        config = _read_config(local / OPEN_CLIP_CONFIG, param)
        return OpenClipSource(model_id, revision, None, config, _local_weights(local, param), local.name)
    if model_id.startswith(HUB_PREFIX):
        repo = model_id[len(HUB_PREFIX) :]
        commit, config_path = _resolve_hub(repo, revision, param, model_id)
        config = _read_config(config_path, param)
        return OpenClipSource(model_id, revision, commit, config, _hub_weights(repo, commit, param, model_id), repo)
    architecture, tag = builtin_architecture(model_id, param)
    import open_clip

    pretrained = open_clip.get_pretrained_cfg(architecture, tag)
    if not pretrained:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(architecture)) or "none"
        raise ModelLoadError(f"{param}: open_clip has no pretrained tag {tag!r} for {architecture}; its tags: {tags}")
    repo = str(pretrained.get("hf_hub", "")).strip("/")
    if not repo:
        raise ModelLoadError(
            f"{param}: {model_id!r}'s weights are only at a URL ({pretrained.get('url')}), not on the Hugging Face "
            "Hub, so they cannot be pinned to a commit; name a Hub repo of the same weights (hf-hub:org/name)"
        )
    offline_when_unreachable()
    weights = _hub_weights(repo, revision or "main", param, model_id)
    preprocess = {key: pretrained[key] for key in ("mean", "std", "interpolation", "resize_mode") if key in pretrained}
    config = {"model_cfg": open_clip.get_model_config(architecture), "preprocess_cfg": preprocess}
    return OpenClipSource(model_id, revision, weights.parent.name, config, weights, architecture)


def pipeline_of(config: dict[str, Any], param: str) -> PixelPipeline:
    """capsearch's pixel pipeline for an open_clip preprocess config, checked on a probe image against open_clip's
    own transform; a resize mode it cannot reproduce is refused naming ``param``."""
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    vision = config["model_cfg"].get("vision_cfg", {})
    merged = merge_preprocess_dict(
        {**vars(PreprocessCfg()), "size": vision.get("image_size", 224)}, config.get("preprocess_cfg", {})
    )
    cfg = PreprocessCfg(**merged)
    height, width = (cfg.size, cfg.size) if isinstance(cfg.size, int) else tuple(cfg.size)
    if cfg.interpolation not in RESAMPLE:
        raise ModelLoadError(f"{param}: open_clip interpolation {cfg.interpolation!r} is not supported")
    common = {
        "resample": RESAMPLE[cfg.interpolation],
        "rescale": 1 / 255,
        "mean": tuple(cfg.mean),
        "std": tuple(cfg.std),
    }
    if cfg.resize_mode == "shortest" and height == width:
        pipeline = PixelPipeline(height, None, None, height, width, **common, centre="round")
    elif cfg.resize_mode == "squash":
        pipeline = PixelPipeline(None, height, width, None, None, **common)
    else:
        raise ModelLoadError(
            f"{param}: open_clip's resize mode {cfg.resize_mode!r} (size {cfg.size}) is not one capsearch reproduces "
            "(shortest edge with a square crop, or squash)"
        )
    difference = transform_difference(pipeline, image_transform_v2(cfg, is_train=False))
    if not difference <= PIXEL_TOLERANCE:
        raise ModelLoadError(
            f"{param}: capsearch's preprocessing does not reproduce open_clip's transform (largest pixel difference "
            f"{difference:.3g}), so its results would not be the model's"
        )
    return pipeline


def _tokenizer(source: OpenClipSource, folder: Path) -> Any:
    """open_clip's tokenizer for the model: an HF text tower's own (``hf_tokenizer_name``, as open_clip loads it for
    a Hub model), else what ``get_tokenizer`` picks from the config (its BPE, SigLIP's)."""
    import open_clip

    text = source.config["model_cfg"].get("text_cfg", {})
    if text.get("hf_tokenizer_name"):
        from open_clip.tokenizer import HFTokenizer

        return HFTokenizer(
            text["hf_tokenizer_name"], context_length=text.get("context_length", 77),
            tokenizer_mode=text.get("tokenizer_mode"), **text.get("tokenizer_kwargs", {}),
        )  # fmt: skip
    if source.builtin:
        return open_clip.get_tokenizer(source.architecture)
    return open_clip.get_tokenizer("local-dir:" + str(folder))


PROBE_SIZES = ((123, 87), (125, 87))  # the second's centre crop starts half a pixel in: floor and round differ


def transform_difference(pipeline: PixelPipeline, transform: Any) -> float:
    """Largest absolute difference between ``pipeline`` and open_clip's ``transform`` (torchvision) on probe images
    (inf when the shapes differ)."""
    worst = 0.0
    for width, height in PROBE_SIZES:
        image = probe_image(width, height)
        expected = transform(image).unsqueeze(0)
        ours = pipeline.normalise(pipeline(image).unsqueeze(0), torch.float32)
        if expected.shape != ours.shape:
            return float("inf")
        worst = max(worst, float((expected - ours).abs().max()))
    return worst


class OpenClipEncoder(DualEncoder):
    """An open_clip dual encoder, with the interface of :class:`DualEncoder` (see the module)."""

    # fine-tuning: the towers of ``CLIP`` (its text transformer at the top level) and ``CustomTextCLIP`` (``text.``),
    # and the attention of open_clip's own transformer (``nn.MultiheadAttention``), timm's and an HF text tower's
    towers: ClassVar[dict[str, tuple[str, ...]]] = {
        "vision": ("visual.",),
        "text": ("text.", "transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection"),
    }
    lora_targets: ClassVar[tuple[str, ...]] = (
        "attn", "attn.qkv", "attn.proj", "attention.self.query", "attention.self.key", "attention.self.value",
        "attention.output.dense",
    )  # fmt: skip

    @classmethod
    def inspect(cls, model_id: str, revision: str | None, param: str) -> tuple[OpenClipSource, ModelFamily]:
        source = resolve_open_clip(model_id, revision, param)
        check_text_tower(source.config, param)
        return source, ModelFamily("open_clip", source.architecture)

    @classmethod
    def recipe_settings(cls, settings: None) -> dict[str, Any]:
        """open_clip's own libraries, which build the model and its tokenizer, enter the recipe too."""
        return {"libraries": library_versions(("open-clip-torch", "timm", "torchvision"))}

    @classmethod
    def pixel_pipeline_of(cls, model_id: str, revision: str | None, param: str) -> PixelPipeline:
        return pipeline_of(resolve_open_clip(model_id, revision, param).config, param)

    def __init__(
        self,
        model_id: str,
        revision: str | None = None,
        precision: str = "auto",
        device: str = "auto",
        param: str = "clip.model",
    ) -> None:
        import open_clip

        self.model_id, self.revision, self.precision, self.param = model_id, revision, precision, param
        self.device = resolve_device(device)
        self.dtype = resolve_precision(precision, self.device, precision_param(param))
        self.source, self.family = self.inspect(model_id, revision, param)
        self.pixels = pipeline_of(self.source.config, param)
        self.processor = self.image_processor = None
        folder = self.source.weights.parent
        try:
            if self.source.builtin:
                model = open_clip.create_model(self.source.architecture, pretrained=str(self.source.weights))
            else:
                model = open_clip.create_model("local-dir:" + str(folder))
            self.tokenizer = _tokenizer(self.source, folder)
        except (OSError, ValueError, RuntimeError, KeyError, pickle.UnpicklingError) as exc:
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise ModelLoadError(f"{param}: open_clip could not build {model_id!r}: {lines[0]}") from exc
        self.model = model.to(self.device, self.dtype).eval()
        self.context_length = int(self.tokenizer.context_length)
        self.text_settings = TextSettings()
        self.last_run = RunStats()
        self.last_text_run = RunStats()
        self._dim: int | None = None
        self._fingerprint: str | None = None

    @torch.inference_mode()
    def embed_pixels(self, pixels: torch.Tensor) -> np.ndarray:
        return normalised(self.model.encode_image(self.normalised_pixels(pixels)))

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        inner = getattr(self.tokenizer, "tokenizer", None)  # an HF text tower's tokenizer
        if inner is not None:
            return [len(ids) for ids in inner(list(texts))["input_ids"]]
        return [len(self.tokenizer.encode(text)) + 2 for text in texts]  # BPE ids plus start and end

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": self.tokenizer(list(texts))}

    @torch.inference_mode()
    def _embed_tokens(self, stacked: torch.Tensor) -> list[np.ndarray]:
        return list(normalised(self.model.encode_text(stacked[:, 0])))

    def train_embeddings(
        self, forward: Any, pixels: torch.Tensor, tokens: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        output = forward(image=pixels, text=tokens["input_ids"])  # normalised; a dict where output_dict is set
        if isinstance(output, dict):
            return output["image_features"], output["text_features"]
        return output[0], output[1]

    def save(self, folder: Any) -> None:
        """open_clip's layout (``open_clip_config.json``: the model and preprocess config; the weights as
        ``open_clip_model.safetensors``): a folder ``clip.model`` and open_clip itself (``local-dir:``) load. An HF
        text tower's config and tokenizer stay named by the config, as open_clip reads them."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = {key: self.source.config[key] for key in ("model_cfg", "preprocess_cfg") if key in self.source.config}
        (folder / OPEN_CLIP_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
        weights = {name: tensor.detach().contiguous().cpu() for name, tensor in self.model.state_dict().items()}
        save_file(weights, folder / SAFE_WEIGHTS[0])
