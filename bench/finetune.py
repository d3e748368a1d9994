"""``python bench/finetune.py``: training throughput of the dual encoder at full size, image–caption pairs per second.

A random-weight CLIP ViT-B/32 (the real size, from ``CLIPConfig()``; the compute does not depend on the weights)
trained with :func:`capsearch.finetune.loop.train_step`, the step ``finetune_clip`` runs (forward with the
family's loss, backward, AdamW), on uint8 pixels already in memory (the loader is measured by ``bench/stages.py``)
and 12-word captions. Rows: batch size, precision (fp32, or bf16 autocast), gradient checkpointing off and on; on
a GPU the batch doubles until memory runs out, and the largest that fits is reported. Each row: the median of
``--steps`` timed steps after two warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from base_models import build_base_models, describe_machine  # bench/ is the script folder

from capsearch.finetune.contrastive import ContrastiveTask
from capsearch.finetune.loop import optimiser, set_checkpointing, train_step
from capsearch.models.embedder import DualEncoder
from capsearch.models.runtime import resolve_device
from capsearch.params import FinetuneClipParams

FLICKR8K_TRAIN = 6000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_steps(encoder: DualEncoder, batch: int, dtype: torch.dtype | None, checkpointing: bool, steps: int) -> float:
    """Median seconds of one training step at ``batch`` pairs."""
    model, device = encoder.model, encoder.device
    model.train()
    set_checkpointing(model, checkpointing)
    width, height = encoder.pixels.output_size()
    pixels = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, device=device)
    words = ["a", "man", "riding", "a", "brown", "horse", "along", "the", "beach", "at", "sunset", "with", "a", "dog"]
    texts = [" ".join(words[i % 4 :]) for i in range(batch)]
    p = FinetuneClipParams(epochs=1, batch_size=batch)
    task = ContrastiveTask(encoder, p, (1,), {}, 0)
    optimizer = optimiser(task.trainable(), p)
    times = []
    for index in range(steps + 2):
        _sync(device)
        started = time.perf_counter()
        train_step(task, pixels, texts, dtype, optimizer, p)
        _sync(device)
        if index >= 2:
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    """Time the rows, print them, write the JSON."""
    parser = argparse.ArgumentParser(prog="python bench/finetune.py", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes (default: CPU 32, GPU doubling)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--models-dir", default="build/bench/models")
    parser.add_argument("--clip-model", help="a saved dual encoder instead of the random ViT-B/32 (the test's toy)")
    parser.add_argument("--out", default="bench/results/finetune.json")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    clip_dir = args.clip_model or build_base_models(args.models_dir, blip=False)[1]
    encoder = DualEncoder(str(clip_dir), None, "fp32", str(device))
    precisions = [("fp32", None)] + ([("bf16", torch.bfloat16)] if device.type == "cuda" else [])
    batches = [int(b) for b in args.batches.split(",")] if args.batches else None
    rows = []
    for name, dtype in precisions:
        for checkpointing in (False, True):
            for batch in batches or [256 * 2**i for i in range(8)]:
                try:
                    seconds = time_steps(encoder, batch, dtype, checkpointing, args.steps)
                except ValueError as exc:  # out of memory: the largest batch that fits is the previous row
                    print(f"{name}, checkpointing {checkpointing}: batch {batch} does not fit ({exc})")
                    break
                pairs_per_s = batch / seconds
                row = {
                    "model": args.clip_model or "CLIP ViT-B/32 (random weights)",
                    "precision": name,
                    "checkpointing": checkpointing,
                    "batch": batch,
                    "seconds_per_step": round(seconds, 4),
                    "pairs_per_s": round(pairs_per_s, 1),
                    "flickr8k_train_epoch_s": round(FLICKR8K_TRAIN / pairs_per_s, 1),
                    "machine": describe_machine(device),
                }
                rows.append(row)
                print(
                    f"{name:>5} checkpointing={checkpointing!s:<5} batch {batch:>5}: {row['pairs_per_s']:>9} pairs/s "
                    f"({row['seconds_per_step']} s/step; a Flickr8k train epoch {row['flickr8k_train_epoch_s']} s)"
                )
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": describe_machine(device), "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"machine: {describe_machine(device)}; written to {out}")


if __name__ == "__main__":
    main()
