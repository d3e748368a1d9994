"""Small instruction VLMs: two trained on the generated scenes (a prefix prompt, a chat template), and random-weight
ones of the other shapes capsearch runs (a task token; tiles or a patch grid per image).

They stand in for real checkpoints where no hub is reachable, as the other toy modules do, built from transformers'
own classes and processors with tiny configs and saved with ``save_pretrained`` (safetensors):

* ``toy-paligemma``: PaliGemma's shape (a SigLIP vision tower, a Gemma decoder, ``PaliGemmaProcessor``), asked by
  a prefix prompt (``caption en``); trained as PaliGemma is, the prefix seen whole and only the suffix scored
  (the processor's own ``suffix`` labels and token types);
* ``toy-llava``: LLaVA's shape (a CLIP vision tower, a Llama decoder, ``LlavaProcessor``) with a real chat template,
  asked through it (``Describe this image in one sentence.``); the template writes plain text (``Answer:``) and
  special tokens (``<|user|>``, ``<|end|>``) around the prompt, which a caption must never contain.

Both tokenizers are word-level, trained on the scenes' captions and the prompts (``tokenizers``, saved as
``tokenizer.json``). Each is asked and trained as capsearch asks and fine-tunes it (:mod:`capsearch.models.asking`):
on the answer tokens only, the prompt and template masked.

With random weights, for what their processors make and how capsearch reads the answers (exactness, not
captioning): a Florence-2 (DaViT, BART, ``Florence2Processor``, asked by ``<CAPTION>``), an Idefics3 (SmolVLM's
class: tiles) and a Qwen2-VL (a patch grid per image); :data:`SMOLVLM_256M` is SmolVLM-256M's shape for the bench.
A Florence-2 of this size trained as the others (lr 1e-3, 600 steps, about 100 s on two threads) named the colour
of 93 of 100 unseen scenes but the shape of only 29: not added to the trained set.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from capsearch.demo.scenes import generate_scenes
from capsearch.demo.toy_models import IMAGE_SIZE, TOWER, _pixels, _set_seed, names_colour_and_shape
from capsearch.models.asking import ask, teacher_forced

PALIGEMMA_PROMPT = "caption en"  # PaliGemma's own caption prefix (and capsearch's default for the family)
CHAT_PROMPT = "Describe this image in one sentence."  # capsearch's default for chat-template families
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>Answer:{% endif %}"
)
TRAIN_IMAGES, TRAIN_SEED, EVAL_SEED = 2000, 50_000, 60_000
PALIGEMMA_STEPS, LLAVA_STEPS = 800, 400  # colour and shape right in about 1 of 3 and 1 of 2 captions
FLORENCE2_TASK = "<CAPTION>"  # Florence-2's caption task token (and capsearch's default for the family)
FLORENCE2_TASK_TEXT = "What does the image describe?"  # the text its processor puts in the token's place
PATCH = 16
IMAGE_TOKENS = (IMAGE_SIZE // PATCH) ** 2


def _word_tokenizer(texts: list[str], specials: list[str], extra: dict[str, str] | None = None, **named: str) -> Any:
    """A lower-cased word-level ``PreTrainedTokenizerFast`` over ``texts``' words and punctuation, with
    ``specials`` (and the ``named`` special tokens: bos, eos, pad, unk) kept whole; ``extra``: named roles of some
    of ``specials`` (``{"image_token": "<image>"}``), as a model's processor asks its tokenizer for them."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token=named["unk_token"]))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces, no space before punctuation
    every = list(dict.fromkeys([*named.values(), *specials]))
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=every, min_frequency=1))
    roles = {"extra_special_tokens": extra} if extra else {}
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **named, additional_special_tokens=specials, **roles)


def _scenes(count: int, seed: int) -> tuple[list[Image.Image], list[list[str]]]:
    scenes = generate_scenes(count, seed=seed)
    return [image for _, image, _ in scenes], [captions for _, _, captions in scenes]


def _vision(**extra: Any) -> dict[str, Any]:
    return {**TOWER, "num_hidden_layers": 2, "image_size": IMAGE_SIZE, "patch_size": PATCH, **extra}


def _decoder(vocab: int, **extra: Any) -> dict[str, Any]:
    return {
        **TOWER, "vocab_size": vocab, "num_hidden_layers": 2, "num_key_value_heads": 4, "head_dim": 24,
        "max_position_embeddings": 64, **extra,
    }  # fmt: skip


def _train(model: torch.nn.Module, batches: Any, steps: int, seed: int, lr: float = 3e-3) -> None:
    """AdamW + one-cycle over ``batches(indices)`` of 64 random pairs."""
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(steps):
        loss = model(**batches(torch.randint(0, TRAIN_IMAGES, (64,), generator=generator))).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    model.eval()


def _one_caption_each(captions: list[list[str]], seed: int) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, len(captions[0]), (len(captions),), generator=generator).tolist()
    return [group[pick] for group, pick in zip(captions, picks, strict=True)]


def _fit_and_save(
    model: Any, processor: Any, asking: tuple[str, str], scenes: tuple[list[Image.Image], list[list[str]]],
    hyper: tuple[int, int, float], folder: Path,
) -> None:  # fmt: skip
    """Train ``model`` on the scenes' captions as capsearch asks it (``asking``: the way and the prompt, see
    :mod:`capsearch.models.asking`; ``hyper``: steps, seed, learning rate), then save it and its processor in
    ``folder``."""
    (images, captions), (steps, seed, lr), (way, prompt) = scenes, hyper, asking
    tokenizer = processor.tokenizer
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    pixels = _pixels(processor.image_processor, images)
    asked = ask(way, model.config.model_type, processor, tokenizer, prompt, folder.name)

    def batch(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        texts = _one_caption_each([captions[i] for i in idx.tolist()], int(idx.sum()))
        return {**teacher_forced(way, tokenizer, asked, texts), "pixel_values": pixels[idx]}

    _train(model, batch, steps, seed, lr)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)


def train_toy_paligemma(out_dir: Path, steps: int = PALIGEMMA_STEPS, seed: int = 0) -> Any:
    """Train and save a small PaliGemmaForConditionalGeneration (prefix ``caption en``, suffix the caption)."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    _set_seed(seed)
    images, captions = _scenes(TRAIN_IMAGES, TRAIN_SEED + seed)
    flat = [c for group in captions for c in group]
    tokenizer = _word_tokenizer(
        [*flat, PALIGEMMA_PROMPT], ["<image>", "\n"], bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>",
    )  # fmt: skip
    image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    image_processor.image_seq_length = IMAGE_TOKENS
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = PaliGemmaConfig(
        vision_config=_vision(model_type="siglip_vision_model", vision_use_head=False),
        text_config=_decoder(len(tokenizer), model_type="gemma", bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        image_token_index=processor.image_token_id, projection_dim=TOWER["hidden_size"],
    )  # fmt: skip
    model = PaliGemmaForConditionalGeneration(config)
    _fit_and_save(model, processor, ("prefix", PALIGEMMA_PROMPT), (images, captions), (steps, seed, 2e-3),
                  out_dir / "toy-paligemma")  # fmt: skip
    return model, processor


def train_toy_llava(out_dir: Path, steps: int = LLAVA_STEPS, seed: int = 0) -> Any:
    """Train and save a small LlavaForConditionalGeneration asked through its chat template; the loss on the
    answer tokens only."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    _set_seed(seed)
    images, captions = _scenes(TRAIN_IMAGES, TRAIN_SEED + seed)
    flat = [c for group in captions for c in group]
    tokenizer = _word_tokenizer(
        [*flat, CHAT_PROMPT, "Answer:"], ["<image>", "<|user|>", "<|assistant|>", "<|end|>"], bos_token="<s>",
        eos_token="<|end|>", pad_token="<pad>", unk_token="<unk>",
    )  # fmt: skip
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE, patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip
    config = LlavaConfig(
        vision_config=_vision(model_type="clip_vision_model"),
        text_config=_decoder(len(tokenizer), model_type="llama", bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        image_token_index=processor.image_token_id, vision_feature_select_strategy="default",
        vision_feature_layer=-1, image_seq_length=IMAGE_TOKENS,
    )  # fmt: skip
    model = LlavaForConditionalGeneration(config)
    _fit_and_save(model, processor, ("chat", CHAT_PROMPT), (images, captions), (steps, seed, 3e-3),
                  out_dir / "toy-llava")  # fmt: skip
    return model, processor


def florence2(words: list[str], stride: int = 8) -> tuple[Any, Any]:
    """A small Florence2ForConditionalGeneration (a DaViT tower of two stages, a BART encoder-decoder) with random
    weights, and its real ``Florence2Processor`` (Florence-2's image settings: a square resize without crop,
    bicubic) over a word-level tokenizer of ``words``, asked by its task token."""
    from transformers import Florence2Config, Florence2ForConditionalGeneration, Florence2Processor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = _word_tokenizer(
        [*words, FLORENCE2_TASK_TEXT], ["<image>"], {"image_token": "<image>"}, bos_token="<s>", eos_token="</s>",
        pad_token="<pad>", unk_token="<unk>",
    )  # fmt: skip
    image_processor = CLIPImageProcessorPil(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, do_center_crop=False, resample=3
    )
    image_processor.image_seq_length = (IMAGE_SIZE // (2 * stride)) ** 2 + 1  # the grid after both stages, + 1
    # the text tasks' post-processing as the real checkpoints configure it (their other tasks' rules left out)
    processor = Florence2Processor(
        image_processor=image_processor, tokenizer=tokenizer, post_processor_config={"pure_text": {}}
    )
    hidden = TOWER["hidden_size"]
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id, "decoder_start_token_id": tokenizer.eos_token_id,
           "forced_eos_token_id": tokenizer.eos_token_id}  # fmt: skip
    config = Florence2Config(
        vision_config={"depths": [1, 2], "patch_size": [stride + 1, 3], "patch_stride": [stride, 2],
                       "patch_padding": [stride // 2, 1], "patch_prenorm": [False, True], "embed_dim": [48, hidden],
                       "num_heads": [2, 4], "num_groups": [2, 4], "window_size": 4, "projection_dim": hidden,
                       "max_position_embeddings": 32, "max_temporal_embeddings": 4, "drop_path_rate": 0.0},
        text_config={"vocab_size": len(tokenizer), "d_model": hidden, "encoder_layers": 2, "decoder_layers": 2,
                     "encoder_attention_heads": 4, "decoder_attention_heads": 4, "encoder_ffn_dim": 256,
                     "decoder_ffn_dim": 256, "max_position_embeddings": 160, "dropout": 0.0,
                     "attention_dropout": 0.0, **ids},
        image_token_id=tokenizer.image_token_id,
    )  # fmt: skip
    model = Florence2ForConditionalGeneration(config)
    model.generation_config.decoder_start_token_id = tokenizer.eos_token_id
    return model, processor


def build_florence2(folder: str | Path, steps: int = 0, seed: int = 0) -> Path:
    """:func:`florence2` over the scenes' words, saved in ``folder``: random weights, or trained ``steps`` steps on
    the scenes as capsearch asks it (``<CAPTION>``; a few dozen steps: it writes scene-like captions and ends them)."""
    _set_seed(seed)
    if not steps:
        return _save_random(*florence2(_tiny_words()), Path(folder))
    images, captions = _scenes(TRAIN_IMAGES, TRAIN_SEED + seed)
    model, processor = florence2([c for group in captions for c in group])
    _fit_and_save(model, processor, ("task", FLORENCE2_TASK), (images, captions), (steps, seed, 1e-3), Path(folder))
    return Path(folder)


@torch.inference_mode()
def _accuracy(captions: list[str], seed: int) -> float:
    """The share of ``captions`` (of the scenes of ``seed``, in order) naming their scene's colour and shape."""
    scenes = generate_scenes(len(captions), seed=seed)
    right = sum(names_colour_and_shape(c, s.colour, s.shape) for c, (s, _, _) in zip(captions, scenes, strict=True))
    return right / len(captions)


def build_toy_paligemma(out_dir: str | Path, steps: int = PALIGEMMA_STEPS, seed: int = 0) -> dict[str, float]:
    """Train and save ``toy-paligemma``; the share of its captions of unseen scenes naming colour and shape."""
    model, processor = train_toy_paligemma(Path(out_dir), steps, seed)
    images, _ = _scenes(100, EVAL_SEED + seed)
    inputs = processor(text=[PALIGEMMA_PROMPT] * len(images), images=images, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return {"paligemma_colour_and_shape_accuracy": _accuracy(answers, EVAL_SEED + seed)}


def build_toy_llava(out_dir: str | Path, steps: int = LLAVA_STEPS, seed: int = 0) -> dict[str, float]:
    """Train and save ``toy-llava``; the share of its captions of unseen scenes naming colour and shape."""
    model, processor = train_toy_llava(Path(out_dir), steps, seed)
    images, _ = _scenes(100, EVAL_SEED + seed)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": CHAT_PROMPT}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(text=[prompt] * len(images), images=images, return_tensors="pt")
    with torch.inference_mode():
        output = model.generate(**inputs, max_new_tokens=20, do_sample=False)
    answers = processor.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return {"llava_colour_and_shape_accuracy": _accuracy(answers, EVAL_SEED + seed)}


# VLMs whose processor tiles each image or gives it its own patch grid: built with random weights, for what their
# processors make and how capsearch batches it (the captions are the model's, not a scene's description)
QWEN2_VL_TEMPLATE = (  # Qwen2-VL's, without its default system message
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for part in message['content'] %}{% if "
    "part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_TEXT = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 4096}  # fmt: skip
# SmolVLM-256M's published shape (HuggingFaceTB/SmolVLM-256M-Instruct; model type idefics3): a SigLIP-B/16 tower at
# 512 px, pixel shuffle by 4 (64 image tokens per tile), SmolLM2-135M's decoder; images up to 2048 px in 512 px tiles
SMOLVLM_256M = {
    "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
               "image_size": 512, "patch_size": 16},
    "text": {"hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
             "num_key_value_heads": 3, "max_position_embeddings": 8192, "rope_theta": 100000.0},
    "scale_factor": 4, "longest_edge": 2048, "vocab_size": 49280,
}  # fmt: skip
TINY_IDEFICS3 = {
    "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
               "image_size": 32, "patch_size": 8},
    "text": TINY_TEXT, "scale_factor": 2, "longest_edge": 64, "vocab_size": 0,
}  # fmt: skip


def _tiny_words() -> list[str]:
    return [c for _, _, group in generate_scenes(40, seed=TRAIN_SEED) for c in group] + [CHAT_PROMPT]


def build_idefics3(folder: str | Path, shape: dict[str, Any] = TINY_IDEFICS3, seed: int = 0) -> Path:
    """An ``Idefics3ForConditionalGeneration`` (SmolVLM's class) of ``shape`` with random weights and its real
    processor (image splitting into tiles of the tower's size, a global image, row/column tokens; SmolVLM's chat
    template as transformers ships it), saved in ``folder``. ``vocab_size`` 0: the word-level tokenizer's size."""
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE as SMOLVLM_TEMPLATE

    _set_seed(seed)
    tiles = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    tokenizer = _word_tokenizer(
        [*_tiny_words(), "User:", "Assistant:"],
        ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>", *tiles],
        bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<pad>", unk_token="<unk>",
    )  # fmt: skip
    vision, tile = shape["vision"], shape["vision"]["image_size"]
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": shape["longest_edge"]}, max_image_size={"longest_edge": tile}
    )
    image_tokens = (tile // vision["patch_size"]) ** 2 // shape["scale_factor"] ** 2
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_tokens,
        chat_template=SMOLVLM_TEMPLATE,
    )  # fmt: skip
    ids = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
           "eos_token_id": tokenizer.eos_token_id}  # fmt: skip
    vocab = shape["vocab_size"] or len(tokenizer)
    config = Idefics3Config(
        vision_config=vision, text_config={"model_type": "llama", **shape["text"], "vocab_size": vocab, **ids},
        scale_factor=shape["scale_factor"], image_token_id=processor.image_token_id, pad_token_id=ids["pad_token_id"],
    )  # fmt: skip
    return _save_random(Idefics3ForConditionalGeneration(config), processor, Path(folder))


def build_qwen2_vl(folder: str | Path, seed: int = 0) -> Path:
    """A tiny ``Qwen2VLForConditionalGeneration`` with random weights and its real processor (each image resized to
    its own grid of 14 px patches, merged 2 x 2; Qwen2-VL's chat template), saved in ``folder``."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

    _set_seed(seed)
    tokenizer = _word_tokenizer(
        [*_tiny_words(), "user", "assistant"],
        ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
        bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<pad>", unk_token="<unk>",
    )  # fmt: skip
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112, patch_size=14, merge_size=2)
    processor = Qwen2VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2_VL_TEMPLATE,
    )  # fmt: skip
    config = Qwen2VLConfig(
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 48, "num_heads": 4, "mlp_ratio": 2,
                       "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        text_config={**TINY_TEXT, "vocab_size": len(tokenizer), "rope_scaling": {"type": "mrope",
                     "mrope_section": [2, 2, 2]}, "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id},
        image_token_id=processor.image_token_id, video_token_id=processor.video_token_id,
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
    )  # fmt: skip
    return _save_random(Qwen2VLForConditionalGeneration(config), processor, Path(folder))


def _save_random(model: Any, processor: Any, folder: Path) -> Path:
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":  # a quick look: python -m capsearch.demo.toy_vlms [steps]
    import sys
    import time

    steps_ = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    with tempfile.TemporaryDirectory() as folder:
        for build in (build_toy_llava, build_toy_paligemma):
            started = time.perf_counter()
            print(build.__name__, build(folder, steps_), f"{time.perf_counter() - started:.1f}s")
