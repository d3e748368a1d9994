"""Fine-tuning: the dual encoder on a collection's train split (:mod:`capsearch.finetune.contrastive`), its
resumable checkpoints (:mod:`capsearch.finetune.checkpoint`), and which model a run's later stages use
(:mod:`capsearch.finetune.handover`)."""
