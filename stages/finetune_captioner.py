"""Stage finetune_captioner: teacher-forced fine-tuning of the captioner on the train split's reference captions,
best epoch by CIDEr-D of greedy captions on dev.

With ``finetune.captioner.epochs: 0`` nothing is trained or loaded: the model folder records that the base model
of ``caption.*`` is the run's captioner. Otherwise the best epoch's model is saved there (``save_pretrained``,
safetensors) and the caption stage, ``capsearch`` and the service use it. DVCLive logs the train loss per step and
the dev CIDEr-D and BLEU-4 per epoch (``dvc plots show``); a killed run resumes from its last checkpoint.
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
from capsearch.params import CaptionParams, FinetuneCaptionerParams, RuntimeParams, SourceParams

RUN = RunLayout()
CURVES = (("plots/metrics/train/loss.tsv", "loss"), ("plots/metrics/dev/CIDEr-D.tsv", "CIDEr-D"))  # dvc.yaml
OUTPUTS = (RUN.captioner_model, RUN.finetune_captioner_log, CURVES)  # the model folder, the DVCLive folder, its curves


def main() -> None:
    timer = Timer()
    p, reported_split, source_params, caption, knobs = read_params(
        "finetune_captioner", FinetuneCaptionerParams, "subset.split", SourceParams, CaptionParams, RuntimeParams
    )
    base = base_unless_off("finetune_captioner", p, reported_split, caption, OUTPUTS)
    if base is None:
        return
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from functools import partial

    from capsearch.finetune.captioning import captioning_task
    from capsearch.models.captioner import Captioner, DecodingSettings
    from capsearch.models.runtime import resolve_runtime

    try:
        rt = resolve_runtime(knobs, use_cache=False)
        train, dev = train_and_dev(RUN, source_params, p, knobs.num_workers)
        decoding = DecodingSettings.of(caption)
        weights = Captioner.fingerprint_of(caption.model, caption.revision, "caption.model")
        checkpoints = checkpoint_store(
            "finetune-captioner",
            weights,
            p,
            knobs,
            (train, dev),
            decoding=[decoding.max_new_tokens, decoding.min_new_tokens, decoding.prompt],
        )
        live = LiveLogger(RUN.finetune_captioner_log)
        make_task = partial(
            captioning_task, model_path(caption.model), caption.revision, p, decoding, rt.batch_sizes["caption"],
            rt.num_workers,
        )  # fmt: skip
        outcome = fine_tune(
            make_task, train, dev, p, knobs, rt.device, rt.num_workers, checkpoints=checkpoints, logger=live,
            out_dir=RUN.captioner_model, record={"base": base}, desc="fine-tune captioner",
        )  # fmt: skip
    except EXPECTED as exc:
        fail("finetune_captioner", exc)
    best, start = outcome.best_dev, outcome.base_dev
    scores = ("CIDEr-D", "BLEU-4")
    live.finish({"best_epoch": outcome.best_epoch, "dev": {
        "base": {name: start[name] for name in scores}, "best": {name: best[name] for name in scores}}})  # fmt: skip
    checkpoints.clear()
    resumed = f"; resumed from step {outcome.resumed_from_step}" if outcome.resumed_from_step else ""
    summary(
        "finetune_captioner",
        f"{p.epochs} epochs on {len(train.image_ids)} train images (batch {p.batch_size}, lr {p.learning_rate:g}, "
        f"freeze {p.freeze}, LoRA rank {p.lora_rank}): dev CIDEr-D {start['CIDEr-D']:.1f} -> {best['CIDEr-D']:.1f}, "
        f"BLEU-4 {start['BLEU-4']:.1f} -> {best['BLEU-4']:.1f} ({kept(outcome, p, len(train.image_ids))}){resumed}; "
        f"{outcome.seconds_per_epoch:.1f}s per epoch on {where(knobs, rt.device)}, {timer.seconds:.1f}s in all "
        f"-> {RUN.captioner_model}",
    )


if __name__ == "__main__":
    main()
