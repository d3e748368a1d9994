"""Fine-tuning: one training loop (:mod:`capsearch.finetune.loop`) for the dual encoder
(:mod:`capsearch.finetune.contrastive`) and the captioner (:mod:`capsearch.finetune.captioning`) on a
collection's train split, its resumable checkpoints (:mod:`capsearch.finetune.checkpoint`), and which models a
run's later stages use (:mod:`capsearch.finetune.handover`)."""
