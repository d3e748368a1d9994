"""Resumable training state outside DVC's cache: written atomically every few steps, removed when the run ends.

A checkpoint is a folder: ``weights.safetensors`` (the trainable tensors), ``state.pt`` (optimizer and scheduler
state, step, history and torch's RNG state: tensors, numbers, lists and dicts only, read back with
``torch.load(weights_only=True)``: nothing is unpickled), and ``best.safetensors`` (the trainable tensors of the
best epoch so far). Its folder name is a key of everything that decides the run, so a checkpoint of other
settings, data, model, code or library versions is never resumed.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from capsearch.io import atomic_folder, recover_folder

WEIGHTS, STATE, BEST = "weights.safetensors", "state.pt", "best.safetensors"
Tensors = dict[str, torch.Tensor]


class CheckpointStore:
    """The checkpoint of one training run in ``directory`` (one folder, replaced as one unit on each save)."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def exists(self) -> bool:
        """Whether a complete checkpoint is there (one a kill left mid-save is recovered first)."""
        if self.directory.parent.exists():
            recover_folder(self.directory)
        return all((self.directory / name).exists() for name in (WEIGHTS, STATE))

    def save(self, weights: Tensors, state: dict[str, Any], best: Tensors | None) -> None:
        """Replace the checkpoint with these tensors and state (``best``: None keeps the saved best, if any)."""
        kept_best = self.directory / BEST
        with atomic_folder(self.directory) as folder:
            save_file(_contiguous(weights), folder / WEIGHTS)
            torch.save(state, folder / STATE)
            if best is not None:
                save_file(_contiguous(best), folder / BEST)
            elif kept_best.exists():
                shutil.copyfile(kept_best, folder / BEST)

    def load(self) -> tuple[Tensors, dict[str, Any], Tensors | None]:
        """The saved tensors, state and best tensors (None if no epoch ended yet)."""
        best = self.directory / BEST
        return (
            load_file(self.directory / WEIGHTS),
            torch.load(self.directory / STATE, weights_only=True),
            load_file(best) if best.exists() else None,
        )

    def clear(self) -> None:
        """Remove the checkpoint (the run finished), and whatever a killed save left beside it."""
        shutil.rmtree(self.directory, ignore_errors=True)
        recover_folder(self.directory, keep_old=False)


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()}
