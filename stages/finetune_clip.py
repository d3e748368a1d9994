"""Stage finetune_clip: contrastive fine-tuning of the dual encoder on the train split, best epoch on dev.

With ``finetune.clip.epochs: 0`` nothing is trained or loaded: the model folder records that the base model of
``clip.*`` is the run's dual encoder. Otherwise the best epoch's model is saved there (``save_pretrained``,
safetensors) and the embed stages, tune_fusion, agreement, report, search and the service use it. DVCLive logs
the train loss per step and the dev Recall@K per epoch (``dvc plots show``); a killed run resumes from its last
checkpoint (under the result cache's folder, removed when the stage finishes).
"""

import logging

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout
from capsearch.data.images import ImageReadError, source_images
from capsearch.data.subset import build_subset, check_workers, find_text_dir
from capsearch.data.webdataset import ShardError
from capsearch.finetune.handover import write_record
from capsearch.io import atomic_folder, write_json, write_text
from capsearch.params import ClipParams, EvaluateParams, FinetuneClipParams, ParamError, RuntimeParams, SourceParams

RUN = RunLayout()
CURVES = (("plots/metrics/train/loss.tsv", "loss"), ("plots/metrics/dev/mean_recall.tsv", "mean_recall"))  # dvc.yaml


class LiveLogger:
    """The training's steps and epochs into DVCLive's files (``metrics/finetune_clip``)."""

    def __init__(self, directory: str) -> None:
        from dvclive import Live

        logging.getLogger("dvclive").setLevel(logging.WARNING)
        self.live = Live(directory, save_dvc_exp=False, dvcyaml=None)  # dvc.yaml declares the files itself

    def step(self, step: int, loss: float, learning_rate: float) -> None:
        self.live.step = step
        self.live.log_metric("train/loss", loss)
        self.live.log_metric("train/learning_rate", learning_rate)

    def epoch(self, epoch: int, step: int, dev: dict) -> None:
        self.live.step = step
        for direction in ("text_to_image", "image_to_text"):
            for name, value in dev[direction].items():
                if name.startswith("R@"):
                    self.live.log_metric(f"dev/{direction}/{name}", value)
        self.live.log_metric("dev/mean_recall", dev["mean_recall"])
        self.live.log_metric("dev/epoch", epoch, plot=False)

    def finish(self, summary_: dict) -> None:
        self.live.summary = summary_
        self.live.make_summary()


def main() -> None:
    timer = Timer()
    p, reported_split, source_params, clip, evaluate, knobs = read_params(
        "finetune_clip", FinetuneClipParams, "subset.split", SourceParams, ClipParams, EvaluateParams, RuntimeParams
    )
    try:
        p.check_against(reported_split)
    except ParamError as exc:
        fail("finetune_clip", exc)
    base = {"model": clip.model, "revision": clip.revision}
    if p.epochs == 0:
        with atomic_folder(RUN.clip_model) as folder:
            write_record(folder, {"fine_tuned": False, "base": base})
        with atomic_folder(RUN.finetune_clip_log) as folder:
            write_json(folder / "metrics.json", {"epochs": 0})
            for curve, column in CURVES:  # empty curves: `dvc plots show` draws nothing and warns of nothing
                write_text(folder / curve, f"step\t{column}\n")
        summary("finetune_clip", f"off (finetune.clip.epochs: 0): the run uses {clip.model} as it is")
        return
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from capsearch.cache import default_cache_dir, namespace
    from capsearch.finetune.checkpoint import CheckpointStore
    from capsearch.finetune.contrastive import finetune_dual_encoder, pairs_of, save_model
    from capsearch.imports import code_fingerprint
    from capsearch.models.embedder import DualEncoder
    from capsearch.models.runtime import ModelLoadError, resolve_runtime

    try:
        rt = resolve_runtime(knobs, use_cache=False)
        text_dir = find_text_dir(RUN.text_dir, source_params.kind) if source_params.kind != "webdataset" else None
        source = source_images(source_params.kind, RUN.root / source_params.images)
        workers = check_workers(knobs.num_workers)
        sets = {
            split: build_subset(
                text_dir, source, split, count, p.seed, section="finetune.clip", workers=workers,
                kind=source_params.kind, count_param=f"finetune.clip.{split}_images",
            )
            for split, count in (("train", p.train_images), ("dev", p.dev_images))
        }  # fmt: skip
        train, dev = (pairs_of(source, sets[s].images, sets[s].references) for s in ("train", "dev"))
        encoder = DualEncoder(clip.model, clip.revision, "fp32", rt.device)
        key = namespace(
            task="finetune-clip",
            model=encoder.fingerprint(),
            code=code_fingerprint("capsearch.finetune.contrastive"),
            params=p.as_yaml(),
            train=[train.image_ids, train.captions],
            dev=[dev.image_ids, dev.captions],
            ks=list(evaluate.ks),
        )
        checkpoints = CheckpointStore((knobs.cache_dir or default_cache_dir()) / "checkpoints" / f"finetune-clip-{key}")
        live = LiveLogger(str(RUN.finetune_clip_log))
        outcome = finetune_dual_encoder(
            encoder, train, dev, p, ks=evaluate.ks, batch_sizes=rt.batch_sizes, workers=rt.num_workers,
            checkpoints=checkpoints, checkpoint_steps=knobs.checkpoint_steps, logger=live,
        )  # fmt: skip
        with atomic_folder(RUN.clip_model) as folder:
            save_model(encoder, folder)
            record = {"fine_tuned": True, "base": base, "best_epoch": outcome.best_epoch, "params": p.as_yaml()}
            write_record(folder, record)
    except (ValueError, OSError, ModelLoadError, ImageReadError, ShardError) as exc:
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
        f"{best['mean_recall']:.1f} "
        f"(best epoch {outcome.best_epoch}){resumed}; {outcome.seconds_per_epoch:.1f}s per epoch on {rt.device}, "
        f"{timer.seconds:.1f}s in all -> {RUN.clip_model}",
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
