"""Teacher-forced fine-tuning of a captioner on reference captions, validated by CIDEr-D of greedy captions on dev.

The loss is the family's own language-model loss (``forward(labels=...)``): BLIP's decoder from its [DEC] token
(with its label smoothing), GIT's causal LM after the image tokens, a VisionEncoderDecoder's decoder from its
start token, BLIP-2's language model after its query tokens (with the Q-Former and projection the only parts that
train, as BLIP-2 was trained). With ``caption.prompt`` set, each caption is trained as the prompt's continuation
and the prompt's tokens are not scored (as LAVIS trains BLIP). An instruction VLM (Florence-2, PaliGemma, LLaVA,
Gemma 3) is trained as it is asked (:func:`capsearch.models.asking.teacher_forced`): its prompt, image tokens and
template as they are built for captioning, then the caption and the end token, which alone are scored. The loop is
:mod:`capsearch.finetune.loop`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from capsearch.evaluation.coco_captions import bleu_of, cider_d_of, tokenize_pairs
from capsearch.finetune.checkpoint import CheckpointStore
from capsearch.finetune.loop import Logger, Named, Outcome, Pairs, Task, add_lora, train
from capsearch.models.asking import IGNORE, teacher_forced
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.pixels import probe_image
from capsearch.params import FinetuneCaptionerParams

# the image encoder of each family (freeze: vision); BLIP-2 trains only what follows its prefixes in ``BLIP2_TRAINS``
VISION = {
    "blip": ("vision_model.",),
    "git": ("git.image_encoder.",),
    "vision-encoder-decoder": ("encoder.",),
    "blip-2": ("vision_model.",),
    "florence2": ("model.vision_tower.",),
    "paligemma": ("model.vision_tower.",),
    "llava": ("model.vision_tower.",),
    "gemma3": ("model.vision_tower.",),
}
BLIP2_TRAINS = ("qformer.", "query_tokens", "language_projection.")
LORA_TARGETS = ["query", "key", "value", "qkv", "q_proj", "k_proj", "v_proj", "out_proj"]


class CaptioningTask(Task):
    """A captioner trained on (image, reference caption) pairs; the best epoch has the highest dev CIDEr-D."""

    score = "CIDEr-D"

    def __init__(
        self,
        captioner: Captioner,
        p: FinetuneCaptionerParams,
        decoding: DecodingSettings,
        batch_size: int,
        workers: int,
    ) -> None:
        if captioner.family.prepared_by_processor:
            raise ValueError(
                f"{p.name('epochs')}: finetune_captioner does not train {captioner.family.model_type} captioners yet "
                "(their processor tiles each image or gives it its own patch grid); set it to 0 to caption with the "
                "model as it is"
            )
        if captioner.family.model_type == "vision-encoder-decoder" and decoding.prompt:
            raise ValueError("caption.prompt: vision-encoder-decoder captioners take no prompt")
        if p.lora_rank and captioner.family.model_type == "blip-2":
            raise ValueError(
                f"{p.name('lora_rank')}: BLIP-2 fine-tunes its Q-Former and projection only (its language model "
                "stays fixed); set lora_rank: 0"
            )
        self.captioner, self.p, self.batch_size, self.workers = captioner, p, batch_size, workers
        self.greedy = DecodingSettings(1, decoding.max_new_tokens, decoding.min_new_tokens, decoding.prompt)
        self.wrapper, self.model = captioner, captioner.model
        self.device, self.pixels = captioner.device, captioner.pixels
        self.kind = captioner.family.model_type
        self.peft_model: Any = None

    def trainable(self) -> Named:
        if self.p.lora_rank:
            self.peft_model = add_lora(self.model, self.p.lora_rank, LORA_TARGETS, self.p.name("lora_rank"))
            return [(name, parameter) for name, parameter in self.model.named_parameters() if parameter.requires_grad]
        fixed = VISION[self.kind] if self.p.freeze == "vision" else ()
        chosen = []
        for name, parameter in self.model.named_parameters():
            trains = not name.startswith(fixed) if fixed else True
            if self.kind == "blip-2":
                trains = name.startswith(BLIP2_TRAINS)
            parameter.requires_grad_(trains)
            if trains:
                chosen.append((name, parameter))
        return chosen

    def loss(self, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
        inputs = teacher_inputs(self.captioner, texts, self.greedy.prompt)
        inputs = {name: value.to(self.device) for name, value in inputs.items()}
        normalised = self.captioner.pixels.normalise(pixels, torch.float32)
        return self.forward(pixel_values=normalised, **inputs).loss

    def evaluate(self, dev: Pairs) -> dict[str, Any]:
        return dev_metrics(self.captioner, dev, self.greedy, self.batch_size, self.workers)

    def finish(self) -> None:
        if self.peft_model is not None:
            self.peft_model.merge_and_unload()


def captioning_task(
    model: str, revision: str | None, p: FinetuneCaptionerParams, decoding: DecodingSettings, batch_size: int,
    workers: int, device: Any,
) -> CaptioningTask:  # fmt: skip
    """The task of fine-tuning captioner ``model`` on ``device`` (what each Ray Train worker builds)."""
    return CaptioningTask(Captioner(model, revision, "fp32", str(device)), p, decoding, batch_size, workers)


def dev_metrics(
    captioner: Captioner, dev: Pairs, greedy: DecodingSettings, batch_size: int, workers: int
) -> dict[str, Any]:
    """CIDEr-D and BLEU-4 (COCO's, x100, as the evaluate stage reports them) of ``captioner``'s captions of the dev
    images against their references."""
    captions = captioner.caption_images(dev.source, dev.image_ids, greedy, batch_size, workers)
    candidates = dict(zip(dev.image_ids, captions, strict=True))
    tokenized = tokenize_pairs(candidates, dict(zip(dev.image_ids, dev.captions, strict=True)))
    cider, _ = cider_d_of(tokenized)
    bleu_corpus, _ = bleu_of(tokenized)
    return {"CIDEr-D": round(100 * cider, 4), "BLEU-4": round(100 * bleu_corpus["BLEU-4"], 4)}


def teacher_inputs(captioner: Captioner, texts: Sequence[str], prompt: str | None) -> dict[str, torch.Tensor]:
    """The token inputs and labels of a batch of captions for ``captioner``'s family: padding and the prompt's
    tokens labelled -100, every caption ending with the end token generation stops at."""
    kind, tokenizer = captioner.family.model_type, captioner.tokenizer
    if captioner.family.asking != "continuation":  # an instruction VLM: asked as it captions, the answer scored
        return teacher_forced(captioner.family.asking, tokenizer, captioner.asked(prompt), list(texts))
    config = captioner.model.config
    full = [f"{prompt} {text}" if prompt else text for text in texts]
    if kind == "vision-encoder-decoder":
        ids = _with_end([tokenizer(text)["input_ids"] for text in full], tokenizer.eos_token_id)
        start = config.decoder_start_token_id
        ids = [row[1:] if row and row[0] == start else row for row in ids]  # the model prepends its start token
        return {"labels": _padded(ids, IGNORE)}
    if kind == "blip-2":  # a decoder-only language model: the end token is appended, padding goes right
        inner = captioner.processor.tokenizer
        ended = [text + inner.eos_token if inner.eos_token else text for text in full]
        side, inner.padding_side = inner.padding_side, "right"
        try:
            encoded = captioner.processor(
                images=[probe_image()] * len(ended), text=ended, padding=True, return_tensors="pt"
            )
        finally:
            inner.padding_side = side
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        labels = ids.masked_fill(mask == 0, IGNORE).masked_fill(ids == config.image_token_id, IGNORE)
        labels = _mask_prompt(labels, captioner, prompt, skip=int((ids[0] == config.image_token_id).sum()))
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
    limit = min(tokenizer.model_max_length, _text_positions(config))
    encoded = tokenizer(full, padding=True, truncation=True, max_length=limit, return_tensors="pt")
    ids, mask = encoded["input_ids"].clone(), encoded["attention_mask"]
    if kind == "blip":
        ids[:, 0] = config.text_config.bos_token_id  # BLIP decodes from [DEC] in place of [CLS]
    labels = _mask_prompt(ids.masked_fill(mask == 0, IGNORE), captioner, prompt, skip=0)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _text_positions(config: Any) -> int:
    text = getattr(config, "text_config", None) or config
    return int(getattr(text, "max_position_embeddings", 512))


def _mask_prompt(labels: torch.Tensor, captioner: Captioner, prompt: str | None, skip: int) -> torch.Tensor:
    """``labels`` with the prompt's tokens (after ``skip`` image tokens) not scored."""
    if not prompt:
        return labels
    ids = captioner.asked(prompt).inputs["input_ids"]
    # the prompt's tokens as generation starts from them (start token included, BLIP's trailing [SEP] not)
    length = ids.shape[1] - skip - int(int(ids[0, -1]) == captioner.tokenizer.sep_token_id)
    labels = labels.clone()
    labels[:, skip : skip + length] = IGNORE
    return labels


def _with_end(rows: list[list[int]], end: int | None) -> list[list[int]]:
    if end is None:
        return rows
    return [row if row and row[-1] == end else [*row, end] for row in rows]


def _padded(rows: list[list[int]], fill: int) -> torch.Tensor:
    width = max(len(row) for row in rows)
    return torch.tensor([row + [fill] * (width - len(row)) for row in rows], dtype=torch.long)


def finetune_captioner(
    captioner: Captioner,
    train_pairs: Pairs,
    dev: Pairs,
    p: FinetuneCaptionerParams,
    *,
    decoding: DecodingSettings,
    batch_size: int,
    workers: int,
    checkpoints: CheckpointStore,
    checkpoint_steps: int,
    logger: Logger | None = None,
) -> Outcome:
    """Train ``captioner.model`` in place for ``p.epochs`` epochs on ``train_pairs`` and leave in it the weights of
    the epoch with the best dev CIDEr-D (greedy captions with ``decoding``'s lengths and prompt, ``batch_size``
    images at a time); see :func:`capsearch.finetune.loop.train`."""
    task = CaptioningTask(captioner, p, decoding, batch_size, workers)
    return train(task, train_pairs, dev, p, workers=workers, checkpoints=checkpoints,
                 checkpoint_steps=checkpoint_steps, logger=logger, desc="fine-tune captioner")  # fmt: skip
