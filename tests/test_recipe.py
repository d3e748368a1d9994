"""recipe: one recipe of what decides a result, hashed into the result cache's namespace, the part key and the
fine-tuning checkpoint key alike; precision and decode path as resolved, never as asked."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import GREEDY

import capsearch.job as job_module
import capsearch.models.base as base_module
import capsearch.recipe as recipe_module
from capsearch.artifacts import PartStore, PlannedPart
from capsearch.finetune.loop import Pairs, checkpoint_recipe
from capsearch.job import ImageTask
from capsearch.models.captioner import Captioner
from capsearch.models.embedder import DualEncoder
from capsearch.models.runtime import precision_name, resolve_precision
from capsearch.params import FinetuneCaptionerParams
from capsearch.versions import library_versions

PART = PlannedPart("part-00000", "images", ("a.jpg", "b.jpg"), content="sha256:abc")
PAIRS = Pairs(None, ["a.jpg", "b.jpg"], [["a red circle"], ["a blue square"]])  # type: ignore[arg-type]


def keys(blip: Path, *, precision: str = "fp32", settings=GREEDY, p=None) -> dict[str, str]:
    """The three keys of one way of computing: the result cache's namespace (the loaded wrapper's recipe), the part
    key (the job's identity in a part store) and the fine-tuning checkpoint key."""
    task = ImageTask(Captioner, str(blip), "main", precision, "cpu", settings, "auto")
    wrapper = task.load()
    p = p or FinetuneCaptionerParams(precision=precision)
    weights = task.recipe.weights
    checkpoint = checkpoint_recipe("finetune-captioner", weights, "capsearch.finetune.captioning", p,
                                   torch.device("cpu"), PAIRS, PAIRS, decoding=[settings.max_new_tokens])  # fmt: skip
    return {
        "cache": wrapper.recipe(task.decode, settings).key(),
        "part": PartStore(Path("unused"), "captions", task.identity()).key(PART),
        "checkpoint": checkpoint.key(),
    }


def differ(one: dict[str, str], other: dict[str, str], which=("cache", "part", "checkpoint")) -> bool:
    return all(one[name] != other[name] for name in which)


@pytest.fixture(scope="module")
def before(toy_models) -> dict[str, str]:
    return keys(toy_models / "toy-blip")


def test_the_job_and_the_wrapper_it_loads_hash_one_recipe(toy_models):
    task = ImageTask(Captioner, str(toy_models / "toy-blip"), "main", "fp32", "cpu", GREEDY, "auto")
    assert task.recipe == task.load().recipe(task.decode, GREEDY)
    embed = ImageTask(DualEncoder, str(toy_models / "toy-clip"), "main", "fp32", "cpu")
    assert embed.recipe == embed.load().recipe(embed.decode)
    assert keys(toy_models / "toy-blip") == keys(toy_models / "toy-blip")  # and the keys are stable


def test_precision_and_decode_path_enter_as_resolved_on_this_machine(toy_models):
    auto = ImageTask(Captioner, str(toy_models / "toy-blip"), "main", "auto", "auto", GREEDY, "auto")
    resolved = precision_name(resolve_precision("auto", torch.device("cpu")))  # bf16 with AVX512-BF16/AMX, else fp32
    assert (auto.precision, auto.device, auto.decode) == (resolved, "cpu", "cpu")
    named = ImageTask(Captioner, str(toy_models / "toy-blip"), "main", resolved, "cpu", GREEDY, "cpu")
    assert auto.identity() == named.identity()  # "auto" computed here is the same result as asking for it by name
    assert auto.recipe.precision == resolved and auto.recipe.decode == "cpu"


def test_the_weights_change_all_three_keys(toy_models, before):
    assert differ(before, keys(toy_models / "toy-blip-early"))


def test_the_code_changes_all_three_keys(toy_models, before, monkeypatch):
    real = base_module.code_fingerprint
    monkeypatch.setattr(base_module, "code_fingerprint", lambda module: "edited" + real(module))
    import capsearch.finetune.loop as loop_module

    monkeypatch.setattr(loop_module, "code_fingerprint", lambda module: "edited" + real(module))
    assert differ(before, keys(toy_models / "toy-blip"))


def test_the_library_versions_change_all_three_keys(toy_models, before, monkeypatch):
    monkeypatch.setattr(recipe_module, "library_versions", lambda: {**library_versions(), "transformers": "99.0"})
    assert differ(before, keys(toy_models / "toy-blip"))


def test_the_precision_changes_all_three_keys(toy_models, before):
    assert differ(before, keys(toy_models / "toy-blip", precision="bf16"))


def test_the_decode_path_changes_the_cache_and_part_keys(toy_models, before, monkeypatch):
    # a GPU-decoded result never answers for PIL's; fine-tuning always decodes on the CPU (its key has no other path)
    monkeypatch.setattr(job_module, "resolve_decode", lambda *args: "gpu")
    task = ImageTask(Captioner, str(toy_models / "toy-blip"), "main", "fp32", "cpu", GREEDY, "auto")
    assert task.decode == "gpu" and task.recipe.decode == "gpu"
    assert PartStore(Path("unused"), "captions", task.identity()).key(PART) != before["part"]
    assert task.load().recipe("gpu", GREEDY).key() != before["cache"]


def test_the_settings_change_all_three_keys(toy_models, before):
    longer = replace(GREEDY, max_new_tokens=GREEDY.max_new_tokens + 1)
    assert differ(before, keys(toy_models / "toy-blip", settings=longer))
    other_params = FinetuneCaptionerParams(precision="fp32", learning_rate=2e-3)
    assert keys(toy_models / "toy-blip", p=other_params)["checkpoint"] != before["checkpoint"]
