"""Images prepared by the model's own processor, one at a time in the decode workers: for instruction VLMs whose
processor gives each image its own tiles or patch grid (SmolVLM / Idefics3 image splitting, Qwen-VL's dynamic
resolution), which capsearch's fixed-size fast path (:mod:`capsearch.models.pixels`) cannot reproduce.

A worker calls the processor on one image with the prompt as the chat template wrote it: the processor resizes,
splits and normalises the image and writes that image's own number of image tokens into the prompt. The main
process joins the images of a batch as the processor would join them itself (tested equal, tensor by tensor):
the prompts left-padded with the pad token (their masks and token types with 0), every other tensor concatenated
along its first axis, zero-padded where images differ in size (Idefics3's tiles per image). So a batch is what the
processor makes of the same images and prompts, and each image is read and decoded once, in a worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

# per-token inputs of a prompt: left-padded when prompts of one batch differ in length (input_ids with the pad id)
PROMPT_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids")

Row = dict[str, torch.Tensor]


@dataclass(frozen=True)
class ProcessorPipeline:
    """The model's processor asked with ``text`` (the prompt as its chat template wrote it, with the image's place);
    a row is its output for one image (batch axis 1)."""

    processor: Any
    text: str
    pad_token_id: int

    def asking(self, text: str) -> ProcessorPipeline:
        """The same processor asked with another prompt."""
        return ProcessorPipeline(self.processor, text, self.pad_token_id)

    def draft_size(self, width: int, height: int) -> tuple[int, int]:
        """No reduced JPEG decode: the processor sees the image whole, as it would alone."""
        return width, height

    def __call__(self, image: Image.Image) -> Row:
        encoded = self.processor(images=[image], text=[self.text], return_tensors="pt")
        return {name: value for name, value in encoded.items() if isinstance(value, torch.Tensor)}

    def stack(self, rows: list[Row]) -> list[Row]:
        """A worker's rows as they travel to the main process (each image's own shapes)."""
        return rows

    def unstack(self, rows: list[Row], device: torch.device) -> list[Row]:
        """Rows stay on the CPU until their batch is joined."""
        return rows

    def batch(self, rows: list[Row], device: torch.device) -> ProcessorBatch:
        return ProcessorBatch(rows, self.pad_token_id)


@dataclass(frozen=True)
class ProcessorBatch:
    """The rows of a batch, joined on demand (:meth:`inputs`); sliced by row for the out-of-memory back-off."""

    rows: Sequence[Row]
    pad_token_id: int

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: slice) -> ProcessorBatch:
        return ProcessorBatch(self.rows[index], self.pad_token_id)

    def inputs(self) -> dict[str, torch.Tensor]:
        """The batch as the processor would build it from the same images and prompts (left padding)."""
        return joined(list(self.rows), self.pad_token_id)


def joined(rows: list[Row], pad_token_id: int) -> dict[str, torch.Tensor]:
    """One input dict of per-image processor outputs: prompts left-padded, every other tensor concatenated along its
    first axis after zero-padding its other axes to the largest."""
    out: dict[str, torch.Tensor] = {}
    for name in rows[0]:
        tensors = [row[name] for row in rows]
        if name in PROMPT_INPUTS:
            width = max(int(t.shape[1]) for t in tensors)
            fill = pad_token_id if name == "input_ids" else 0
            out[name] = torch.cat([torch.nn.functional.pad(t, (width - t.shape[1], 0), value=fill) for t in tensors])
            continue
        shape = [max(int(t.shape[axis]) for t in tensors) for axis in range(1, tensors[0].dim())]
        padded = []
        for tensor in tensors:
            if list(tensor.shape[1:]) != shape:
                grown = tensor.new_zeros((tensor.shape[0], *shape))
                grown[(slice(None), *(slice(0, size) for size in tensor.shape[1:]))] = tensor
                tensor = grown
            padded.append(tensor)
        out[name] = torch.cat(padded)
    return out
