"""What decides a result besides its input: one recipe, hashed into every key that says "this was computed so".

A :class:`Recipe` names the weights (a local folder's content hash or a hub commit), the code that computes the
result (:func:`capsearch.imports.code_fingerprint`), the library versions, the precision and the decode path *as
resolved on the machine* (``bf16``, never ``auto``), and the task's own settings (a captioner's decoding, a
fine-tuning's params and data). The result cache's namespace (:meth:`capsearch.models.base.PretrainedWrapper.recipe`),
the part key of a sharded output (:meth:`capsearch.job.ImageTask.identity`) and the fine-tuning checkpoint key are
all its :meth:`Recipe.key` (with the part's images, or the checkpoint's data, added), so a result computed one
way is never taken where another way would compute a different one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from capsearch.cache import namespace
from capsearch.versions import library_versions


@dataclass(frozen=True)
class Recipe:
    """Everything besides the input that decides a result."""

    task: str  # caption, embed_images, finetune-clip, finetune-captioner
    weights: str  # capsearch.cache.model_fingerprint of the model
    code: str  # code_fingerprint of the module that computes it
    precision: str  # as resolved: fp32, bf16 or fp16
    decode: str  # as resolved: cpu or gpu (where images were decoded)
    settings: dict[str, Any] = field(default_factory=dict)  # the task's own: decoding, params, data
    libraries: dict[str, str] = field(default_factory=lambda: library_versions())  # as installed when made

    def as_dict(self) -> dict[str, Any]:
        """The recipe as plain values (written in manifests)."""
        return asdict(self)

    def key(self) -> str:
        """The recipe's hash: the result cache's namespace, and the base of the part and checkpoint keys."""
        return namespace(**self.as_dict())
