"""A small SigLIP and a small GIT trained on generated scenes: the second dual-encoder and captioner families.

They stand in for ``google/siglip-base-patch16-224`` and ``microsoft/git-base`` where no hub is reachable, as
:mod:`capsearch.demo.toy_models` does for CLIP and BLIP: the real classes and processors (SigLIP: a SentencePiece
tokenizer, square resize with no crop, mean 0.5; GIT: CLIP's image processor and a WordPiece tokenizer), tiny
configs, saved with ``save_pretrained`` and loaded by capsearch through the Auto classes like any hub model.
A separate module (and cache key) from the CLIP/BLIP toys, so that adding these did not retrain those.
"""

from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    GitConfig,
    GitForCausalLM,
    GitProcessor,
    SiglipConfig,
    SiglipModel,
    SiglipProcessor,
    SiglipTokenizer,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from capsearch.demo.scenes import generate_scenes
from capsearch.demo.toy_models import (
    IMAGE_SIZE,
    _fit,
    _pixels,
    _set_seed,
    _text_config,
    _vision_config,
    build_blip_tokenizer,
    names_colour_and_shape,
)

SIGLIP_CONTEXT = 64  # SigLIP's text length: every text padded to it


def build_siglip_tokenizer(captions: list[str], folder: Path) -> SiglipTokenizer:
    """SigLIP's tokenizer class over a SentencePiece unigram model trained on ``captions`` (``</s>`` pads and ends,
    as in the real one)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions),
        model_writer=model,
        vocab_size=200,
        hard_vocab_limit=False,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spiece.model").write_bytes(model.getvalue())
    return SiglipTokenizer(vocab_file=str(folder / "spiece.model"), model_max_length=SIGLIP_CONTEXT)


def train_toy_siglip(images: list[Image.Image], captions: list[list[str]], out_dir: Path, steps: int, seed: int):
    """Train a small SiglipModel with its sigmoid loss on (image, one of its captions) pairs and save it."""
    _set_seed(seed)
    flat = [c for group in captions for c in group]
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = build_siglip_tokenizer(flat, Path(scratch))
        image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
        processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
        config = SiglipConfig(
            text_config=_text_config(
                len(tokenizer),
                SIGLIP_CONTEXT,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                bos_token_id=None,  # the tokenizer has no start token (transformers' default, 49406, is CLIP's)
            ),
            vision_config=_vision_config(),
        )
        model = SiglipModel(config)
        with torch.no_grad():  # the paper's start (t' = log 10, b = -10); transformers' init (1, 0) learns too slowly
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-10.0)
        pixels = _pixels(image_processor, images)
        # as SigLIP was trained: lower case, padded to 64 tokens, no attention mask
        ids = tokenizer([c.lower() for c in flat], padding="max_length", max_length=SIGLIP_CONTEXT, truncation=True)
        input_ids = torch.tensor(ids["input_ids"])
        _fit(
            model,
            processor,
            lambda idx, which: {"input_ids": input_ids[which], "pixel_values": pixels[idx], "return_loss": True},
            (len(images), len(captions[0])),
            (steps, 3e-3, 0.05, seed),
            out_dir,
            None,
        )
    return model


def train_toy_git(images: list[Image.Image], captions: list[list[str]], out_dir: Path, steps: int, seed: int):
    """Train a small GitForCausalLM to caption the scenes (teacher forcing, [CLS] caption [SEP]) and save it."""
    _set_seed(seed)
    flat = [c for group in captions for c in group]
    tokenizer = build_blip_tokenizer(flat)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = GitProcessor(image_processor=image_processor, tokenizer=tokenizer)
    tower = _text_config(len(tokenizer), 40)
    tower.pop("max_position_embeddings")
    config = GitConfig(
        vision_config=_vision_config(),
        **tower,
        max_position_embeddings=40,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GitForCausalLM(config)
    pixels = _pixels(image_processor, images)
    encoded = tokenizer(flat, padding=True, return_tensors="pt")
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    _fit(
        model,
        processor,
        lambda idx, which: {
            "pixel_values": pixels[idx],
            "input_ids": encoded["input_ids"][which],
            "attention_mask": encoded["attention_mask"][which],
            "labels": labels[which],
        },
        (len(images), len(captions[0])),
        (steps, 3e-3, 0.01, seed),
        out_dir,
        None,
    )
    return model


FAMILY_TRAIN_IMAGES, FAMILY_TRAIN_SEED, FAMILY_EVAL_SEED = 2000, 30_000, 40_000
SIGLIP_STEPS, GIT_STEPS = 450, 400


def _training_scenes(seed: int) -> tuple[list[Image.Image], list[list[str]]]:
    scenes = generate_scenes(FAMILY_TRAIN_IMAGES, seed=FAMILY_TRAIN_SEED + seed)
    return [image for _, image, _ in scenes], [caps for _, _, caps in scenes]


def build_toy_siglip(out_dir: str | Path, steps: int = SIGLIP_STEPS, seed: int = 0) -> dict[str, float]:
    """Train and save ``toy-siglip`` under ``out_dir``; its text→image R@1 on unseen scenes, and chance."""
    out = Path(out_dir)
    siglip = train_toy_siglip(*_training_scenes(seed), out / "toy-siglip", steps, seed)
    return evaluate_toy_siglip(out, siglip, FAMILY_EVAL_SEED + seed)


def build_toy_git(out_dir: str | Path, steps: int = GIT_STEPS, seed: int = 0) -> dict[str, float]:
    """Train and save ``toy-git`` under ``out_dir``; the share of its captions of unseen scenes that name the right
    colour and shape."""
    out = Path(out_dir)
    git = train_toy_git(*_training_scenes(seed), out / "toy-git", steps, seed)
    return evaluate_toy_git(out, git, FAMILY_EVAL_SEED + seed)


@torch.inference_mode()
def evaluate_toy_siglip(out: Path, siglip: SiglipModel, seed: int, count: int = 100) -> dict[str, float]:
    """Text→image R@1 of the toy SigLIP on ``count`` unseen scenes, and chance."""
    scenes = generate_scenes(count, seed=seed)
    pictures = [image for _, image, _ in scenes]
    processor = SiglipProcessor.from_pretrained(out / "toy-siglip", backend="pil")
    image = siglip.get_image_features(pixel_values=_pixels(processor.image_processor, pictures)).pooler_output
    texts = [caps[0].lower() for _, _, caps in scenes]
    tokens = processor.tokenizer(texts, padding="max_length", max_length=SIGLIP_CONTEXT, return_tensors="pt")
    text = siglip.get_text_features(input_ids=tokens["input_ids"]).pooler_output
    similarity = torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(image, dim=-1).T
    r1 = float(similarity.argmax(dim=1).eq(torch.arange(count)).float().mean())
    return {"siglip_text_to_image_r1": r1, "siglip_chance_r1": 1.0 / count}


@torch.inference_mode()
def evaluate_toy_git(out: Path, git: GitForCausalLM, seed: int, count: int = 100) -> dict[str, float]:
    """The share of the toy GIT's captions of ``count`` unseen scenes that name the right colour and shape."""
    scenes = generate_scenes(count, seed=seed)
    git_processor = GitProcessor.from_pretrained(out / "toy-git", backend="pil")
    pictures = [image for _, image, _ in scenes]
    generated = git.generate(pixel_values=_pixels(git_processor.image_processor, pictures), max_new_tokens=20)
    decoded = git_processor.batch_decode(generated, skip_special_tokens=True)
    correct = sum(names_colour_and_shape(c, s.colour, s.shape) for c, (s, _, _) in zip(decoded, scenes, strict=True))
    return {"git_colour_and_shape_accuracy": correct / count}
