"""ray_engine.py on one local Ray shared by the test run: the same results as the local engine, bad images
skipped and counted, failures in one line naming the shard (and the image)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ray_core_warning
from PIL import Image

from capsearch.artifacts import PartStore, plan_parts, read_generated, read_image_embeddings, read_manifest
from capsearch.data.images import ImageSource
from capsearch.demo.shards import write_webdataset_shards
from capsearch.engine import compute_parts
from capsearch.job import EngineError, ImageTask
from capsearch.models.captioner import Captioner, DecodingSettings
from capsearch.models.embedder import DualEncoder
from capsearch.models.openclip import OpenClipEncoder
from capsearch.models.runtime import resolve_runtime
from capsearch.params import RuntimeParams
from capsearch.ray_engine import ActorPlan, plan_actors

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.xdist_group("ray")
SIZES = {"caption": 8, "embed_images": 16}
LOCAL = RuntimeParams(device="cpu", num_workers=0, batch_size=SIZES, cache=False)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Three shards of 10 generated images; the 16th image (second shard) is not decodable."""
    return write_webdataset_shards(tmp_path_factory.mktemp("wds") / "shards", 30, 10, seed=9, corrupt=(15,))


def rows_of(spec) -> list[tuple[str, str]]:
    source = ImageSource(spec)
    return [(image_id, str(source.shard_of(image_id))) for image_id in source.ids()]


def run(task: ImageTask, rows, out: Path, knobs: RuntimeParams):
    store = PartStore(out, task.output_kind, task.identity())
    return compute_parts(task, plan_parts(rows), store, resolve_runtime(knobs), knobs)


def on_ray(cluster, actors: int = 1, **knobs) -> RuntimeParams:
    return replace(LOCAL, engine="ray", ray_address=cluster.address, ray_actors=actors, **knobs)


def test_ray_gives_the_local_engines_ids_captions_and_embeddings_even_when_a_node_is_lost(
    toy_models, shards, ray_cluster, tmp_path
):
    """Two actors on the simulated two-node cluster (0.5 CPU each, beside decoding); for the embeddings a third node
    joins and is removed after the first part is back, and the run still ends with the local engine's results."""
    rows = rows_of(shards[0].parent)
    caption = ImageTask(Captioner, str(toy_models / "toy-blip"), "main", "fp32", "cpu", DecodingSettings(2, 20, 3))
    embed = ImageTask(DualEncoder, str(toy_models / "toy-clip"), "main", "fp32", "cpu")
    run(caption, rows, tmp_path / "local" / "captions", LOCAL)
    run(embed, rows, tmp_path / "local" / "images", LOCAL)
    caption_run = run(caption, rows, tmp_path / "ray" / "captions", on_ray(ray_cluster, actors=2))
    assert caption_run.engine == "ray" and "2 cpu model actor(s) (0.5 CPU each)" in caption_run.detail  # one a node
    extra = ray_cluster.add_node(num_cpus=1, object_store_memory=128 * 1024**2)
    ray_cluster.wait_for_nodes()
    manifest = tmp_path / "ray" / "images" / "manifest.json"

    def remove_after_first_part() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (manifest.exists() and '"parts": [\n    {' in manifest.read_text()):
            time.sleep(0.05)
        ray_cluster.remove_node(extra)

    killer = threading.Thread(target=remove_after_first_part)
    killer.start()
    try:
        ray_run = run(embed, rows, tmp_path / "ray" / "images", on_ray(ray_cluster, actors=3, ray_stall_seconds=60))
    finally:
        killer.join()
    assert not [n for n in ray.nodes() if n["NodeID"] == extra.node_id and n["Alive"]]  # the node was lost mid-run
    assert ray_run.parts == 3 and ray_run.computed_images == 29
    local_ids, local_captions = read_generated(tmp_path / "local" / "captions")
    ray_ids, ray_captions = read_generated(tmp_path / "ray" / "captions")
    assert ray_ids == local_ids and len(ray_ids) == 29
    assert ray_captions == local_captions
    assert len(set(ray_captions)) > 8  # real captions of different scenes, not one string
    (local_image_ids, local_vectors), (ray_image_ids, ray_vectors) = (
        read_image_embeddings(tmp_path / engine / "images") for engine in ("local", "ray")
    )
    assert ray_image_ids == local_image_ids == local_ids
    np.testing.assert_allclose(ray_vectors, local_vectors, atol=1e-5)
    for engine in ("local", "ray"):
        manifest_data = read_manifest(tmp_path / engine / "images", "image_embeddings")
        [(image_id, reason, shard)] = manifest_data["skipped"]
        assert image_id == "000010005.jpg" and shard.endswith("00001.tar")
        assert "cannot identify image format" in reason
        assert [p["rows"] for p in manifest_data["parts"]] == [10, 9, 10]


def test_an_open_clip_model_embeds_on_ray_as_it_does_locally(toy_open_clip, shards, ray_cluster, tmp_path):
    """The job ships its wrapper class: an open_clip model runs in Ray's actors like a transformers one."""
    rows = rows_of(shards[0].parent)
    embed = ImageTask(OpenClipEncoder, str(toy_open_clip / "toy-open-clip"), None, "fp32", "cpu")
    run(embed, rows, tmp_path / "local", LOCAL)
    ray_run = run(embed, rows, tmp_path / "ray", on_ray(ray_cluster))
    assert ray_run.engine == "ray" and ray_run.computed_images == 29
    (local_ids, local_vectors), (ray_ids, ray_vectors) = (
        read_image_embeddings(tmp_path / engine) for engine in ("local", "ray")
    )
    assert ray_ids == local_ids and len(ray_ids) == 29
    np.testing.assert_allclose(ray_vectors, local_vectors, atol=1e-5)


def with_red_image(shard: Path, out: Path, member: str) -> Path:
    """A copy of ``shard`` at ``out`` with its image ``member`` replaced by a solid red picture."""
    with tarfile.open(shard) as src, tarfile.open(out, "w") as tar:
        for info in src.getmembers():
            data = src.extractfile(info).read()
            if info.name == member:
                data = solid_red()
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def solid_red() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_an_exception_in_an_actor_fails_with_one_line_naming_shard_and_image(toy_models, shards, ray_cluster, tmp_path):
    shard = with_red_image(shards[0], tmp_path / "00000.tar", "000000007.jpg")

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
    assert message == f"shard {shard}: image 000000007.jpg: ValueError: this model cannot take a solid red picture"


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
    assert message.startswith(f"{broken}: truncated inside member")  # the shard named once


def node(cpus: float, alive: bool = True, gpus: float = 0, name: str = "n") -> dict:
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return {"Alive": alive, "Resources": resources, "NodeManagerAddress": name}


def test_actors_are_sized_per_node_leaving_room_for_decoding_or_refused_in_one_line():
    two_small = [node(1, name="head"), node(1, name="worker")]
    knobs = replace(LOCAL, engine="ray", ray_actors=2)
    assert plan_actors(knobs, two_small) == ActorPlan(2, 0.0, 0.5, "cpu")  # one per node, 0.5 CPU left for decoding
    assert plan_actors(replace(knobs, ray_actors=4), two_small).cpus == 0.25
    assert plan_actors(knobs, [*two_small, node(8, alive=False)]).cpus == 0.5  # a lost node counts for nothing
    on_gpus = replace(knobs, ray_actors="auto", device="auto")
    assert plan_actors(on_gpus, [node(2, gpus=2)]) == ActorPlan(2, 1.0, 0.0, "cuda")
    with pytest.raises(ValueError) as refused:
        plan_actors(replace(knobs, ray_actors=12), two_small)
    assert str(refused.value) == (
        "runtime.ray_actors: 12 CPU model actors do not fit beside decoding (0.5 CPU kept free on each node; head: 1 "
        "CPU; worker: 1 CPU); use fewer actors or more CPUs"
    )
    with pytest.raises(ValueError, match=r"^runtime\.ray_actors: 3 GPU model actors need 3 GPUs, the cluster has 2"):
        plan_actors(replace(on_gpus, ray_actors=3), [node(4, gpus=2)])
    with pytest.raises(ValueError, match=r"^runtime\.ray_actors: no node has 0\.5 CPU for decoding"):
        plan_actors(knobs, [node(0.25)])


DRIVER = """
import os, sys
from dataclasses import dataclass
import torch
from capsearch.artifacts import PartStore, plan_parts
from capsearch.data.images import ImageSource
from capsearch.engine import compute_parts
from capsearch.job import EngineError, ImageTask
from capsearch.models.embedder import DualEncoder
from capsearch.models.openclip import OpenClipEncoder
from capsearch.models.runtime import resolve_runtime
from capsearch.params import RuntimeParams

shards, model, out, address, behaviour, stall = sys.argv[1:7]
import capsearch.ray_engine
capsearch.ray_engine.LOAD_SECONDS = 10  # the toy model loads in a second; the allowance is tested on its own below

@dataclass(frozen=True)
class Troubled(ImageTask):  # defined here: Ray ships it by value
    def apply(self, wrapper, pixels):
        red = (pixels[:, 0] == 255) & (pixels[:, 1] == 0) & (pixels[:, 2] == 0)
        if bool(red.flatten(1).all(dim=1).any()):
            if behaviour == "crash":
                os.kill(os.getpid(), 9)  # as a segfault or the kernel's out-of-memory killer would
            import time
            time.sleep(3600)  # a model that hangs on it
        return super().apply(wrapper, pixels)

source = ImageSource(shards)
rows = [(image_id, str(source.shard_of(image_id))) for image_id in source.ids()]
task = Troubled(DualEncoder, model, "main", "fp32", "cpu")
knobs = RuntimeParams(device="cpu", num_workers=0, batch_size={"embed_images": 1}, cache=False, engine="ray",
                      ray_address=address, ray_actors=1, ray_stall_seconds=int(stall))
try:
    compute_parts(task, plan_parts(rows), PartStore(out, task.output_kind, task.identity()), resolve_runtime(knobs),
                  knobs)
except EngineError as exc:
    print(f"ERROR-LINE {exc}", flush=True)
    os._exit(3)
print("FINISHED", flush=True)
"""


def troubled_shards(shards: list[Path], folder: Path) -> Path:
    """The second test shard with its image 000010003.jpg replaced by a solid red picture."""
    folder.mkdir()
    with_red_image(shards[1], folder / shards[1].name, "000010003.jpg")
    return folder


@pytest.mark.parametrize("behaviour", ["crash", "hang"])
def test_an_image_that_kills_or_hangs_the_model_ends_the_run_in_bounded_time_naming_it(
    toy_models, shards, ray_cluster, tmp_path, behaviour
):
    folder = troubled_shards(shards, tmp_path / "shards")
    stall = "120" if behaviour == "crash" else "8"  # restarts of a crashed model take a few seconds each
    args = [str(folder), str(toy_models / "toy-clip"), str(tmp_path / "out"), ray_cluster.address, behaviour, stall]
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", DRIVER, *args], capture_output=True, text=True, timeout=240)
    took = time.monotonic() - started
    assert result.returncode == 3, result.stdout[-2000:] + result.stderr[-2000:]
    [line] = [line for line in result.stdout.splitlines() if line.startswith("ERROR-LINE")]
    if behaviour == "crash":
        assert line.startswith(f"ERROR-LINE shard {folder / '00001.tar'}: image 000010003.jpg: the model's worker "
                               "process died on it 2 times, and again in a fresh process")  # fmt: skip
    else:
        assert "no result came back for 8 s (runtime.ray_stall_seconds" in line and "re-run to resume" in line
    assert took < 200, took
    noise = [line for line in result.stderr.splitlines() if line.strip() and not ray_core_warning(line)]
    assert not noise, "\n".join(noise)  # capsearch's one line alone: no Ray Data traceback (there were 31 lines)
    manifest = tmp_path / "out" / "manifest.json"
    assert not manifest.exists() or not json.loads(manifest.read_text())["complete"]  # nothing claims to be done


def test_an_address_nothing_answers_at_is_one_line_within_seconds_not_minutes_of_retries():
    import socket

    from capsearch.ray_cluster import PROBE_SECONDS, check_reachable

    with socket.socket() as taken:  # a port that was free a moment ago: nothing listens there now
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        started = time.monotonic()
        with pytest.raises(ValueError, match=rf"^runtime.ray_address: nothing answers at 127.0.0.1:{port} \("):
            check_reachable(address)
        assert time.monotonic() - started < PROBE_SECONDS + 1
    with pytest.raises(ValueError, match=r"^runtime.ray_address: 'cluster' is not host:port, ray://host\[:port\]"):
        check_reachable("cluster")
    with socket.socket() as listening:  # something answers: Ray is asked (ray[client]'s grpc is installed)
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_reachable(f"ray://127.0.0.1:{listening.getsockname()[1]}")


def test_the_stall_watchdog_gives_the_first_result_time_for_the_models_to_load():
    from capsearch.ray_engine import _Stalled, _watched

    def results(gaps):
        for gap in gaps:
            time.sleep(gap)
            yield gap

    # the first result after 1.2 s (a model loading) is awaited with 1 s of stall and 1 s of loading allowed
    assert list(_watched(results([1.2, 0.1, 0.1]), 1, lambda: "stalled", load_seconds=1)) == [1.2, 0.1, 0.1]
    with pytest.raises(_Stalled, match=r"^stalled$"):  # later results get ray_stall_seconds alone
        list(_watched(results([0.1, 1.5]), 1, lambda: "stalled", load_seconds=5))
    with pytest.raises(_Stalled):  # a model that never loads is still stopped
        list(_watched(results([3.0]), 1, lambda: "stalled", load_seconds=1))


def test_a_run_waits_for_or_refuses_a_cluster_another_run_holds():
    from capsearch.ray_engine import DECODE_CPUS, wait_for_room

    plan = ActorPlan(2, 0.0, 0.5, "cpu")  # two actors of 0.5 CPU, and a decode task
    wait_for_room(plan, lambda: {"CPU": 1 + DECODE_CPUS}, seconds=0)
    held = {"CPU": 0.0}  # both 1-CPU nodes taken by another stage's actors and decoding
    refused = r"^runtime.ray_actors: 2 model actor\(s\) and decoding need 1.5 CPU and 0 GPU, but the Ray cluster has 0"
    with pytest.raises(ValueError, match=refused + r" CPU and 0 GPU free \(another run holds the rest\)"):
        wait_for_room(plan, lambda: held, seconds=0.5)
    freed = iter([{"CPU": 0.0}, {"CPU": 0.5}, {"CPU": 2.0}])  # a finishing run gives its resources back
    wait_for_room(plan, lambda: next(freed), seconds=5)
