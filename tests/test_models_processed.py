"""processed.py: VLMs whose processor tiles each image (SmolVLM / Idefics3) or gives it its own patch grid (Qwen2-VL),
on tiny models of the real classes and processors with random weights: a batch joined from one image at a time is
the processor's own batch, tensor by tensor; captions are exactly what the model generates after the prompt as
transformers' own processor and generate give them, batched or alone, in decode workers or not; what cannot run
them (the Ray engine, fine-tuning) says so in one line."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from capsearch.artifacts import PlannedPart
from capsearch.data.images import ImageSource
from capsearch.demo.toy_vlms import build_idefics3, build_qwen2_vl
from capsearch.job import EngineError, ImageTask
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.families import captioner_family
from capsearch.models.pixels import probe_image
from capsearch.models.processed import ProcessorPipeline, joined
from capsearch.models.runtime import resolve_runtime
from capsearch.params import RuntimeParams

BUILDERS = {"idefics3": build_idefics3, "qwen2_vl": build_qwen2_vl}


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each family's tiny model, saved as save_pretrained writes it (about a second for both)."""
    folder = tmp_path_factory.mktemp("tiled")
    return {family: str(build(folder / family)) for family, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> tuple[ImageSource, list[str]]:
    """Images of different sizes and shapes (wide, tall, small, large): different numbers of tiles and patches."""
    folder = tmp_path_factory.mktemp("shapes")
    sizes = [(123, 87), (40, 90), (200, 50), (64, 64), (30, 20), (150, 140), (90, 180)]
    for i, (width, height) in enumerate(sizes):
        probe_image(width, height).rotate(40 * i).save(folder / f"{i}.png")
    return ImageSource(folder), [f"{i}.png" for i in range(len(sizes))]


def _reference(captioner: Captioner, image: Image.Image, settings: DecodingSettings) -> str:
    """The caption as transformers alone gives it: the processor on the image and the templated prompt, generate,
    the tokens after the prompt decoded without special tokens."""
    text = captioner.asked(settings.prompt).text
    inputs = captioner.processor(images=[image], text=[text], return_tensors="pt")
    output = captioner.model.generate(
        **inputs, num_beams=settings.num_beams, max_new_tokens=settings.max_new_tokens,
        min_new_tokens=settings.min_new_tokens, do_sample=False,
    )  # fmt: skip
    new = output[0, inputs["input_ids"].shape[1] :]
    return " ".join(captioner.tokenizer.decode(new, skip_special_tokens=True).split())


@pytest.mark.parametrize("family", BUILDERS)
def test_a_batch_joined_from_one_image_at_a_time_is_the_processors_own_batch(family, tiled, shapes):
    source, ids = shapes
    captioner = Captioner(tiled[family], None, "fp32", "cpu")
    assert captioner.family.model_type == family and captioner.family.prepared_by_processor
    pipeline = captioner.image_pipeline(DecodingSettings(1, 8, 1))
    assert isinstance(pipeline, ProcessorPipeline) and "<" in pipeline.text  # the template's text, image place
    images = [source.open_rgb(image_id, pipeline.draft_size) for image_id in ids]
    rows = [pipeline(image) for image in images]
    assert len({int(row["input_ids"].shape[1]) for row in rows}) > 1  # images of their own number of tokens
    ours = joined(rows, captioner.tokenizer.pad_token_id)
    theirs = captioner.processor(
        images=[[image] for image in images] if family == "idefics3" else images, text=[pipeline.text] * len(images),
        return_tensors="pt", padding=True, padding_side="left",
    )  # fmt: skip
    assert set(ours) == {name for name, value in theirs.items() if isinstance(value, torch.Tensor)}
    for name, value in ours.items():
        assert value.dtype == theirs[name].dtype and torch.equal(value, theirs[name]), name


@pytest.mark.parametrize("family", BUILDERS)
def test_tiled_vlms_caption_exactly_as_transformers_alone_in_batches_and_workers(family, tiled, shapes):
    source, ids = shapes
    captioner = Captioner(tiled[family], None, "fp32", "cpu")
    for settings in (DecodingSettings(1, 8, 1), DecodingSettings(3, 6, 2)):
        batched = captioner.caption_images(source, ids, settings, batch_size=3)
        tokens = captioner.last_run.tokens
        alone = [_reference(captioner, source.open_rgb(image_id), settings) for image_id in ids]
        assert batched == alone  # the answer only: no template text, no prompt, no special token
        assert captioner.caption_images(source, ids, settings, batch_size=1) == alone
        # caption tokens generated: the word-level tokenizer gives each caption back its own ids
        assert tokens == sum(len(captioner.tokenizer(c, add_special_tokens=False)["input_ids"]) for c in alone) > 0
    in_worker = captioner.caption_images(source, ids[:4], DecodingSettings(1, 8, 1), batch_size=2, num_workers=1)
    assert in_worker == captioner.caption_images(source, ids[:4], DecodingSettings(1, 8, 1), batch_size=4)


def test_the_ray_engine_and_fine_tuning_refuse_tiled_vlms_in_one_line(tiled, shapes):
    from capsearch.finetune.captioning import CaptioningTask
    from capsearch.params import FinetuneCaptionerParams
    from capsearch.ray_engine import ray_parts

    source, ids = shapes
    task = ImageTask(Captioner, tiled["qwen2_vl"], None, "fp32", "cpu", DecodingSettings(1, 8, 1))
    knobs = RuntimeParams(device="cpu", num_workers=0, cache=False, engine="ray")
    part = PlannedPart("p0", str(source.location), tuple(ids))
    with pytest.raises(EngineError) as refused:
        next(ray_parts(task, [part], resolve_runtime(knobs, use_cache=False), knobs, {}))
    assert str(refused.value).startswith("runtime.engine: ") and "\n" not in str(refused.value)
    captioner = Captioner(tiled["idefics3"], None, "fp32", "cpu")
    with pytest.raises(ValueError, match=r"^finetune\.captioner\.epochs: .*idefics3") as refused:
        CaptioningTask(captioner, FinetuneCaptionerParams(epochs=1), DecodingSettings(1, 8, 1), 2, 0)
    assert "\n" not in str(refused.value)


def test_auto_caption_batches_start_by_family_and_a_set_size_is_kept():
    auto = resolve_runtime(RuntimeParams(device="cpu", cache=False), use_cache=False)
    assert auto.auto_batches >= {"caption"}
    family = {t: captioner_family({"model_type": t}) for t in ("blip", "llava", "idefics3", "qwen2_vl")}
    assert [auto.batch_for("caption", family[t]) for t in family] == [8, 4, 2, 2]
    assert auto.batch_for("caption") == 8
    fixed = resolve_runtime(RuntimeParams(device="cpu", cache=False, batch_size={"caption": 5}), use_cache=False)
    assert [fixed.batch_for("caption", family[t]) for t in family] == [5, 5, 5, 5]
