"""``python bench/finetune.py``: training throughput of both fine-tuning stages at full size, image–caption pairs per
second.

A random-weight CLIP ViT-B/32 and BLIP-base captioner (the real sizes, from their default configs; the compute does
not depend on the weights) trained with :func:`capsearch.finetune.loop.train_step`, the step ``finetune_clip`` and
``finetune_captioner`` run (forward with the family's loss, backward, AdamW), on uint8 pixels already in memory
(the loader is measured by ``bench/stages.py``) and 10- to 14-word captions. Rows: task, batch size, precision
(fp32, or bf16 autocast), gradient checkpointing off and on; on a GPU the batch doubles until memory runs out, and
the largest that fits is reported. Each row: the median of ``--steps`` timed steps after two warm-up steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from base_models import build_base_models, describe_machine  # bench/ is the script folder

from capsearch.finetune.captioning import CaptioningTask
from capsearch.finetune.contrastive import ContrastiveTask
from capsearch.finetune.loop import Task, optimiser, set_checkpointing, train_step
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder
from capsearch.models.runtime import resolve_device
from capsearch.params import FinetuneCaptionerParams, FinetuneClipParams

FLICKR8K_TRAIN = 6000


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_task(kind: str, model: str, device: torch.device) -> Task:
    """The fine-tuning task of ``kind`` (clip | captioner), its params' batch size set per row."""
    if kind == "clip":
        encoder = DualEncoder(model, None, "fp32", str(device))
        return ContrastiveTask(encoder, FinetuneClipParams(epochs=1), (1,), {}, 0)
    captioner = Captioner(model, None, "fp32", str(device))
    return CaptioningTask(captioner, FinetuneCaptionerParams(epochs=1), DecodingSettings(1, 20, 3), 1, 0)


def time_steps(task: Task, batch: int, dtype: torch.dtype | None, checkpointing: bool, steps: int) -> float:
    """Median seconds of one training step at ``batch`` pairs."""
    device, p = task.device, replace(task.p, batch_size=batch)
    task.model.train()
    set_checkpointing(task.model, checkpointing)
    width, height = task.pixels.output_size()
    pixels = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, device=device)
    words = ["a", "man", "riding", "a", "brown", "horse", "along", "the", "beach", "at", "sunset", "with", "a", "dog"]
    texts = [" ".join(words[i % 4 :]) for i in range(batch)]
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
    parser.add_argument("--blip-model", help="a saved captioner instead of the random BLIP-base (the test's toy)")
    parser.add_argument("--tasks", default="clip,captioner", help="which stages' training step: clip, captioner")
    parser.add_argument("--out", default="bench/results/finetune.json")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    tasks = args.tasks.split(",")
    given = {"clip": args.clip_model, "captioner": args.blip_model}
    missing = [kind for kind in tasks if not given[kind]]
    if missing:  # random-weight base-size models, built once under --models-dir
        blip_dir, clip_dir = build_base_models(args.models_dir, blip="captioner" in missing)
        base = {
            "clip": (str(clip_dir), "CLIP ViT-B/32 (random weights)"),
            "captioner": (str(blip_dir), "BLIP-base (random weights)"),
        }
    models = {kind: (given[kind], given[kind]) if given[kind] else base[kind] for kind in tasks}
    precisions = [("fp32", None)] + ([("bf16", torch.bfloat16)] if device.type == "cuda" else [])
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [64 * 2**i for i in range(10)]
    rows = []
    for kind in tasks:
        model, described = models[kind]
        task = make_task(kind, model, device)
        for (name, dtype), checkpointing in [(pr, c) for pr in precisions for c in (False, True)]:
            for batch in batches:
                try:
                    seconds = time_steps(task, batch, dtype, checkpointing, args.steps)
                except ValueError as exc:  # out of memory: the largest batch that fits is the previous row
                    print(f"{kind} {name}, checkpointing {checkpointing}: batch {batch} does not fit ({exc})")
                    break
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                pairs_per_s = batch / seconds
                row = {
                    "task": kind,
                    "model": described,
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
                    f"{kind:>9} {name:>5} checkpointing={checkpointing!s:<5} batch {batch:>5}: "
                    f"{row['pairs_per_s']:>9} pairs/s ({row['seconds_per_step']} s/step; a Flickr8k train epoch "
                    f"{row['flickr8k_train_epoch_s']} s)"
                )
        del task
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": describe_machine(device), "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"machine: {describe_machine(device)}; written to {out}")


if __name__ == "__main__":
    main()
