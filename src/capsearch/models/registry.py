"""Which family a ``clip.model`` names, from the name alone (no torch, no open_clip import): the registry every
caller that builds a dual encoder from params goes through (:func:`dual_encoder_class`, :func:`load_dual_encoder`).

* open_clip (:mod:`capsearch.models.openclip`): ``hf-hub:org/name``, a built-in ``ARCH/TAG``
  (``ViT-B-32/laion2b_s34b_b79k``), or a local folder holding ``open_clip_config.json``;
* transformers (:class:`capsearch.models.embedder.DualEncoder`): every other hub id or folder (CLIP, SigLIP, ...),
  whose own ``config.json`` then says which model it is (:mod:`capsearch.models.families`).
"""

from __future__ import annotations

from typing import Any

from capsearch.models.open_clip_names import names_open_clip


def dual_encoder_class(model_id: str) -> Any:
    """The wrapper class of the family ``model_id`` names (imported only when chosen)."""
    if names_open_clip(model_id):
        from capsearch.models.openclip import OpenClipEncoder

        return OpenClipEncoder
    from capsearch.models.embedder import DualEncoder

    return DualEncoder


def load_dual_encoder(
    model_id: str, revision: str | None, precision: str, device: str, param: str = "clip.model"
) -> Any:
    """The dual encoder ``model_id`` names, loaded (see :func:`dual_encoder_class`)."""
    return dual_encoder_class(model_id)(model_id, revision, precision, device, param=param)
