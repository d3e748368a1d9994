"""Stage embed_images: L2-normalised CLIP image embeddings, written part by part (one per input shard) + manifest."""

from _common import fail, read_params, summary

from capsearch.artifacts import PartStore, RunLayout, plan_parts, read_image_table
from capsearch.errors import EXPECTED
from capsearch.finetune.handover import dual_encoder_of
from capsearch.params import ClipParams, RuntimeParams

RUN = RunLayout()


def main() -> None:
    p, knobs = read_params("embed_images", ClipParams, RuntimeParams)
    try:  # the fine-tuned model where finetune_clip trained one, else clip.* as it is
        p = dual_encoder_of(RUN.clip_model, p)
    except EXPECTED as exc:
        fail("embed_images", exc)
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from capsearch.engine import compute_parts
    from capsearch.job import ImageTask
    from capsearch.models.registry import dual_encoder_class
    from capsearch.models.runtime import model_label, resolve_runtime

    try:
        parts = plan_parts(read_image_table(RUN.subset_images))
        rt = resolve_runtime(knobs, use_cache=knobs.engine == "local")
        task = ImageTask(dual_encoder_class(p.model), p.model, p.revision, p.precision, rt.device, decode=rt.decode)
        store = PartStore(RUN.image_vectors, task.output_kind, task.identity())
        run = compute_parts(task, parts, store, rt, knobs)
    except EXPECTED as exc:
        fail("embed_images", exc)
    note = f"; {task.load_note}" if task.load_note else ""
    summary(
        "embed_images",
        f"embedded by {model_label(run.manifest['model'], run.manifest['revision'])} into {run.manifest['dims']} dims "
        f"({p.precision}{note}): {run.describe()} in {run.seconds:.1f}s -> {RUN.image_vectors}",
    )


if __name__ == "__main__":
    main()
