"""Stage agreement: how well BLEU-4, CIDEr-D, CLIP-S and RefCLIP-S agree with Flickr8k's human judgments."""

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout, read_image_embeddings
from capsearch.cache import ResultCache
from capsearch.data.flickr8k import load_captions
from capsearch.data.subset import find_text_dir
from capsearch.errors import EXPECTED
from capsearch.evaluation.human_agreement import (
    CROWDFLOWER_FILE,
    EXPERT_FILE,
    human_agreement,
    read_crowdflower_judgments,
    read_expert_judgments,
)
from capsearch.finetune.handover import dual_encoder_of
from capsearch.io import write_json
from capsearch.params import ClipParams, RuntimeParams, SourceParams

RUN = RunLayout()
OUT = RUN.metrics / "human_agreement.json"


def main() -> None:
    timer = Timer()
    clip, source, knobs = read_params("agreement", ClipParams, SourceParams, RuntimeParams)
    try:  # the fine-tuned model where finetune_clip trained one, else clip.* as it is
        clip = dual_encoder_of(RUN.clip_model, clip)
    except EXPECTED as exc:
        fail("agreement", exc)
    empty = {"flickr8k_expert": {"pairs": 0}, "flickr8k_crowdflower": {"pairs": 0}}
    if source.kind != "flickr8k":
        note = f"the {source.kind} source has no human judgments of captions: nothing to compare"
        write_json(OUT, {**empty, "note": note})
        summary("agreement", f"skipped: {note} -> {OUT}")
        return
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from capsearch.models.registry import load_dual_encoder
    from capsearch.models.runtime import resolve_runtime

    try:
        rt = resolve_runtime(knobs, use_cache=False)
        text_dir = find_text_dir(RUN.text_dir)
        captions = load_captions(text_dir).captions
        if not (text_dir / EXPERT_FILE).exists() or not (text_dir / CROWDFLOWER_FILE).exists():
            note = f"no {EXPERT_FILE} / {CROWDFLOWER_FILE} in {text_dir} (Kaggle's layout has none): nothing to compare"
            write_json(OUT, {**empty, "note": note})
            summary("agreement", f"skipped: {note} -> {OUT}")
            return
        expert = read_expert_judgments(text_dir / EXPERT_FILE)
        crowdflower = read_crowdflower_judgments(text_dir / CROWDFLOWER_FILE)
        image_ids, image_vectors = read_image_embeddings(RUN.image_vectors)
        embedder = load_dual_encoder(clip.model, clip.revision, clip.precision, rt.device)
        report = human_agreement(
            expert,
            crowdflower,
            captions,
            image_ids,
            image_vectors,
            lambda texts: embedder.embed_texts(texts, rt.batch_sizes["embed_texts"]).vectors,
            ResultCache(knobs.cache_dir) if knobs.cache else None,  # METEOR's jar: seconds to start
        )
    except EXPECTED as exc:
        fail("agreement", exc)
    write_json(OUT, report)
    e = report["flickr8k_expert"]
    taus = ", ".join(f"{k[4:]} {v:.1f}" for k, v in e.items() if k.startswith("tau_") and "mean" not in k)
    summary(
        "agreement",
        f"Flickr8k-Expert: {e['pairs']} judged pairs in the subset (coverage {e['coverage']:.0%}), tau-c {taus}; "
        f"CrowdFlower: {report['flickr8k_crowdflower']['pairs']} pairs; in {timer.seconds:.1f}s -> {OUT}",
    )


if __name__ == "__main__":
    main()
