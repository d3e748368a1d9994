"""How a captioner is asked for a caption, and where its answer is: one way per kind of family.

* ``continuation`` (BLIP, BLIP-2, GIT, VisionEncoderDecoder): the caption continues an optional prompt
  (``caption.prompt``, e.g. BLIP's "a picture of"), which is removed from its start; null: the model's own start.
* ``task`` (Florence-2): the prompt is a task token (``<CAPTION>``, ``<DETAILED_CAPTION>``,
  ``<MORE_DETAILED_CAPTION>``) the model's processor turns into its task's text, after the image tokens, for the
  encoder; the answer is what the decoder generated, as the processor's own post-processing reads a text task
  (special tokens removed). Tasks whose answer is not text (``<OD>``: boxes) are refused.
* ``prefix`` (PaliGemma): the model's processor puts the image tokens, the prompt (``caption en``) and its
  separator before the answer; the answer is what the model generated after them.
* ``chat`` (LLaVA, Gemma 3): the prompt is the user's message beside the image, written by the model's own chat
  template with the generation prompt added; the answer is what the model generated after it, with the template's
  text and special tokens never part of it.

Which family asks which way, and each family's default prompt, is :mod:`capsearch.models.families`' table. The
prompt's token ids are built once per prompt by the model's processor (on a probe image: the families run here
have a fixed number of image tokens) and repeated for every image of a batch, so a batch needs no padding and a
batched caption equals the caption of the image alone. The answer is decoded without special tokens and its
whitespace normalised; it is never cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from capsearch.models import ModelLoadError
from capsearch.models.pixels import probe_image

# what a processor builds around a prompt that ``generate`` takes (not the pixels, not training labels)
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class Asked:
    """A prompt as the model is asked it: its text inputs (1, L), the text the template made of it, and (the
    continuation way) the prompt as decoded, removed from the start of each caption."""

    inputs: dict[str, torch.Tensor]
    text: str
    shown: str = ""

    @property
    def length(self) -> int:
        """How many tokens the prompt takes (where a decoder-only model's answer starts)."""
        return int(self.inputs["input_ids"].shape[1]) if self.inputs else 0


def ask(way: str, model_type: str, processor: Any, tokenizer: Any, prompt: str | None, param: str) -> Asked:
    """The inputs that ask a captioner of ``model_type`` for a caption ``way`` (see the module), with ``prompt``
    (None: the model's own start, for the continuation way only). ``param``: the model's param, for errors."""
    if way == "continuation":
        if not prompt:
            return Asked({}, "")
        if processor is not None:
            encoded = processor(images=[probe_image()], text=[prompt], return_tensors="pt")
        else:
            encoded = tokenizer([prompt], return_tensors="pt")
        ids, mask = encoded["input_ids"], encoded["attention_mask"]
        if model_type == "git" and int(ids[0, -1]) == tokenizer.sep_token_id:  # GIT continues from [CLS] + prompt
            ids, mask = ids[:, :-1], mask[:, :-1]
        shown = tokenizer.decode(ids[0], skip_special_tokens=True).strip()
        return Asked({"input_ids": ids, "attention_mask": mask}, prompt, shown)
    assert prompt, "the instruction ways always have a prompt (the family's default where caption.prompt is null)"
    text = prompt
    if way == "task":
        answer_kind = getattr(processor, "tasks_answer_post_processing_type", {}).get(prompt, "pure_text")
        if answer_kind != "pure_text":
            raise ModelLoadError(
                f"{param.rsplit('.', 1)[0]}.prompt: {prompt} answers with {answer_kind}, not a caption; use a text "
                "task such as <CAPTION>, <DETAILED_CAPTION> or <MORE_DETAILED_CAPTION>"
            )
    if way == "chat":
        if not getattr(processor, "chat_template", None):
            raise ModelLoadError(f"{param}: its processor has no chat template, so it cannot be asked for a caption")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
    encoded = processor(images=[probe_image()], text=[text], return_tensors="pt")
    return Asked({name: encoded[name] for name in TEXT_INPUTS if name in encoded}, text)


def answers(way: str, tokenizer: Any, output: torch.Tensor, asked: Asked, start: int | None = None) -> list[str]:
    """The captions in ``generate``'s ``output`` for a batch asked with ``asked`` (``start``: where the answers
    begin when the batch's prompts were built per image, left-padded to one length)."""
    if way == "task":  # an encoder-decoder: the output is the decoder's answer alone
        return [" ".join(text.split()) for text in tokenizer.batch_decode(output, skip_special_tokens=True)]
    if way == "continuation":
        texts = [text.strip() for text in tokenizer.batch_decode(output, skip_special_tokens=True)]
        shown = asked.shown
        return [text[len(shown) :].strip() if shown and text.startswith(shown) else text for text in texts]
    generated = output[:, asked.length if start is None else start :]  # decoder-only: the prompt comes back first
    return [" ".join(text.split()) for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]


def answer_tokens(way: str, tokenizer: Any, output: torch.Tensor, asked: Asked, start: int | None = None) -> int:
    """How many caption tokens ``generate`` produced for the batch in ``output`` (read as :func:`answers` reads it):
    the prompt and special tokens (start, end, padding, any a caption's decoding skips) not counted."""
    hidden = {i for i, token in getattr(tokenizer, "added_tokens_decoder", {}).items() if token.special}
    special = torch.tensor(sorted(hidden | set(tokenizer.all_special_ids)), dtype=output.dtype, device=output.device)
    if way == "task":
        return int((~torch.isin(output, special)).sum())
    if way == "continuation":  # the prompt's own tokens come back first, after the decoder's start token
        prompt = asked.inputs.get("input_ids")
        in_prompt = 0 if prompt is None else int((~torch.isin(prompt.to(output.device), special)).sum()) * len(output)
        return int((~torch.isin(output, special)).sum()) - in_prompt
    new = output[:, asked.length if start is None else start :]
    return int((~torch.isin(new, special)).sum())


def told(way: str, prompt: str | None) -> str:
    """What a run was asked, for a stage's summary: ``asked 'caption en' as its prefix`` (empty without a prompt)."""
    how = {"chat": " through its chat template", "prefix": " as its prefix", "task": " as its task"}.get(way, "")
    return f"asked {prompt!r}{how}" if prompt else ""


IGNORE = -100  # labels transformers' losses skip


def teacher_forced(way: str, tokenizer: Any, asked: Asked, texts: list[str]) -> dict[str, torch.Tensor]:
    """Training inputs of an instruction VLM asked with ``asked`` (prefix or chat): the prompt's ids as the model is
    asked (image tokens, template, generation prompt), then each text and the end token, right-padded. Labels score
    the text and its end token only (the prompt, the template and the padding are -100). Where the prompt has token
    types, the answer's are 1 for the prefix way (PaliGemma's suffix; its prefix is 0 and seen whole) and 0 for a
    chat model (Gemma 3 marks its image tokens 1). The task way (an encoder-decoder) gives the encoder the prompt and
    scores the decoder on ``<s>``, the text and ``</s>``, as Florence-2 is fine-tuned (its decoder starts from
    ``</s>``)."""
    if way == "task":
        rows = [
            [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]
            for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        ]
        labels = torch.full((len(rows), max(len(row) for row in rows)), IGNORE, dtype=torch.long)
        for row, ids in enumerate(rows):
            labels[row, : len(ids)] = torch.tensor(ids)
        return {**{name: value.repeat(len(rows), 1) for name, value in asked.inputs.items()}, "labels": labels}
    prompt = asked.inputs["input_ids"][0]
    answers = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    answers = [[*answer, tokenizer.eos_token_id] for answer in answers]
    width = len(prompt) + max(len(answer) for answer in answers)
    ids = torch.full((len(answers), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(answers), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(answers), width), dtype=torch.long)
    for row, answer in enumerate(answers):
        end = len(prompt) + len(answer)
        ids[row, : len(prompt)] = prompt
        ids[row, len(prompt) : end] = labels[row, len(prompt) : end] = torch.tensor(answer)
        mask[row, :end] = 1
    inputs = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    if "token_type_ids" in asked.inputs:
        types = torch.full((len(answers), width), int(way == "prefix"), dtype=torch.long)
        types[:, : len(prompt)] = asked.inputs["token_type_ids"][0]
        inputs["token_type_ids"] = types
    return inputs
