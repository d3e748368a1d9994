"""What the benchmarks share: random-weight models of the real base sizes (no download) and the machine's name."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch


def _bert_like_tokenizer() -> Any:
    """A WordPiece tokenizer with BLIP's 30,524 ids ([PAD] 0, [CLS] 101, [SEP] 102, [DEC] 30522)."""
    from transformers import BertTokenizer

    vocab = {f"[unused{i}]": i for i in range(30524)}
    for token, index in {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, "[DEC]": 30522}.items():
        del vocab[f"[unused{index}]"]
        vocab[token] = index
    for index in range(1000, 30522):
        del vocab[f"[unused{index}]"]
        vocab[f"w{index}"] = index
    return BertTokenizer(vocab=vocab, do_lower_case=True, bos_token="[DEC]")


def build_base_models(out_dir: str | Path, blip: bool = True) -> tuple[Path, Path]:
    """Random-weight BLIP-base (unless ``blip`` is false) and CLIP ViT-B/32 from their default configs, saved like
    hub models; returns both folders."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipProcessor,
        CLIPConfig,
        CLIPModel,
        CLIPProcessor,
    )
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from capsearch.demo.toy_models import build_clip_tokenizer

    out = Path(out_dir)
    blip_dir, clip_dir = out / "blip-base-random", out / "clip-vit-b32-random"
    torch.manual_seed(0)
    if blip and not (blip_dir / "model.safetensors").exists():
        BlipForConditionalGeneration(BlipConfig()).save_pretrained(blip_dir)
        BlipProcessor(image_processor=BlipImageProcessorPil(), tokenizer=_bert_like_tokenizer()).save_pretrained(
            blip_dir
        )
    if not (clip_dir / "model.safetensors").exists():
        CLIPModel(CLIPConfig()).save_pretrained(clip_dir)
        CLIPProcessor(image_processor=CLIPImageProcessorPil(), tokenizer=build_clip_tokenizer()).save_pretrained(
            clip_dir
        )
    return blip_dir, clip_dir


VECTOR_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")  # what decides CPU matrix speed


def describe_machine(device: torch.device) -> str:
    """The GPU's name, or the CPU's model, its vector flags and its core count; plus torch's version."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name()}, {cores} CPU cores (torch {torch.__version__})"
    cpu, flags = platform.processor() or "cpu", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("cpu", platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    shown = " ".join(flag for flag in VECTOR_FLAGS if flag in flags) or "no AVX2"
    return f"{cpu} ({shown}), {cores} cores, {torch.get_num_threads()} threads (torch {torch.__version__})"
