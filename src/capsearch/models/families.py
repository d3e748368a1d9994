"""Which model a checkpoint is, read from its ``config.json`` alone: what capsearch runs, and how, or why not.

The Auto classes of transformers pick the model class from the config's ``model_type``; this module decides,
before any weights or images are read, whether that class can do the job of its param:

* ``clip.model``: a dual encoder, a model with ``get_image_features`` and ``get_text_features`` (CLIP, SigLIP,
  fixed-resolution SigLIP 2, ALIGN, ...). Its text settings are those it was trained with: SigLIP's text tower saw
  lower-cased text padded to its full 64 tokens and no attention mask (the pad token is its end token and the
  pooled output is the last position), CLIP's saw text padded to the longest with a mask.
* ``caption.model``: an image-to-text generator of a family whose generation capsearch knows: BLIP, BLIP-2, GIT,
  VisionEncoderDecoder (ViT-GPT2 and the like), and the instruction VLMs Florence-2 (a task token), PaliGemma (a
  prefix prompt), LLaVA,
  Gemma 3, SmolVLM / Idefics3 and Qwen2-VL / Qwen2.5-VL (a chat template); :data:`CAPTIONERS` says how each is asked
  and its default prompt, :data:`PREPARED_BY_PROCESSOR` which give each image its own tiles or patch grid (their
  processor prepares the images). Instruction VLMs not verified here (:data:`NOT_YET`) are refused in one line, as
  are remote-code repos, naming the native checkpoints where transformers has them.

A config naming remote code (``auto_map``), a model type transformers does not know, a classifier or a model
of the other kind is refused with one line naming the param.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capsearch.models import ModelLoadError

CHAT_PROMPT = "Describe this image in one sentence."  # the default instruction of the chat-template families
# model type -> how it is asked for a caption (capsearch.models.asking) and its default caption.prompt
CAPTIONERS: dict[str, tuple[str, str | None]] = {
    "blip": ("continuation", None),
    "blip-2": ("continuation", None),
    "git": ("continuation", None),
    "vision-encoder-decoder": ("continuation", None),  # starts from its decoder's BOS: takes no prompt
    "florence2": ("task", "<CAPTION>"),  # native Florence-2 (florence-community/Florence-2-base, -large)
    "paligemma": ("prefix", "caption en"),
    "llava": ("chat", CHAT_PROMPT),
    "gemma3": ("chat", CHAT_PROMPT),
    "idefics3": ("chat", CHAT_PROMPT),  # SmolVLM (256M, 500M, 2.2B) and Idefics3
    "qwen2_vl": ("chat", CHAT_PROMPT),
    "qwen2_5_vl": ("chat", CHAT_PROMPT),
}
CAPTIONER_FAMILIES = tuple(CAPTIONERS)
PROMPT_FAMILIES = tuple(family for family in CAPTIONERS if family != "vision-encoder-decoder")
# VLMs whose processor gives each image its own tiles or patch grid: it prepares their images in the decode workers
# (capsearch.models.processed), and what it does to an image is named in the summary of a refusal
PREPARED_BY_PROCESSOR = {
    "idefics3": "splits each image into tiles",
    "qwen2_vl": "resizes each image to its own patch grid",
    "qwen2_5_vl": "resizes each image to its own patch grid",
}
# instruction VLMs of that kind not run yet: their batching by the processor is not verified here
NOT_YET = {
    "smolvlm": "splits each image into tiles", "qwen3_vl": "resizes each image to its own patch grid",
    "llava_onevision": "tiles each image (anyres)", "llava_next": "tiles each image (anyres)",
    "internvl": "tiles each image", "mllama": "tiles each image and attends to them by cross-attention",
}  # fmt: skip
# starting caption batches (runtime.batch_size.caption: auto, backing off on out-of-memory) of instruction VLMs, whose
# images are hundreds of tokens in the prompt (PaliGemma 256, LLaVA 576) or their processor's many (SmolVLM up to
# 17 tiles of 64, Qwen2-VL up to thousands); the continuation families start at the task's own (models.batching)
VLM_CAPTION_BATCH = {"fixed": {"cuda": 64, "cpu": 4}, "processor": {"cuda": 16, "cpu": 2}}
# remote-code model types (auto_map) that transformers now ships natively, and where the native checkpoints are
NATIVE = {
    "florence2": "florence-community/Florence-2-base (or -large), which transformers runs natively",
    "internvl_chat": "the -hf checkpoints such as OpenGVLab/InternVL3-1B-hf, which transformers runs natively",
}


@dataclass(frozen=True)
class TextSettings:
    """How a dual encoder's text tower was trained to see text."""

    padding: str = "longest"  # or "max_length": every text padded to the context length
    attention_mask: bool = True  # SigLIP: none (pads are attended, as in training)
    lowercase: bool = False


# model_type -> its text settings, where they differ from CLIP's
TEXT_SETTINGS = {"siglip": TextSettings(padding="max_length", attention_mask=False, lowercase=True)}


@dataclass(frozen=True)
class ModelFamily:
    """A checkpoint's ``model_type``, the class its Auto class loads, and (dual encoders) its text settings."""

    model_type: str
    architecture: str
    text: TextSettings | None = None

    @property
    def prepared_by_processor(self) -> bool:
        """Whether the model's own processor prepares its images (tiles, a patch grid per image) in the decode
        workers, instead of capsearch's fixed-size pipeline."""
        return self.model_type in PREPARED_BY_PROCESSOR

    def auto_batch(self, device_type: str) -> int | None:
        """This family's starting caption batch on ``device_type`` for ``auto``, where it has its own (None: the
        task's)."""
        if self.model_type not in CAPTIONERS or self.asking == "continuation":
            return None
        sizes = VLM_CAPTION_BATCH["processor" if self.prepared_by_processor else "fixed"]
        return sizes["cuda" if device_type == "cuda" else "cpu"]

    @property
    def asking(self) -> str:
        """How a captioner of this family is asked for a caption (:mod:`capsearch.models.asking`)."""
        return CAPTIONERS[self.model_type][0]

    def prompt(self, asked: str | None) -> str | None:
        """The prompt a captioner of this family runs with for ``caption.prompt`` = ``asked`` (None: its default)."""
        return asked or CAPTIONERS[self.model_type][1]


def read_config(path: str | Path, param: str) -> dict[str, Any]:
    """A checkpoint's ``config.json`` as a mapping; a missing or malformed one is an error naming ``param``."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{param}: cannot read the model's config.json ({path}): {exc}") from exc
    if not isinstance(config, dict):
        raise ModelLoadError(f"{param}: the model's config.json ({path}) is not a mapping")
    return config


def checked_model_type(config: dict[str, Any], param: str) -> str:
    """The config's model type, after refusing remote code and types transformers does not know."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if config.get("auto_map"):
        native = NATIVE.get(str(config.get("model_type")))
        raise ModelLoadError(
            f"{param}: the model needs its own code from the repo (auto_map in config.json); capsearch never runs "
            "remote code (trust_remote_code). "
            + (f"Use {native}" if native else "Choose a checkpoint of a family transformers ships")
        )
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING_NAMES:
        raise ModelLoadError(
            f"{param}: model type {model_type!r} is unknown to transformers (it would need remote code, which "
            "capsearch never runs, or a newer transformers)"
        )
    return str(model_type)


def _architectures(config: dict[str, Any]) -> list[str]:
    return [str(a) for a in config.get("architectures") or []]


def _holds(config: dict[str, Any], architecture: str | None) -> bool:
    """Whether the checkpoint holds ``architecture``'s weights (a config listing none is taken at its word)."""
    listed = _architectures(config)
    return architecture is not None and (not listed or architecture in listed)


def _role(model_type: str, config: dict[str, Any]) -> str:
    """What a model of another kind is, for the refusal: a classifier, a captioner, a dual encoder, or a model."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    architectures = _architectures(config)
    if any(a.endswith(("ForImageClassification", "ForSequenceClassification")) for a in architectures):
        return f"an image classifier ({architectures[0]}): it gives class scores, not image and text embeddings"
    if _holds(config, MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.get(model_type)):
        return f"an image-to-text generator ({', '.join(architectures) or model_type}): set it as caption.model"
    if _holds(config, _dual_encoder_class(model_type)):
        return f"a dual encoder ({', '.join(architectures) or model_type}): set it as clip.model"
    return f"a {model_type} model ({', '.join(architectures) or 'no architectures listed'})"


def _dual_encoder_class(model_type: str) -> str | None:
    """The AutoModel class of ``model_type`` if it exposes both image and text features."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    name = MODEL_MAPPING_NAMES.get(model_type)
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    if cls is None or not (hasattr(cls, "get_image_features") and hasattr(cls, "get_text_features")):
        return None
    return str(name)


def embedder_family(config: dict[str, Any], param: str = "clip.model") -> ModelFamily:
    """The family of a dual encoder's config; anything else is refused with one line naming ``param``."""
    model_type = checked_model_type(config, param)
    architecture = _dual_encoder_class(model_type)
    if architecture is None or not _holds(config, architecture):
        raise ModelLoadError(
            f"{param}: the model is {_role(model_type, config)}; {param} needs a dual encoder with image and text "
            "features (CLIP, SigLIP, ...)"
        )
    if model_type == "siglip2":
        raise ModelLoadError(
            f"{param}: SigLIP 2 NaFlex checkpoints (model type siglip2) resize each image to its own patch grid, "
            "which capsearch's batched preprocessing does not reproduce; use a fixed-resolution SigLIP 2 "
            "checkpoint (e.g. google/siglip2-base-patch16-224, model type siglip)"
        )
    return ModelFamily(model_type, architecture, TEXT_SETTINGS.get(model_type, TextSettings()))


def captioner_family(config: dict[str, Any], param: str = "caption.model") -> ModelFamily:
    """The family of an image-to-text generator's config; anything else is refused with one line naming ``param``."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    model_type = checked_model_type(config, param)
    architecture = MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES.get(model_type)
    if model_type in NOT_YET and _holds(config, architecture):
        raise ModelLoadError(
            f"{param}: {model_type} captioners are not run yet: the model's processor {NOT_YET[model_type]}, and "
            "capsearch's batching of what it makes is not verified for this family; instruction VLMs it runs: "
            f"{', '.join(f for f, (way, _) in CAPTIONERS.items() if way != 'continuation')}"
        )
    if model_type not in CAPTIONER_FAMILIES or not _holds(config, architecture):
        what = _role(model_type, config)
        if model_type not in CAPTIONER_FAMILIES and _holds(config, architecture):
            what = f"a {model_type} image-text model, whose generation capsearch does not drive"
        raise ModelLoadError(
            f"{param}: the model is {what}; {param} needs a captioner of a family capsearch runs "
            f"({', '.join(CAPTIONER_FAMILIES)})"
        )
    return ModelFamily(model_type, str(architecture))


def check_prompt(family: ModelFamily, prompt: str | None, param: str = "caption.prompt") -> None:
    """A prompt is for families that continue one; VisionEncoderDecoder captioners take none."""
    if prompt and family.model_type not in PROMPT_FAMILIES:
        raise ModelLoadError(
            f"{param}: {family.model_type} captioners take no prompt (they start from their decoder's first "
            "token); set it to null"
        )
