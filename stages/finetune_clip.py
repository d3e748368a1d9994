"""Stage finetune_clip: contrastive fine-tuning of the dual encoder on the train split, best epoch on dev.

With ``finetune.clip.epochs: 0`` nothing is trained or loaded: the model folder records that the base model of
``clip.*`` is the run's dual encoder. Otherwise the best epoch's model is saved there (``save_pretrained``,
safetensors) and the embed stages, tune_fusion, agreement, report, search and the service use it. DVCLive logs
the train loss per step and the dev Recall@K per epoch (``dvc plots show``); a killed run resumes from its last
checkpoint (under the result cache's folder, removed when the stage finishes).
"""

from _common import Timer, fail, read_params, summary
from _finetune import (
    LiveLogger,
    base_unless_off,
    checkpoint_store,
    fine_tune,
    kept,
    model_path,
    train_and_dev,
    where,
)

from capsearch.artifacts import RunLayout
from capsearch.errors import EXPECTED
from capsearch.params import ClipParams, EvaluateParams, FinetuneClipParams, RuntimeParams, SourceParams

RUN = RunLayout()
CURVES = (("plots/metrics/train/loss.tsv", "loss"), ("plots/metrics/dev/mean_recall.tsv", "mean_recall"))  # dvc.yaml
OUTPUTS = (RUN.clip_model, RUN.finetune_clip_log, CURVES)  # the model folder, the DVCLive folder, its curves


def main() -> None:
    timer = Timer()
    p, reported_split, source_params, clip, evaluate, knobs = read_params(
        "finetune_clip", FinetuneClipParams, "subset.split", SourceParams, ClipParams, EvaluateParams, RuntimeParams
    )
    base = base_unless_off("finetune_clip", p, reported_split, clip, OUTPUTS)
    if base is None:
        return
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from functools import partial

    from capsearch.finetune.contrastive import contrastive_task
    from capsearch.models.registry import dual_encoder_class
    from capsearch.models.runtime import resolve_runtime

    try:
        rt = resolve_runtime(knobs, use_cache=False)
        train, dev = train_and_dev(RUN, source_params, p, knobs.num_workers)
        weights = dual_encoder_class(clip.model).fingerprint_of(clip.model, clip.revision, "clip.model")
        checkpoints = checkpoint_store("finetune-clip", weights, p, knobs, (train, dev), ks=list(evaluate.ks))
        live = LiveLogger(RUN.finetune_clip_log)
        make_task = partial(
            contrastive_task, model_path(clip.model), clip.revision, p, evaluate.ks, rt.batch_sizes, rt.num_workers
        )
        outcome = fine_tune(
            make_task, train, dev, p, knobs, rt.device, rt.num_workers, checkpoints=checkpoints, logger=live,
            out_dir=RUN.clip_model, record={"base": base}, desc="fine-tune clip",
        )  # fmt: skip
    except EXPECTED as exc:
        fail("finetune_clip", exc)
    best, start = outcome.best_dev, outcome.base_dev
    live.finish({"best_epoch": outcome.best_epoch, "dev": {"base": _recalls(start), "best": _recalls(best)}})
    checkpoints.clear()
    resumed = f"; resumed from step {outcome.resumed_from_step}" if outcome.resumed_from_step else ""
    k = evaluate.ks[0]
    summary(
        "finetune_clip",
        f"{p.epochs} epochs on {len(train.image_ids)} train images (batch {p.batch_size}, lr {p.learning_rate:g}, "
        f"freeze {p.freeze}, LoRA rank {p.lora_rank}): dev text→image R@{k} {start['text_to_image'][f'R@{k}']:.1f} "
        f"-> {best['text_to_image'][f'R@{k}']:.1f}, mean recall {start['mean_recall']:.1f} -> "
        f"{best['mean_recall']:.1f} ({kept(outcome, p, len(train.image_ids))}){resumed}; "
        f"{outcome.seconds_per_epoch:.1f}s per epoch on {where(knobs, rt.device)}, {timer.seconds:.1f}s in all -> "
        f"{RUN.clip_model}",
    )


def _recalls(row: dict) -> dict:
    """The recall numbers of one dev evaluation, for DVC's metrics."""
    return {
        "text_to_image": {k: v for k, v in row["text_to_image"].items() if k.startswith("R@")},
        "image_to_text": {k: v for k, v in row["image_to_text"].items() if k.startswith("R@")},
        "mean_recall": row["mean_recall"],
    }


if __name__ == "__main__":
    main()
