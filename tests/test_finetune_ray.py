"""finetune on Ray Train: two CPU workers (gloo, DistributedDataParallel, each on half of every batch) follow the
loss curve of one worker at the same global batch and end with its weights, for a transformers and an open_clip
dual encoder; bad worker plans are one line."""

from __future__ import annotations

import zipfile
from functools import partial

import pytest
import torch

from capsearch.data.images import ImageSource
from capsearch.data.subset import build_subset
from capsearch.demo.domains import write_striped_layout
from capsearch.finetune.checkpoint import CheckpointStore
from capsearch.finetune.contrastive import contrastive_task
from capsearch.finetune.distributed import train_on_ray, worker_plan
from capsearch.finetune.loop import Pairs, pairs_of, save_task, train
from capsearch.models.registry import load_dual_encoder
from capsearch.params import FinetuneClipParams, RuntimeParams

pytestmark = pytest.mark.xdist_group("ray")  # the session's simulated cluster: one worker runs every Ray test

BATCHES = {"embed_images": 64, "embed_texts": 256}


def _pairs(folder, split: str, n: int) -> Pairs:
    paths = write_striped_layout(folder, 160, seed=7)
    with zipfile.ZipFile(paths["text"]) as archive:
        archive.extractall(folder / "text")
    source = ImageSource(paths["images"])
    subset = build_subset(folder / "text", source, split, "all", 0)
    pairs = pairs_of(source, subset.images, subset.references)
    return Pairs(source, pairs.image_ids[:n], pairs.captions[:n])


@pytest.mark.parametrize("name", ["toy-clip", "toy-open-clip"])
def test_two_ray_train_workers_follow_one_worker_at_the_same_global_batch(
    name, toy_models, toy_open_clip, ray_cluster, tmp_path
):
    data, dev = _pairs(tmp_path / "d", "train", 64), _pairs(tmp_path / "d", "dev", 8)
    p = FinetuneClipParams(epochs=1, learning_rate=1e-4, batch_size=16, warmup_steps=2)  # 4 steps
    model = str((toy_open_clip if name == "toy-open-clip" else toy_models) / name)
    make_task = partial(contrastive_task, model, "main" if name == "toy-clip" else None, p, (1, 5), BATCHES, 0)
    one = make_task(torch.device("cpu"))
    alone = train(one, data, dev, p, workers=0, checkpoints=CheckpointStore(tmp_path / "c1"), checkpoint_steps=100)
    together = train_on_ray(
        make_task, save_task, tmp_path / "saved", data, dev, p, num_workers=2, use_gpu=False, workers=0,
        checkpoints=CheckpointStore(tmp_path / "c2"), checkpoint_steps=100,
    )  # fmt: skip
    # the global batch's contrastive loss: each worker's 8 pairs scored against all 16 (gathered), not only its own
    losses = [row[1] for row in alone.history.steps]
    assert [row[1] for row in together.history.steps] == pytest.approx(losses, rel=1e-4)
    assert together.best_epoch == alone.best_epoch and len(together.history.steps) == 4
    # rank 0 saved the same training: its change of the weights is the one worker's, up to float noise (which Adam
    # turns into steps of lr where a gradient is near 0, hence the comparison of whole updates)
    base = make_task(torch.device("cpu")).model.state_dict()
    saved = load_dual_encoder(str(tmp_path / "saved"), None, "fp32", "cpu").model.state_dict()  # its family's layout
    update = torch.cat([(tensor - base[name]).flatten() for name, tensor in one.model.state_dict().items()])
    other = torch.cat([(saved[name] - base[name]).flatten() for name in one.model.state_dict()])
    assert float((other - update).norm() / update.norm()) < 0.05

    with pytest.raises(ValueError, match=r"^finetune.clip.batch_size: 16 pairs do not split evenly over 3 Ray"):
        train_on_ray(make_task, save_task, tmp_path / "x", data, dev, p, num_workers=3, use_gpu=False, workers=0,
                     checkpoints=CheckpointStore(tmp_path / "c3"), checkpoint_steps=100)  # fmt: skip


def test_the_worker_plan_takes_one_gpu_each_or_cpu_workers_and_names_what_does_not_fit():
    gpu_node = {"Alive": True, "Resources": {"CPU": 16, "GPU": 8}}
    cpu_node = {"Alive": True, "Resources": {"CPU": 2}}
    assert worker_plan(RuntimeParams(engine="ray"), [gpu_node, gpu_node]) == (16, True)
    assert worker_plan(RuntimeParams(engine="ray"), [cpu_node, cpu_node]) == (1, False)
    assert worker_plan(RuntimeParams(engine="ray", ray_actors=4), [cpu_node, cpu_node]) == (4, False)
    assert worker_plan(RuntimeParams(engine="ray", device="cpu"), [gpu_node]) == (1, False)
    with pytest.raises(ValueError, match=r"^runtime.ray_actors: 9 Ray Train workers need a GPU each, the cluster has"):
        worker_plan(RuntimeParams(engine="ray", ray_actors=9), [gpu_node])
    with pytest.raises(ValueError, match=r"^runtime.device: 'cuda' requested but the Ray cluster has no GPU"):
        worker_plan(RuntimeParams(engine="ray", device="cuda"), [cpu_node])
