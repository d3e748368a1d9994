"""Small open_clip models trained on the generated scenes and saved in open_clip's Hub layout.

They stand in for the open_clip checkpoints (``hf-hub:laion/...``, ``ViT-B-32/laion2b_s34b_b79k``, BiomedCLIP)
where no hub is reachable, built with open_clip's own classes and saved as ``open_clip_config.json`` plus
``open_clip_model.safetensors`` (the files open_clip's ``push_to_hf_hub`` writes):

* ``toy-open-clip``: open_clip's ``CLIP`` (its vision transformer and text transformer) with its own BPE tokenizer;
* ``toy-biomedclip``: BiomedCLIP's shape, open_clip's ``CustomTextCLIP`` with a timm vision tower (timm's smallest
  ViT, ``test_vit``) and a transformers text tower (a small BERT whose config and WordPiece tokenizer are saved
  beside it as ``toy-pubmedbert``; the model's config names that folder, as BiomedCLIP's names PubMedBERT's repo).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from capsearch.demo.scenes import generate_scenes
from capsearch.models.pixels import PixelPipeline

IMAGE_SIZE, CONTEXT = 64, 32
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # OpenAI's, open_clip's default
MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 3, "width": 96, "head_width": 24, "patch_size": 16},
    "text_cfg": {"context_length": CONTEXT, "vocab_size": 49408, "width": 96, "heads": 4, "layers": 2},
}
PREPROCESS_CFG = {"mean": list(MEAN), "std": list(STD), "interpolation": "bicubic", "resize_mode": "shortest"}
TRAIN_IMAGES, TRAIN_SEED, EVAL_SEED, STEPS = 4000, 10_000, 20_000, 700
HF_IMAGE_SIZE, HF_STEPS = 160, 400  # timm's test_vit works at 160 px only
TEXT_TOWER = "toy-pubmedbert"


def hf_tower_config(text_model: str) -> dict[str, Any]:
    """The open_clip model config of ``toy-biomedclip``, its text tower named ``text_model`` (a folder or Hub id)."""
    return {
        "embed_dim": 64,
        "vision_cfg": {"timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "",
                       "timm_proj": "linear", "image_size": HF_IMAGE_SIZE},
        "text_cfg": {"hf_model_name": text_model, "hf_tokenizer_name": text_model, "hf_proj_type": "mlp",
                     "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": CONTEXT},
    }  # fmt: skip


def _pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    """The model's input: open_clip's eval transform, computed by capsearch's equal pipeline (checked at load)."""
    pipeline = PixelPipeline(size, None, None, size, size, 3, 1 / 255, MEAN, STD, centre="round")
    return pipeline.normalise(torch.stack([pipeline(image.convert("RGB")) for image in images]), torch.float32)


def _fit(model: Any, pixels: torch.Tensor, tokens: torch.Tensor, per_image: int, steps: int, seed: int, batch: int):
    """AdamW + one-cycle, open_clip's contrastive loss on random (image, one of its captions) batches."""
    import open_clip

    loss_of = open_clip.ClipLoss()
    optimiser = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(pixels), generator=generator)[:batch]
        which = idx * per_image + torch.randint(0, per_image, (len(idx),), generator=generator)
        image_features, text_features, scale = model(pixels[idx], tokens[which])[:3]
        loss = loss_of(image_features, text_features, scale)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return model.eval()


def _save(model: torch.nn.Module, model_cfg: dict[str, Any], folder: Path) -> None:
    """open_clip's Hub layout: the config (model and preprocessing) and the weights as safetensors."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": model_cfg, "preprocess_cfg": PREPROCESS_CFG}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file({name: t.contiguous() for name, t in model.state_dict().items()}, folder / "open_clip_model.safetensors")


def _final(out_dir: Path) -> Path:
    """Where the models end up: ``out_dir``, or the set's folder when this is build_models' training folder inside
    it (the models move there when done, and the config names the text tower by its final path)."""
    out = out_dir.resolve()
    return out.parent if out.name.startswith(".training-") else out


def _scenes(count: int, seed: int) -> tuple[list[Image.Image], list[list[str]]]:
    scenes = generate_scenes(count, seed=seed)
    return [image for _, image, _ in scenes], [captions for _, _, captions in scenes]


def build_toy_open_clip(out_dir: str | Path, steps: int = STEPS, seed: int = 0) -> dict[str, float]:
    """Train and save ``toy-open-clip`` under ``out_dir``; its text→image R@1 on unseen scenes, and chance."""
    import open_clip

    torch.manual_seed(seed)
    images, captions = _scenes(TRAIN_IMAGES, TRAIN_SEED + seed)
    tokenizer = open_clip.SimpleTokenizer(context_length=CONTEXT)
    flat = [c for group in captions for c in group]
    model = _fit(open_clip.CLIP(**MODEL_CFG), _pixels(images, IMAGE_SIZE), tokenizer(flat), len(captions[0]), steps,
                 seed, 64)  # fmt: skip
    _save(model, MODEL_CFG, Path(out_dir) / "toy-open-clip")
    return {
        "open_clip_text_to_image_r1": _recall(model, tokenizer, IMAGE_SIZE, EVAL_SEED + seed),
        "open_clip_chance_r1": 0.01,
    }


def build_toy_biomedclip(out_dir: str | Path, steps: int = HF_STEPS, seed: int = 0) -> dict[str, float]:
    """Train and save ``toy-biomedclip`` and its text tower ``toy-pubmedbert`` under ``out_dir``; its text→image
    R@1 on unseen scenes."""
    import open_clip
    from transformers import BertConfig

    from capsearch.demo.toy_models import build_blip_tokenizer

    torch.manual_seed(seed)
    images, captions = _scenes(TRAIN_IMAGES // 2, TRAIN_SEED + seed)
    flat = [c for group in captions for c in group]
    text_dir = Path(out_dir) / TEXT_TOWER
    wordpiece = build_blip_tokenizer(flat)
    wordpiece.save_pretrained(text_dir)
    BertConfig(
        vocab_size=len(wordpiece), hidden_size=96, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        max_position_embeddings=64,
    ).save_pretrained(text_dir)  # fmt: skip
    config = hf_tower_config(str(_final(Path(out_dir)) / TEXT_TOWER))  # saved: where the tower will be
    here = hf_tower_config(str(text_dir.resolve()))  # trained: where it is now, with no weights to load
    training = {**here, "text_cfg": {**here["text_cfg"], "hf_model_pretrained": False}}
    tokenizer = open_clip.tokenizer.HFTokenizer(str(text_dir), context_length=CONTEXT)
    model = _fit(open_clip.CustomTextCLIP(**training), _pixels(images, HF_IMAGE_SIZE), tokenizer(flat),
                 len(captions[0]), steps, seed, 48)  # fmt: skip
    _save(model, config, Path(out_dir) / "toy-biomedclip")
    return {"biomedclip_text_to_image_r1": _recall(model, tokenizer, HF_IMAGE_SIZE, EVAL_SEED + seed)}


@torch.inference_mode()
def _recall(model: Any, tokenizer: Any, size: int, seed: int, count: int = 100) -> float:
    """Text→image R@1 of the first caption of ``count`` unseen scenes (chance: 1 in ``count``)."""
    images, captions = _scenes(count, seed)
    image_rows = model.encode_image(_pixels(images, size), normalize=True)
    text_rows = model.encode_text(tokenizer([group[0] for group in captions]), normalize=True)
    return float(((text_rows @ image_rows.T).argmax(dim=1).numpy() == np.arange(count)).mean())
