"""Small CLIP and BLIP models trained on generated scenes, saved like hub models.

They stand in for ``openai/clip-vit-base-patch32`` and ``Salesforce/blip-image-captioning-base`` where no
model hub is reachable (tests, ``make demo``): same classes, same ``save_pretrained``/``from_pretrained`` path,
tiny configs. Tokenizers are built locally: CLIP's real BPE merges ship in the ``open-clip-torch`` wheel
(read as a file, the package is never imported); BLIP's WordPiece vocabulary is trained on the captions.
"""

from __future__ import annotations

import gzip
import importlib.util
import random
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tokenizers import BertWordPieceTokenizer
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipProcessor,
    CLIPConfig,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
)
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from capsearch.demo.scenes import SHAPES, generate_scenes
from capsearch.models.pixels import PixelPipeline

IMAGE_SIZE = 64
CLIP_VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"
COLOUR_WORDS = ("red", "green", "blue", "yellow", "purple", "white", "gray", "black")


def find_clip_bpe_vocab() -> Path:
    """Path of CLIP's BPE merges file inside the installed ``open-clip-torch`` wheel (not imported)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "open-clip-torch is not installed; it ships CLIP's BPE vocabulary (pip install --no-deps)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / CLIP_VOCAB_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found in the open-clip-torch package")
    return path


def _bytes_to_unicode() -> dict[int, str]:
    codes = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = codes[:]
    extra = 0
    for byte in range(256):
        if byte not in codes:
            codes.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(codes, (chr(c) for c in chars), strict=True))


def build_clip_tokenizer() -> CLIPTokenizer:
    """CLIP's real 49,408-token BPE tokenizer, built from the merges file (as OpenAI's SimpleTokenizer does)."""
    with gzip.open(find_clip_bpe_vocab()) as handle:
        merges = handle.read().decode("utf-8").split("\n")[1 : 49152 - 256 - 2 + 1]
    pairs = [tuple(merge.split()) for merge in merges]
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in pairs]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={token: i for i, token in enumerate(vocab)}, merges=pairs, model_max_length=77)


def build_blip_tokenizer(captions: list[str]) -> BertTokenizer:
    """A lower-cased WordPiece tokenizer trained on ``captions``, with BLIP's ``[DEC]`` start token."""
    trainer = BertWordPieceTokenizer(lowercase=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    trainer.train_from_iterator(captions, vocab_size=400, min_frequency=1, special_tokens=specials)
    return BertTokenizer(vocab=trainer.get_vocab(), do_lower_case=True, bos_token="[DEC]")


TOWER = {"hidden_size": 96, "intermediate_size": 256, "num_attention_heads": 4}  # both towers of both models


def _vision_config() -> dict[str, int]:
    return {**TOWER, "num_hidden_layers": 3, "image_size": IMAGE_SIZE, "patch_size": 16}


def _text_config(vocab_size: int, max_positions: int, **token_ids: int | None) -> dict[str, int | None]:
    return {
        **TOWER,
        "vocab_size": vocab_size,
        "num_hidden_layers": 2,
        "max_position_embeddings": max_positions,
        **token_ids,
    }


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _pixels(image_processor: object, images: list[Image.Image]) -> torch.Tensor:
    """The processor's pixel values, computed by capsearch's equal (within 1e-6) and 3x faster pipeline."""
    pipeline = PixelPipeline.from_image_processor(image_processor)
    return pipeline.normalise(torch.stack([pipeline(image.convert("RGB")) for image in images]), torch.float32)


class UsedRows(torch.nn.Module):
    """An embedding table whose rows for the ``used`` ids train while the others stay as they started.

    CLIP's real vocabulary has 49,408 rows and the scenes use about 40 of them: updating the whole table every step
    was most of the optimiser's work. The saved model gets a plain ``nn.Embedding`` holding every row
    (:meth:`merged`).
    """

    def __init__(self, table: torch.nn.Embedding, used: torch.Tensor) -> None:
        super().__init__()
        self.table = table
        table.weight.requires_grad_(False)
        self.used = used
        slot = torch.full((table.num_embeddings,), -1, dtype=torch.long)
        slot[used] = torch.arange(len(used))
        self.register_buffer("slot", slot, persistent=False)
        self.rows = torch.nn.Parameter(table.weight[used].clone())

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        slot = self.slot[ids]
        trained = self.rows[slot.clamp(min=0)]
        return torch.where((slot >= 0).unsqueeze(-1), trained, self.table(ids))

    def merged(self) -> torch.nn.Embedding:
        """The plain table with the trained rows written in."""
        with torch.no_grad():
            self.table.weight[self.used] = self.rows
        return self.table


def _save(model: torch.nn.Module, processor: object, folder: Path) -> None:
    """``save_pretrained`` of the model (with any :class:`UsedRows` merged into a plain table) and its processor."""
    model.eval()
    swapped = []
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, UsedRows):
                setattr(parent, name, child.merged())
                swapped.append((parent, name, child))
    model.save_pretrained(folder)  # type: ignore[attr-defined]
    processor.save_pretrained(folder)  # type: ignore[attr-defined]
    for parent, name, child in swapped:  # training goes on after an early save
        setattr(parent, name, child)


def _fit(
    model: torch.nn.Module,
    processor: object,
    batch_inputs: Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]],
    counts: tuple[int, int],
    hyper: tuple[int, float, float, int],
    out_dir: Path,
    early_dir: Path | None,
) -> None:
    """AdamW + one-cycle training on random (image, one of its captions) batches of 64; saves the model.

    ``counts`` is (images, captions per image); ``hyper`` is (steps, lr, weight decay, seed). With
    ``early_dir``, the model a third of the way through is saved there too.
    """
    (images, per_image), (steps, lr, weight_decay, seed) = counts, hyper
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        idx = torch.randperm(images, generator=generator)[:64]
        which = idx * per_image + torch.randint(0, per_image, (len(idx),), generator=generator)
        out = model(**batch_inputs(idx, which))
        optimiser.zero_grad()
        out.loss.backward()
        optimiser.step()
        schedule.step()
        if early_dir is not None and step + 1 == steps // 3:
            _save(model, processor, early_dir)
            model.train()
    _save(model, processor, out_dir)


def train_toy_clip(
    images: list[Image.Image], captions: list[list[str]], out_dir: Path, steps: int, early_dir: Path | None, seed: int
) -> CLIPModel:
    """Train a small CLIPModel contrastively on (image, one of its captions) pairs and save it."""
    _set_seed(seed)
    tokenizer = build_clip_tokenizer()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = CLIPConfig(
        text_config=_text_config(
            tokenizer.vocab_size,
            77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=_vision_config(),
        projection_dim=64,
    )
    model = CLIPModel(config)
    pixels = _pixels(image_processor, images)
    flat = [c for group in captions for c in group]
    tokens = tokenizer(flat, padding=True, return_tensors="pt")
    embeddings = model.text_model.embeddings
    embeddings.token_embedding = UsedRows(embeddings.token_embedding, torch.unique(tokens["input_ids"]))
    _fit(
        model,
        processor,
        lambda idx, which: {
            "input_ids": tokens["input_ids"][which],
            "attention_mask": tokens["attention_mask"][which],
            "pixel_values": pixels[idx],
            "return_loss": True,
        },
        (len(images), len(captions[0])),
        (steps, 2e-3, 0.05, seed),
        out_dir,
        early_dir,
    )
    return model


def train_toy_blip(
    images: list[Image.Image], captions: list[list[str]], out_dir: Path, steps: int, early_dir: Path | None, seed: int
) -> BlipForConditionalGeneration:
    """Train a small BlipForConditionalGeneration to caption the scenes (teacher forcing) and save it."""
    _set_seed(seed)
    flat = [c for group in captions for c in group]
    tokenizer = build_blip_tokenizer(flat)
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    dec_id = tokenizer.convert_tokens_to_ids("[DEC]")
    config = BlipConfig(
        text_config=_text_config(
            len(tokenizer),
            40,
            encoder_hidden_size=_vision_config()["hidden_size"],
            bos_token_id=dec_id,
            eos_token_id=tokenizer.sep_token_id,
            sep_token_id=tokenizer.sep_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=_vision_config(),
        image_text_hidden_size=64,
    )
    model = BlipForConditionalGeneration(config)
    pixels = _pixels(image_processor, images)
    encoded = tokenizer(flat, padding=True, return_tensors="pt")
    input_ids = encoded["input_ids"].clone()
    input_ids[:, 0] = dec_id  # BLIP decodes from [DEC] in place of [CLS]
    labels = input_ids.masked_fill(encoded["attention_mask"] == 0, -100)
    _fit(
        model,
        processor,
        lambda idx, which: {
            "pixel_values": pixels[idx],
            "input_ids": input_ids[which],
            "attention_mask": encoded["attention_mask"][which],
            "labels": labels[which],
        },
        (len(images), len(captions[0])),
        (steps, 2e-3, 0.01, seed),
        out_dir,
        early_dir,
    )
    return model


def names_colour_and_shape(caption: str, colour: str, shape: str) -> bool:
    """Whether a caption's first colour word is ``colour`` and its only shape word is ``shape``."""
    words = re.findall(r"[a-z]+", caption.lower())
    colours = [w for w in words if w in COLOUR_WORDS]
    shapes = {w for w in words if w in SHAPES}
    return bool(colours) and colours[0] == colour and shapes == {shape}


TRAIN_IMAGES, TRAIN_SEED, EVAL_SEED = 4000, 10_000, 20_000
CLIP_STEPS, BLIP_STEPS = 1500, 1500


def _training_scenes(count: int, seed: int) -> tuple[list[Image.Image], list[list[str]]]:
    scenes = generate_scenes(count, seed=seed)
    return [image for _, image, _ in scenes], [caps for _, _, caps in scenes]


def build_toy_clip(out_dir: str | Path, steps: int = CLIP_STEPS, seed: int = 0) -> dict[str, float]:
    """Train and save ``toy-clip`` and ``toy-clip-early`` (a third of the way through: a different model of the
    same architecture, to show a model change re-running the right stages) under ``out_dir``; returns the text→image
    R@1 on scenes it never saw, and chance."""
    out = Path(out_dir)
    images, captions = _training_scenes(TRAIN_IMAGES, TRAIN_SEED + seed)
    clip = train_toy_clip(images, captions, out / "toy-clip", steps, out / "toy-clip-early", seed)
    return evaluate_toy_clip(out, clip, EVAL_SEED + seed)


def build_toy_blip(out_dir: str | Path, steps: int = BLIP_STEPS, seed: int = 0) -> dict[str, float]:
    """Train and save ``toy-blip`` and ``toy-blip-early`` under ``out_dir``; returns the share of captions of unseen
    scenes that name the right colour and shape."""
    out = Path(out_dir)
    images, captions = _training_scenes(TRAIN_IMAGES, TRAIN_SEED + seed)
    blip = train_toy_blip(images, captions, out / "toy-blip", steps, out / "toy-blip-early", seed)
    return evaluate_toy_blip(out, blip, EVAL_SEED + seed)


def build_toy_models(out_dir: str | Path) -> dict[str, float]:
    """``toy-clip``, ``toy-clip-early``, ``toy-blip`` and ``toy-blip-early`` under ``out_dir``, trained side by side
    (:func:`capsearch.demo.model_cache.build_models`); their quality on unseen scenes."""
    from capsearch.demo.model_cache import TOY_MODELS, build_models

    return build_models([(model, Path(out_dir)) for model in TOY_MODELS.models])[Path(out_dir)]


@torch.inference_mode()
def evaluate_toy_clip(out: Path, clip: CLIPModel, seed: int, count: int = 100) -> dict[str, float]:
    """Text→image R@1 of the toy CLIP on ``count`` unseen scenes, and chance."""
    scenes = generate_scenes(count, seed=seed)
    clip_processor = CLIPProcessor.from_pretrained(out / "toy-clip", backend="pil")
    image_features = clip.get_image_features(
        pixel_values=_pixels(clip_processor.image_processor, [s[1] for s in scenes])
    )
    texts = [caps[0] for _, _, caps in scenes]
    tokens = clip_processor.tokenizer(texts, padding=True, return_tensors="pt")
    text_features = clip.get_text_features(**tokens)
    img = torch.nn.functional.normalize(image_features.pooler_output, dim=-1)
    txt = torch.nn.functional.normalize(text_features.pooler_output, dim=-1)
    r1 = float((txt @ img.T).argmax(dim=1).eq(torch.arange(count)).float().mean())
    return {"clip_text_to_image_r1": r1, "clip_chance_r1": 1.0 / count}


@torch.inference_mode()
def evaluate_toy_blip(out: Path, blip: BlipForConditionalGeneration, seed: int, count: int = 100) -> dict[str, float]:
    """The share of the toy BLIP's captions of ``count`` unseen scenes that name the right colour and shape."""
    scenes = generate_scenes(count, seed=seed)
    blip_processor = BlipProcessor.from_pretrained(out / "toy-blip", backend="pil")
    generated = blip.generate(
        pixel_values=_pixels(blip_processor.image_processor, [s[1] for s in scenes]), max_new_tokens=20
    )
    decoded = blip_processor.batch_decode(generated, skip_special_tokens=True)
    correct = sum(names_colour_and_shape(c, s.colour, s.shape) for c, (s, _, _) in zip(decoded, scenes, strict=True))
    return {"blip_colour_and_shape_accuracy": correct / count}
