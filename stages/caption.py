"""Stage caption: captions of every subset image by the run's captioner (the fine-tuned one where
finetune_captioner trained one), written part by part (one per input shard) + manifest."""

from _common import fail, read_params, summary

from capsearch.artifacts import PartStore, RunLayout, plan_parts, read_image_table
from capsearch.errors import EXPECTED
from capsearch.finetune.handover import captioner_of
from capsearch.params import CaptionParams, RuntimeParams

RUN = RunLayout()


def main() -> None:
    p, knobs = read_params("caption", CaptionParams, RuntimeParams)
    try:  # the fine-tuned model where finetune_captioner trained one, else caption.* as it is
        p = captioner_of(RUN.captioner_model, p)
    except EXPECTED as exc:
        fail("caption", exc)
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from capsearch.engine import compute_parts
    from capsearch.job import ImageTask
    from capsearch.models.asking import told
    from capsearch.models.captioner import Captioner, DecodingSettings
    from capsearch.models.runtime import model_label, resolve_runtime
    from capsearch.progress import counted

    try:
        parts = plan_parts(read_image_table(RUN.subset_images))
        rt = resolve_runtime(knobs, use_cache=knobs.engine == "local")
        settings = DecodingSettings.of(p)
        task = ImageTask(Captioner, p.model, p.revision, p.precision, rt.device, settings, rt.decode)
        store = PartStore(RUN.generated, task.output_kind, task.identity())
        run = compute_parts(task, parts, store, rt, knobs)
    except EXPECTED as exc:
        fail("caption", exc)
    asked = told(task.family.asking, task.family.prompt(settings.prompt))  # the family's default where it is null
    summary(
        "caption",
        f"captioned by {model_label(run.manifest['model'], run.manifest['revision'])} ({p.precision}, "
        f"{counted(settings.num_beams, 'beam')}{f', {asked}' if asked else ''}): {run.describe()} in "
        f"{run.seconds:.1f}s -> {RUN.generated}",
    )


if __name__ == "__main__":
    main()
