"""open_clip against transformers: the same architecture through both families, on the same photos, in one run.

With ``--models base`` (the default): open_clip's ``ViT-B-32`` and transformers' ``CLIPModel`` ViT-B/32, both with
random weights of the real size, saved like their hub checkpoints (no download). With ``--models toy``: the toy
open_clip model and toy CLIP (a check of the script; they differ in size). Rows, per family: ``embed_images``
(the whole loop: decoding workers, resize, the model), the model alone on one uint8 batch, and ``embed_texts``.
The two families alternate for ``--rounds`` rounds and each row keeps its median, so a machine's drift falls on
both alike; the summary is open_clip's rate as a share of transformers'.

    python bench/families.py --device cpu --out bench/results/open_clip_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from base_models import build_base_models, describe_machine

from capsearch.data.images import ImageSource
from capsearch.io import write_json
from capsearch.models.registry import load_dual_encoder
from stages import _texts, timed, write_photos

ARCHITECTURE = "ViT-B-32"


def build_open_clip_random(out_dir: str | Path) -> Path:
    """open_clip's ``ViT-B-32`` with random weights, saved in open_clip's Hub layout under ``out_dir``."""
    import open_clip
    from safetensors.torch import save_file

    folder = Path(out_dir) / "open-clip-vit-b32-random"
    if not (folder / "open_clip_model.safetensors").exists():
        torch.manual_seed(0)
        model = open_clip.create_model(ARCHITECTURE)
        folder.mkdir(parents=True, exist_ok=True)
        config = {"model_cfg": open_clip.get_model_config(ARCHITECTURE), "preprocess_cfg": {}}
        (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
        save_file(state, folder / "open_clip_model.safetensors")
    return folder


def rates(encoder: Any, source: ImageSource, ids: list[str], texts: list[str], args: argparse.Namespace) -> dict:
    """Images (texts) per second of one round: the whole embed_images loop, the model alone, embed_texts."""
    device = encoder.device
    width, height = encoder.pixels.output_size()
    pixels = torch.randint(0, 256, (args.batch, 3, height, width), dtype=torch.uint8, device=device)
    loop = timed(lambda: encoder.embed_images(source, ids, args.batch, args.workers), device)
    model = timed(lambda: encoder.embed_pixels(pixels), device)
    text = timed(lambda: encoder.embed_texts(texts, args.batch), device)
    return {"embed_images": len(ids) / loop, "model only": args.batch / model, "embed_texts": len(texts) / text}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--precision", default="fp32", choices=("auto", "fp32", "fp16", "bf16"))
    parser.add_argument("--models", default="base", choices=("base", "toy"))
    parser.add_argument("--models-dir", default="build/bench/models")
    parser.add_argument("--toy-models", help="the toy CLIP's folder set (--models toy)")
    parser.add_argument("--toy-open-clip", help="the toy open_clip's folder set (--models toy)")
    parser.add_argument("--images-dir", default="build/bench/photos")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="bench/results/families.json")
    args = parser.parse_args(argv)
    if args.models == "base":
        _, clip_dir = build_base_models(args.models_dir, blip=False)
        open_clip_dir = build_open_clip_random(args.models_dir)
    else:
        clip_dir = Path(args.toy_models) / "toy-clip"
        open_clip_dir = Path(args.toy_open_clip) / "toy-open-clip"
    ids = write_photos(args.images_dir, args.images)
    source, texts = ImageSource(args.images_dir), _texts(args.images * 4)
    encoders = {
        "transformers CLIP": load_dual_encoder(str(clip_dir), None, args.precision, args.device),
        "open_clip": load_dual_encoder(str(open_clip_dir), None, args.precision, args.device),
    }
    for encoder in encoders.values():  # warm-up: the first batch pays for allocations and worker start
        encoder.embed_images(source, ids[: args.batch], args.batch, 0)
    measured: dict[str, list[dict[str, float]]] = {name: [] for name in encoders}
    for _ in range(args.rounds):
        for name, encoder in encoders.items():
            measured[name].append(rates(encoder, source, ids, texts, args))
    rows = [
        {"family": name, "work": work, "per_second": round(statistics.median(r[work] for r in runs), 2)}
        for name, runs in measured.items()
        for work in runs[0]
    ]
    by = {(row["family"], row["work"]): row["per_second"] for row in rows}
    ratios = {
        work: round(by[("open_clip", work)] / by[("transformers CLIP", work)], 3) for work in measured["open_clip"][0]
    }
    result = {
        "machine": describe_machine(torch.device(args.device)),
        "models": args.models,
        "precision": args.precision,
        "images": args.images,
        "batch": args.batch,
        "workers": args.workers,
        "rounds": args.rounds,
        "rows": rows,
        "open_clip_over_transformers": ratios,
    }
    for row in rows:
        print(f"{row['family']:>18}  {row['work']:<13} {row['per_second']:8.1f}/s")
    print("open_clip / transformers:", ", ".join(f"{work} {ratio:.2f}" for work, ratio in ratios.items()))
    write_json(args.out, result)


if __name__ == "__main__":
    main()
