"""Which models a run's later stages use: the fine-tuned one where ``finetune_clip`` (``finetune_captioner``)
trained one, else the base model of ``clip.*`` (``caption.*``). ``finetune.json`` in the model folder says which;
it holds nothing that varies between identical runs (it is part of the folder's fingerprint)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from capsearch.io import write_json
from capsearch.params import CaptionParams, ClipParams, ModelParams

RECORD = "finetune.json"
M = TypeVar("M", bound=ModelParams)
STAGES = {"clip": "finetune_clip", "caption": "finetune_captioner"}  # which stage fine-tunes each model section


def write_record(folder: str | Path, record: dict[str, Any]) -> None:
    """Write the record of a fine-tuning run (or of none: ``{"fine_tuned": false, ...}``) into its model folder."""
    write_json(Path(folder) / RECORD, record)


def read_record(folder: str | Path, stage: str = "finetune_clip") -> dict[str, Any]:
    """The record ``stage`` left in ``folder``; missing: an error naming the stage to run."""
    path = Path(folder) / RECORD
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the pipeline first (`dvc repro {stage}`)")
    return json.loads(path.read_text(encoding="utf-8"))


def model_of(folder: str | Path, model: M) -> M:
    """``model`` (a ``clip`` or ``caption`` section) as the run uses it: the fine-tuned model's folder (no
    revision) where ``folder`` holds one, else ``model`` itself (fine-tuning off, or no record at all: a stage run
    outside DVC in a project without the stage; in a DVC run the record is a dependency, so it exists). A record
    must name the base model ``model`` names, or the folder is from another run."""
    if not (Path(folder) / RECORD).exists():
        return model
    stage = STAGES[model.NAME]
    record = read_record(folder, stage)
    base = record.get("base", {})
    if (base.get("model"), base.get("revision")) != (model.model, model.revision):
        raise ValueError(
            f"{Path(folder) / RECORD}: made from {base.get('model')}@{base.get('revision')}, but {model.NAME}.model "
            f"is {model.model}@{model.revision}: re-run `dvc repro {stage}`"
        )
    if not record.get("fine_tuned"):
        return model
    return replace(model, model=str(folder), revision=None)


def dual_encoder_of(folder: str | Path, clip: ClipParams) -> ClipParams:
    """The dual encoder of the run (see :func:`model_of`)."""
    return model_of(folder, clip)


def captioner_of(folder: str | Path, caption: CaptionParams) -> CaptionParams:
    """The captioner of the run (see :func:`model_of`)."""
    return model_of(folder, caption)


def tuned_model(folder: str | Path) -> Path | None:
    """``folder`` where it holds a fine-tuned model; None where fine-tuning was off or never ran (a project from
    before the stage)."""
    path = Path(folder)
    if not (path / RECORD).exists():
        return None
    return path if read_record(path).get("fine_tuned") else None
