"""Which dual encoder a run's later stages use: the fine-tuned one where ``finetune_clip`` trained one, else the
base model of ``clip.*``. ``finetune.json`` in the model folder says which; it holds nothing that varies between
identical runs (it is part of the folder's fingerprint)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from capsearch.io import write_json
from capsearch.params import ClipParams

RECORD = "finetune.json"


def write_record(folder: str | Path, record: dict[str, Any]) -> None:
    """Write the record of a fine-tuning run (or of none: ``{"fine_tuned": false, ...}``) into its model folder."""
    write_json(Path(folder) / RECORD, record)


def read_record(folder: str | Path) -> dict[str, Any]:
    """The record ``finetune_clip`` left in ``folder``; missing: an error naming the stage to run."""
    path = Path(folder) / RECORD
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the pipeline first (`dvc repro finetune_clip`)")
    return json.loads(path.read_text(encoding="utf-8"))


def dual_encoder_of(folder: str | Path, clip: ClipParams) -> ClipParams:
    """``clip`` as the run uses it: the fine-tuned model's folder (no revision) where ``folder`` holds one, else
    ``clip`` itself (fine-tuning off, or no record at all: a stage run outside DVC in a project without the stage;
    in a DVC run the record is a dependency, so it exists). A record must name the base model ``clip`` names, or
    the folder is from another run."""
    if not (Path(folder) / RECORD).exists():
        return clip
    record = read_record(folder)
    base = record.get("base", {})
    if (base.get("model"), base.get("revision")) != (clip.model, clip.revision):
        raise ValueError(
            f"{Path(folder) / RECORD}: made from {base.get('model')}@{base.get('revision')}, but clip.model is "
            f"{clip.model}@{clip.revision}: re-run `dvc repro finetune_clip`"
        )
    if not record.get("fine_tuned"):
        return clip
    return replace(clip, model=str(folder), revision=None)


def tuned_model(folder: str | Path) -> Path | None:
    """``folder`` where it holds a fine-tuned model; None where fine-tuning was off or never ran (a project from
    before the stage)."""
    path = Path(folder)
    if not (path / RECORD).exists():
        return None
    return path if read_record(path).get("fine_tuned") else None
