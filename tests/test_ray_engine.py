"""ray_engine.py on one local Ray shared by the test run: the same results as the local engine, bad images
skipped and counted, failures in one line naming the shard (and the image)."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from capsearch.artifacts import PartStore, plan_parts, read_generated, read_image_embeddings, read_manifest
from capsearch.data.images import ImageSource
from capsearch.demo.shards import write_webdataset_shards
from capsearch.engine import EngineError, ImageTask, compute_parts
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder
from capsearch.models.runtime import resolve_runtime
from capsearch.params import RuntimeParams

pytestmark = pytest.mark.xdist_group("ray")
SIZES = {"caption": 8, "embed_images": 16}
LOCAL = RuntimeParams(device="cpu", num_workers=0, batch_size=SIZES, cache=False)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three shards of 20 generated images; the 26th image (second shard) is not decodable."""
    return write_webdataset_shards(tmp_path_factory.mktemp("wds") / "shards", 60, 20, seed=9, corrupt=(25,))


def rows_of(spec) -> list[tuple[str, str]]:
    source = ImageSource(spec)
    return [(image_id, str(source.shard_of(image_id))) for image_id in source.ids()]


def run(task: ImageTask, rows, out: Path, knobs: RuntimeParams):
    store = PartStore(out, task.output_kind, task.identity())
    return compute_parts(task, plan_parts(rows), store, resolve_runtime(knobs), knobs)


def on_ray(address: str, actors: int = 1) -> RuntimeParams:
    return replace(LOCAL, engine="ray", ray_address=address, ray_actors=actors)


def test_ray_gives_the_local_engines_ids_captions_and_embeddings(toy_models, shards, ray_cluster, tmp_path):
    rows = rows_of(shards[0].parent)
    caption = ImageTask(Captioner, str(toy_models / "toy-blip"), "main", "fp32", "cpu", DecodingSettings(2, 20, 3))
    embed = ImageTask(DualEncoder, str(toy_models / "toy-clip"), "main", "fp32", "cpu")
    for engine, knobs in (("local", LOCAL), ("ray", on_ray(ray_cluster, actors=2))):
        run(caption, rows, tmp_path / engine / "captions", knobs)
        ray_run = run(embed, rows, tmp_path / engine / "images", knobs)
    assert ray_run.engine == "ray" and "2 cpu model actor(s)" in ray_run.detail
    local_ids, local_captions = read_generated(tmp_path / "local" / "captions")
    ray_ids, ray_captions = read_generated(tmp_path / "ray" / "captions")
    assert ray_ids == local_ids and len(ray_ids) == 59
    assert ray_captions == local_captions
    assert len(set(ray_captions)) > 10  # real captions of different scenes, not one string
    (local_image_ids, local_vectors), (ray_image_ids, ray_vectors) = (
        read_image_embeddings(tmp_path / engine / "images") for engine in ("local", "ray")
    )
    assert ray_image_ids == local_image_ids == local_ids
    np.testing.assert_allclose(ray_vectors, local_vectors, atol=1e-5)
    for engine in ("local", "ray"):
        manifest = read_manifest(tmp_path / engine / "images", "image_embeddings")
        [(image_id, reason, shard)] = manifest["skipped"]
        assert image_id == "000010005.jpg" and shard.endswith("00001.tar")
        assert "cannot identify image format" in reason
        assert [p["rows"] for p in manifest["parts"]] == [20, 19, 20]


def solid_red() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_exception_in_an_actor_fails_with_one_line_naming_shard_and_image(toy_models, shards, ray_cluster, tmp_path):
    shard = tmp_path / "00000.tar"
    with tarfile.open(shards[0]) as src, tarfile.open(shard, "w") as tar:
        for info in src.getmembers():
            data = src.extractfile(info).read()
            if info.name == "000000013.jpg":
                data = solid_red()
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

    @dataclass(frozen=True)
    class RedIntolerant(ImageTask):  # defined here: Ray ships it by value
        def apply(self, wrapper, pixels: torch.Tensor):
            red = (pixels[:, 0] == 255) & (pixels[:, 1] == 0) & (pixels[:, 2] == 0)
            if bool(red.flatten(1).all(dim=1).any()):
                raise ValueError("this model cannot take a solid red picture")
            return super().apply(wrapper, pixels)

    task = RedIntolerant(DualEncoder, str(toy_models / "toy-clip"), "main", "fp32", "cpu")
    with pytest.raises(EngineError) as failure:
        run(task, rows_of(shard), tmp_path / "out", on_ray(ray_cluster))
    message = str(failure.value)
    assert "\n" not in message
    assert message == f"shard {shard}: image 000000013.jpg: ValueError: this model cannot take a solid red picture"


def test_a_truncated_shard_fails_with_one_line_naming_it(toy_models, shards, ray_cluster, tmp_path):
    rows = rows_of(shards[2])
    broken = tmp_path / "00002.tar"
    data = shards[2].read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    task = ImageTask(DualEncoder, str(toy_models / "toy-clip"), "main", "fp32", "cpu")
    with pytest.raises(EngineError) as failure:
        run(task, [(image_id, str(broken)) for image_id, _ in rows], tmp_path / "out", on_ray(ray_cluster))
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(f"shard {broken}: {broken}: truncated inside member")
