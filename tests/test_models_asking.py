"""asking.py: instruction VLMs asked for a caption by a prefix prompt (PaliGemma's shape) and through a chat template
(LLaVA's shape), on toy models of the real classes trained on the generated scenes: they caption unseen scenes, a
batch equals one image at a time, no template text or special token reaches a caption, the prompt is part of the
recipe, and the VLMs capsearch does not run are refused in one line."""

from __future__ import annotations

import pytest
import torch

from capsearch.demo.toy_models import names_colour_and_shape
from capsearch.job import ImageTask
from capsearch.models import ModelLoadError
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.families import CHAT_PROMPT, captioner_family

GREEDY = DecodingSettings(num_beams=1, max_new_tokens=20, min_new_tokens=1)


@pytest.mark.parametrize(("name", "asking", "least"), [("toy-paligemma", "prefix", 5), ("toy-llava", "chat", 8)])
def test_instruction_vlms_caption_unseen_scenes_by_their_default_prompt_batched_as_alone(
    name, asking, least, toy_vlms, unseen
):
    source, ids, scenes = unseen
    captioner = Captioner(str(toy_vlms / name), None, "fp32", "cpu")
    assert captioner.family.asking == asking
    captions = captioner.caption_images(source, ids[:40], GREEDY, batch_size=8)
    right = sum(names_colour_and_shape(c, s.colour, s.shape) for c, (s, _, _) in zip(captions, scenes, strict=False))
    # colour and shape by chance: about 1 in 15 (trained on this Xeon: PaliGemma 1 in 3, LLaVA 1 in 2 of 100)
    assert right >= least, captions
    assert captioner.caption_images(source, ids[:5], GREEDY, batch_size=1) == captions[:5]
    beams = captioner.caption_images(source, ids[:5], DecodingSettings(3, 20, 1), batch_size=5)
    assert all(beams) and beams == captioner.caption_images(source, ids[:5], DecodingSettings(3, 20, 1), batch_size=1)


def test_a_chat_template_and_its_special_tokens_never_reach_a_caption(toy_vlms, unseen):
    source, ids, _ = unseen
    captioner = Captioner(str(toy_vlms / "toy-llava"), None, "fp32", "cpu")
    asked = captioner.asked(None)
    assert asked.text == f"<s><|user|><image>{CHAT_PROMPT}<|end|><|assistant|>Answer:"  # the template, as written
    captions = captioner.caption_images(source, ids[:8], GREEDY, batch_size=8)
    for caption in captions:
        assert caption and caption == " ".join(caption.split())
        assert not any(leak in caption.lower() for leak in ("answer", "describe", "<", "user", "assistant"))
    # what a reader of the whole output would show: the template's plain text ("Answer:") and the prompt
    width, height = captioner.pixels.output_size()
    import torch

    pixels = torch.zeros((1, 3, height, width), dtype=torch.uint8)
    output = captioner.model.generate(
        pixel_values=captioner.normalised_pixels(pixels), **asked.inputs, max_new_tokens=5, do_sample=False
    )
    whole = captioner.tokenizer.decode(output[0], skip_special_tokens=True)
    assert "answer :" in whole and "describe" in whole


def test_the_prompt_decides_the_recipe_and_the_default_is_the_familys(toy_vlms, toy_models):
    llava = str(toy_vlms / "toy-llava")
    default = ImageTask(Captioner, llava, None, "fp32", "cpu", GREEDY)
    other = ImageTask(Captioner, llava, None, "fp32", "cpu", DecodingSettings(1, 20, 1, prompt="What is shown?"))
    assert default.recipe.key() != other.recipe.key() and default.identity() != other.identity()
    captioner = Captioner(llava, None, "fp32", "cpu")
    assert captioner.asked(None).text != captioner.asked("What is shown?").text
    paligemma = Captioner(str(toy_vlms / "toy-paligemma"), None, "fp32", "cpu")
    assert paligemma.asked(None).text == "caption en" and paligemma.family.prompt(None) == "caption en"
    assert Captioner(str(toy_models / "toy-blip"), "main", "fp32", "cpu").asked(None).inputs == {}  # its own start


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"model_type": "qwen3_vl", "architectures": ["Qwen3VLForConditionalGeneration"]}, "own patch grid"),
        ({"model_type": "smolvlm", "architectures": ["SmolVLMForConditionalGeneration"]}, "into tiles"),
        (
            {"model_type": "florence2", "auto_map": {"AutoModelForCausalLM": "modeling_florence2.Florence2"}},
            "Use florence-community/Florence-2-base",
        ),
    ],
)
def test_vlms_capsearch_does_not_run_are_refused_in_one_line(config, message):
    with pytest.raises(ModelLoadError) as refused:
        captioner_family(config)
    text = str(refused.value)
    assert text.startswith("caption.model: ") and message in text and "\n" not in text, text


@pytest.fixture(scope="module")
def florence2(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small Florence-2 (the real classes and processor) trained for a few steps: it writes scene-like words and
    ends its captions (its colours and shapes are mostly wrong)."""
    from capsearch.demo.toy_vlms import build_florence2

    return str(build_florence2(tmp_path_factory.mktemp("florence2") / "florence2", steps=30))


def test_florence2_is_asked_by_its_task_token_and_answers_as_its_processor_reads_it(florence2, unseen):
    source, ids, _ = unseen
    captioner = Captioner(florence2, None, "fp32", "cpu")
    asked = captioner.asked(None)
    assert captioner.family.asking == "task" and asked.text == "<CAPTION>"
    # the processor puts the task's text in the token's place, after the image tokens
    assert captioner.tokenizer.decode(asked.inputs["input_ids"][0], skip_special_tokens=True).strip() == (
        "what does the image describe?"
    )
    images = [source.open_rgb(image_id) for image_id in ids[:6]]
    for settings in (DecodingSettings(1, 8, 3), DecodingSettings(3, 8, 3)):
        captions = captioner.caption_images(source, ids[:6], settings, batch_size=6)
        inputs = captioner.processor(images=images, text=["<CAPTION>"] * 6, return_tensors="pt")
        output = captioner.model.generate(
            **inputs, num_beams=settings.num_beams, max_new_tokens=8, min_new_tokens=3, do_sample=False
        )
        texts = captioner.processor.batch_decode(output, skip_special_tokens=True)
        theirs = [
            captioner.processor.post_process_generation(text, task="<CAPTION>", image_size=image.size)["<CAPTION>"]
            for text, image in zip(texts, images, strict=True)
        ]
        assert captions == [" ".join(text.split()) for text in theirs] and all(captions)
        assert captioner.caption_images(source, ids[:6], settings, batch_size=1) == captions
    with pytest.raises(ModelLoadError, match=r"^caption\.prompt: <OD> answers with description_with_bboxes"):
        captioner.asked("<OD>")


def test_florence2_fine_tunes_on_what_it_generates_as_it_generates_it(florence2, unseen):
    """Teacher forcing on the model's own greedy captions gives back exactly those tokens: the encoder's prompt, the
    decoder's start and the labels (<s>, caption, </s>) line up with generation, token by token."""
    from capsearch.models.asking import IGNORE, teacher_forced

    source, ids, _ = unseen
    captioner = Captioner(florence2, None, "fp32", "cpu")
    pixels = torch.stack([captioner.preprocess(source.open_rgb(image_id)) for image_id in ids[:4]])
    captions = captioner.caption_pixels(pixels, DecodingSettings(1, 12, 1))
    inputs = teacher_forced("task", captioner.tokenizer, captioner.asked(None), captions)
    labels = inputs["labels"]
    assert (labels[:, 0] == captioner.tokenizer.bos_token_id).all()
    with torch.inference_mode():
        logits = captioner.model(pixel_values=captioner.normalised_pixels(pixels), **inputs).logits
    scored = labels != IGNORE
    assert torch.equal(logits.argmax(-1)[scored], labels[scored])
