"""Stage embed_texts: CLIP embeddings of every ground-truth caption and every generated caption."""

from _common import Timer, fail, read_params, summary

from capsearch.artifacts import RunLayout, read_generated, read_references, save_vectors
from capsearch.errors import EXPECTED
from capsearch.evaluation.clipscore import with_prefix
from capsearch.finetune.handover import dual_encoder_of
from capsearch.io import write_json
from capsearch.params import ClipParams, RuntimeParams

RUN = RunLayout()


def main() -> None:
    p, knobs = read_params("embed_texts", ClipParams, RuntimeParams)
    try:  # the fine-tuned model where finetune_clip trained one, else clip.* as it is
        p = dual_encoder_of(RUN.clip_model, p)
    except EXPECTED as exc:
        fail("embed_texts", exc)
    # torch and transformers load only once the params are checked: a bad param fails in a second
    from capsearch.models.registry import load_dual_encoder
    from capsearch.models.runtime import precision_name, resolve_runtime

    references = read_references(RUN.references).texts
    _, generated = read_generated(RUN.generated)
    try:
        rt = resolve_runtime(knobs, use_cache=False)
        batch_size = rt.batch_sizes["embed_texts"]
        embedder = load_dual_encoder(p.model, p.revision, p.precision, rt.device)
        timer = Timer()
        reference_vectors = embedder.embed_texts(references, batch_size)
        generated_vectors = embedder.embed_texts(generated, batch_size)
        # CLIPScore embeds texts with its "A photo depicts" prefix
        reference_prefixed = embedder.embed_texts(with_prefix(references), batch_size)
        generated_prefixed = embedder.embed_texts(with_prefix(generated), batch_size)
    except EXPECTED as exc:
        fail("embed_texts", exc)
    save_vectors(RUN.reference_vectors, reference_vectors.vectors)
    save_vectors(RUN.generated_vectors, generated_vectors.vectors)
    save_vectors(RUN.reference_clipscore_vectors, reference_prefixed.vectors)
    save_vectors(RUN.generated_clipscore_vectors, generated_prefixed.vectors)
    counts = {
        "reference_captions": len(references),
        "reference_truncated": reference_vectors.truncated,
        "generated_captions": len(generated),
        "generated_truncated": generated_vectors.truncated,
        "context_length": embedder.context_length,
    }
    write_json(RUN.text_counts, counts)
    total = 2 * (len(references) + len(generated))
    summary(
        "embed_texts",
        f"{len(references)} reference + {len(generated)} generated captions embedded (plain and with the "
        f"CLIPScore prefix) by {embedder.source} "
        f"({precision_name(embedder.dtype)} on {embedder.device.type}, batch {embedder.last_text_run.batch_size}); "
        f"{reference_vectors.truncated + generated_vectors.truncated} truncated to {embedder.context_length} tokens; "
        f"in {timer.seconds:.1f}s ({total / max(timer.seconds, 1e-9):.0f} texts/s)",
    )


if __name__ == "__main__":
    main()
