"""Pipeline: real photos in the Kaggle layout."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from capsearch.artifacts import read_generated, read_image_embeddings
from capsearch.demo.workspace import commit_run, create_demo_workspace, run_dvc
from capsearch.io import read_csv

skimage = pytest.importorskip("skimage")


sklearn = pytest.importorskip("sklearn")


matplotlib = pytest.importorskip("matplotlib")


PHOTOS = {  # file name in Images/ -> (package, path inside it, five hand-written captions)
    "astronaut.png": (
        skimage,
        "data/astronaut.png",
        [
            "An astronaut in an orange suit smiles in front of an American flag .",
            "A woman astronaut, holding her helmet, poses for a portrait .",
            "A smiling woman in an orange space suit beside a model of the space shuttle .",
            "An astronaut portrait with a flag and a shuttle model behind her .",
            "A woman in a pressure suit with a white helmet on her lap .",
        ],
    ),
    "camera.png": (
        skimage,
        "data/camera.png",
        [
            "A man in a dark coat looks through a camera on a tripod .",
            "A black and white photo of a photographer in a field .",
            "A cameraman stands on the grass, buildings far behind him .",
            "A man films with an old camera on a tripod outdoors .",
            "A photographer, dressed in black, adjusts his camera .",
        ],
    ),
    "chelsea.png": (
        skimage,
        "data/chelsea.png",
        [
            "A close up of a tabby cat with green eyes .",
            "A striped cat stares at the camera .",
            "The face of a brown tabby cat, its whiskers white .",
            "A cat with big yellow green eyes looks up .",
            "A tabby cat's face fills the picture .",
        ],
    ),
    "coffee.png": (
        skimage,
        "data/coffee.png",
        [
            "A cup of coffee on a red saucer with a spoon .",
            "An espresso in a red cup on a wooden table .",
            "A red coffee cup, a saucer and a silver spoon on wood .",
            "A small cup of black coffee seen from above .",
            "Coffee served in a red cup and saucer .",
        ],
    ),
    "motorcycle_left.png": (
        skimage,
        "data/motorcycle_left.png",
        [
            "A red motorcycle parked in a garage .",
            "A red and black motorbike stands in a workshop full of boxes .",
            "A motorcycle on its kickstand in a cluttered garage .",
            "A shiny red motorcycle, shelves and boxes behind it .",
            "An old red motorbike parked indoors .",
        ],
    ),
    "rocket.jpg": (
        skimage,
        "data/rocket.jpg",
        [
            "A rocket stands on the launch pad at dusk .",
            "A white rocket between tall towers under a blue evening sky .",
            "A rocket ready for launch, lit by lights on the ground .",
            "Launch towers and a rocket against the night sky .",
            "A tall white rocket on a pad with lightning towers around it .",
        ],
    ),
    "hubble_deep_field.jpg": (
        skimage,
        "data/hubble_deep_field.jpg",
        [
            "Many galaxies on a black background .",
            "A deep space photo full of small galaxies and stars .",
            "Colourful galaxies scattered across the dark sky .",
            "A telescope image of distant galaxies .",
            "Spiral and elliptical galaxies in deep space .",
        ],
    ),
    "china.jpg": (
        sklearn,
        "datasets/images/china.jpg",
        [
            "A Chinese temple with many roofs on a hill above a lake .",
            "A colourful pagoda among green trees, water behind it .",
            "A tall traditional Chinese building on a hillside .",
            "A red and green tower with curved roofs overlooks a lake .",
            "An ornate temple, trees around it, on a sunny day .",
        ],
    ),
    "flower.jpg": (
        sklearn,
        "datasets/images/flower.jpg",
        [
            "An orange dahlia in front of dark green leaves .",
            "A close up of an orange flower .",
            "A round orange flower with many petals .",
            "Two orange dahlias, one of them blurred, in a garden .",
            "An orange flower, its petals in perfect rows .",
        ],
    ),
    "grace_hopper.jpg": (
        matplotlib,
        "mpl-data/sample_data/grace_hopper.jpg",
        [
            "An old woman in a navy uniform and glasses .",
            "A portrait of a woman officer in front of an American flag .",
            "An elderly woman in a dark uniform and cap, medals on her chest .",
            "A woman in naval uniform poses for an official photo .",
            "A navy officer, wearing glasses, in front of a flag .",
        ],
    ),
}


TEST_SPLIT = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "motorcycle_left.png"]


DEV_SPLIT = ["rocket.jpg", "hubble_deep_field.jpg", "china.jpg", "flower.jpg", "grace_hopper.jpg"]


def write_kaggle_photos(folder: Path) -> Path:
    """Images/ (the installed files, byte for byte) + captions.txt (quoted where a caption has a comma)."""
    (folder / "Images").mkdir(parents=True)
    lines = ["image,caption"]
    for name, (package, inside, captions) in PHOTOS.items():
        (folder / "Images" / name).write_bytes((Path(package.__file__).parent / inside).read_bytes())
        lines += [f'{name},"{c}"' if "," in c else f"{name},{c}" for c in captions]
    (folder / "captions.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "Flickr_8k.testImages.txt").write_text("\n".join(TEST_SPLIT) + "\n")
    (folder / "Flickr_8k.devImages.txt").write_text("\n".join(DEV_SPLIT) + "\n")
    (folder / "Flickr_8k.trainImages.txt").write_text("")
    return folder


def test_real_photos_in_kaggle_layout_run_through_the_whole_pipeline(toy_models, tmp_path):
    kaggle = write_kaggle_photos(tmp_path / "kaggle")
    workspace = create_demo_workspace(tmp_path / "ws", toy_models, images=16, num_images=2)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["fetch"]["kaggle_dir"] = str(kaggle)
    params["subset"] = {"split": "test", "num_images": "all", "seed": 0}
    params["fusion"].update(split="dev", num_images="all")
    params["report"]["queries"] = ["a cat", "a red motorcycle", "a cup of coffee"]
    (workspace / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit_run(workspace, "real photos")
    result = run_dvc(workspace, "repro", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "10 images packed" in result.stdout

    images = read_csv(workspace / "data/subset/images.csv", ["image_id", "width", "height"])
    assert {row["image_id"]: (int(row["width"]), int(row["height"])) for row in images} == {
        "astronaut.png": (512, 512),
        "camera.png": (512, 512),
        "chelsea.png": (451, 300),
        "coffee.png": (600, 400),
        "motorcycle_left.png": (741, 500),
    }
    references = read_csv(workspace / "data/subset/references.csv", ["image_id", "caption_index", "caption"])
    assert len(references) == 25
    assert "A woman astronaut, holding her helmet, poses for a portrait ." in {r["caption"] for r in references}
    generated_ids, generated = read_generated(workspace / "data/captions")
    assert generated_ids == sorted(TEST_SPLIT) and all(generated)

    vectors = read_image_embeddings(workspace / "data/embeddings/images")[1]
    assert vectors.shape[0] == 5 and np.isfinite(vectors).all()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert len({tuple(np.round(v, 4)) for v in vectors}) == 5  # five different photos, five different vectors
    retrieval = json.loads((workspace / "metrics/retrieval.json").read_text())
    assert retrieval["gallery_images"] == 5 and retrieval["query_captions"] == 25
    assert retrieval["text_to_image"]["R@5"] == 100.0  # 5 images: every true image is in the top 5
    assert json.loads((workspace / "data/fusion/alpha.json").read_text())["images"] == 5
    agreement = json.loads((workspace / "metrics/human_agreement.json").read_text())
    assert "nothing to compare" in agreement["note"]
    for page in ("search.png", "captions.png", "failures.png"):
        assert (workspace / "metrics/report" / page).stat().st_size > 10_000
