"""cli: `capsearch search`, `caption` and `index` on the demo run and on a plain folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import capsearch, capsearch_here, references, write_typed_params
from PIL import Image

from capsearch.params import (
    RuntimeParams,
)

COLOURS = ("red", "green", "blue", "yellow", "purple", "white", "gray", "black")


SHAPES = ("circle", "square", "triangle")


def red_fraction(region: Image.Image) -> float:
    pixels = np.asarray(region.convert("RGB")).astype(int)
    red = (pixels[..., 0] > 170) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
    return float(red.mean())


def test_search_finds_red_circles_and_draws_a_contact_sheet(demo_run, tmp_path):
    out = tmp_path / "hits.png"
    result = capsearch("search", "a red circle", "-k", "3", "--out", str(out), "--json", cwd=demo_run)
    assert result.returncode == 0, result.stderr
    [entry] = json.loads(result.stdout)
    hits = entry["hits"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    refs = references(demo_run)
    assert all(any("red" in c for c in refs[h["image_id"]]) for h in hits)  # every hit shows something red
    assert sum(any("red circle" in c for c in refs[h["image_id"]]) for h in hits) >= 2
    assert sum("red" in h["caption"] for h in hits) == 3
    sheet = Image.open(out)
    assert sheet.width >= 3 * 200 and sheet.height > 200
    cells = [sheet.crop((10 + i * 210, 38, 10 + i * 210 + 200, 238)) for i in range(3)]
    assert all(red_fraction(cell) > 0.02 for cell in cells)  # the thumbnails really are the red hits
    assert red_fraction(sheet.crop((10, 260, sheet.width, sheet.height))) < 0.001  # text area is not an image


def test_search_table_methods_and_queries_file(demo_run, tmp_path):
    table = capsearch_here("search", "a blue square", "-k", "2", cwd=demo_run)
    assert table.returncode == 0, table.stderr
    lines = [line for line in table.stdout.splitlines() if line.strip()]
    assert lines[0].startswith('"a blue square"') and "rank" in lines[1]
    assert lines[2].split()[0] == "1" and "Flicker8k_Dataset/" in lines[2] and lines[3].split()[0] == "2"
    assert table.stderr.startswith("1 query in "), table.stderr  # not "1 queries"
    queries = tmp_path / "queries.txt"
    queries.write_text("a blue square\n\na yellow triangle\n")
    both = capsearch_here("search", "--queries-file", str(queries), "--json", cwd=demo_run)
    assert both.stderr.startswith("2 queries in "), both.stderr
    image = json.loads(both.stdout)
    assert [e["query"] for e in image] == ["a blue square", "a yellow triangle"]
    fusion1 = json.loads(
        capsearch_here("search", "a blue square", "--method", "fusion", "--alpha", "1", "--json", cwd=demo_run).stdout
    )
    assert [h["image_id"] for h in fusion1[0]["hits"]] == [h["image_id"] for h in image[0]["hits"]]
    by_caption = json.loads(
        capsearch_here("search", "a yellow triangle", "--method", "caption", "--json", cwd=demo_run).stdout
    )
    assert all("yellow" in h["caption"] for h in by_caption[0]["hits"][:3])


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["search", ""], 2, "capsearch search: query 1 is empty"),
        (["search", "a dog", "\u200b\ufeff"], 2, "capsearch search: query 2 is empty"),  # zero-width space, BOM
        (["search", "a dog", "-k", "0"], 2, "capsearch search: -k must be at least 1, got 0"),
        (["search"], 2, "capsearch search: no query given"),
    ],
)
def test_search_usage_errors(demo_run, args, code, message):
    result = capsearch_here(*args, cwd=demo_run)
    assert result.returncode == code
    assert result.stderr.startswith(message) and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_search_before_the_pipeline_says_which_stage_to_run(tmp_path):
    result = capsearch_here("search", "a dog", cwd=tmp_path)
    assert result.returncode == 1
    assert "run the pipeline first (`dvc repro embed_images`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def photo_folder(demo_run, tmp_path_factory):
    """A folder that is not Flickr8k-shaped: nested, mixed formats, odd names, one broken file."""
    folder = tmp_path_factory.mktemp("photos")
    with zipfile.ZipFile(demo_run / "data/raw/Flickr8k_Dataset.zip") as archive:
        names = sorted(archive.namelist())[:9]
        for i, name in enumerate(names):
            with archive.open(name) as handle:
                image = Image.open(handle).convert("RGB")
            target = folder / ("holiday" if i % 2 else "misc/deeper") / f"photo {i}"
            target.parent.mkdir(parents=True, exist_ok=True)
            image.save(target.with_suffix((".png", ".webp", ".jpeg")[i % 3]))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 definitely not a full jpeg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_caption_prints_path_and_caption(toy_models, photo_folder):
    blip = str(toy_models / "toy-blip")
    result = capsearch_here("caption", "holiday", "misc/deeper/photo 0.png", "--blip-model", blip, cwd=photo_folder)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    assert [r[0] for r in rows] == [
        *sorted(str(p.relative_to(photo_folder)) for p in (photo_folder / "holiday").iterdir()),
        "misc/deeper/photo 0.png",
    ]
    for _, caption in rows:
        words = caption.split()
        assert any(w.strip(".") in COLOURS for w in words) and any(w.strip(".") in SHAPES for w in words), caption
    as_json = json.loads(
        capsearch_here("caption", "misc/**/*.jpeg", "--blip-model", blip, "--json", cwd=photo_folder).stdout
    )
    assert [e["path"] for e in as_json] == ["misc/deeper/photo 2.jpeg", "misc/deeper/photo 8.jpeg"]
    outside = capsearch_here("caption", str(photo_folder / "misc/deeper/photo 0.png"), "--blip-model", blip,
                             cwd=photo_folder / "holiday")  # fmt: skip
    assert outside.stdout.split("\t")[0] == str(photo_folder / "misc/deeper/photo 0.png")  # absolute, not ../


def test_caption_errors(toy_models, photo_folder, tmp_path):
    blip = str(toy_models / "toy-blip")
    broken = capsearch_here("caption", ".", "--blip-model", blip, cwd=photo_folder)
    assert broken.returncode == 1
    assert "cannot decode image" in broken.stderr and "broken.jpg" in broken.stderr
    assert len(broken.stdout.splitlines()) == 9  # the readable images are still captioned
    from capsearch.data.flickr8k import SUFFIXES_SHOWN

    (tmp_path / "empty").mkdir()
    empty = capsearch_here("caption", "empty", "--blip-model", blip, cwd=tmp_path)
    assert (
        empty.returncode == 1
        and empty.stderr.strip() == f"capsearch caption: empty: no images ({SUFFIXES_SHOWN}) in this folder"
    )
    missing = capsearch_here("caption", "nope.jpg", "--blip-model", blip, cwd=tmp_path)
    assert missing.returncode == 1 and "nope.jpg: no such file or folder" in missing.stderr


def test_help_names_the_model_families_not_one_model(tmp_path):
    for command in ("search", "serve", "caption", "index"):
        shown = capsearch_here(command, "--help", cwd=tmp_path).stdout
        assert "(BLIP)" not in shown and "(CLIP)" not in shown and "Load CLIP" not in shown, (command, shown)
    assert "GIT" in capsearch_here("caption", "--help", cwd=tmp_path).stdout
    assert "SigLIP" in capsearch_here("index", "--help", cwd=tmp_path).stdout


def test_index_then_search_a_plain_folder(toy_models, photo_folder, tmp_path):
    models = ["--blip-model", str(toy_models / "toy-blip"), "--clip-model", str(toy_models / "toy-clip")]
    indexed = capsearch_here("index", str(photo_folder), *models, cwd=tmp_path)
    assert indexed.returncode == 0, indexed.stderr
    assert "indexed 9 images" in indexed.stdout and "1 unreadable skipped" in indexed.stdout
    assert "skipped broken.jpg" in indexed.stderr
    reindexed = capsearch_here("index", str(photo_folder), *models, cwd=tmp_path)
    assert "9 captions and 9 embeddings from the cache" in reindexed.stdout  # nothing recomputed
    found = capsearch_here("search", "a red circle", "-k", "9", "--index", str(photo_folder), "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)[0]["hits"]
    assert len(hits) == 9 and all(Path(h["path"]).exists() for h in hits)
    assert "exact index, 200 candidates re-ranked exactly" in found.stderr  # built by `capsearch index`
    assert (photo_folder / ".capsearch" / "images.faiss").exists()
    assert {h["image_id"] for h in hits} == {str(p.relative_to(photo_folder)) for p in photo_folder.rglob("photo *")}
    again = capsearch_here("caption", *[h["path"] for h in hits[:2]], "--blip-model", models[1], cwd=tmp_path)
    assert [line.split("\t")[1] for line in again.stdout.splitlines()] == [h["caption"] for h in hits[:2]]
    nothing = capsearch_here("search", "x", "--index", str(tmp_path), cwd=tmp_path)
    assert nothing.returncode == 1 and "no capsearch index here" in nothing.stderr
    elsewhere = tmp_path / "elsewhere"  # --out: the hint names the index folder, and it is what search finds
    moved = capsearch_here("index", "--out", str(elsewhere), str(photo_folder), *models, cwd=tmp_path)
    hint = moved.stdout.rsplit("search it with: ", 1)[1].split()
    assert hint[-2:] == ["--index", str(elsewhere)], moved.stdout
    assert capsearch_here("search", "a red circle", "--index", hint[-1], cwd=tmp_path).returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    refused = capsearch_here("index", str(empty), cwd=tmp_path)  # outside any project, no model named
    assert refused.returncode != 0 and f"{empty}: no images" in refused.stderr, refused.stderr


def test_report_stage_renders_the_example_queries(demo_run):
    gallery = Image.open(demo_run / "metrics/report/search.png")
    samples = Image.open(demo_run / "metrics/report/captions.png")
    assert gallery.width >= 5 * 200 and gallery.height >= 3 * 200 and samples.height >= 2 * 200
    first_row = [gallery.crop((10 + i * 210, 38, 10 + i * 210 + 200, 238)) for i in range(5)]
    assert sum(red_fraction(cell) > 0.02 for cell in first_row) >= 4  # the demo's first query is "a red circle"
    plots = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "plots", "show"], cwd=demo_run, capture_output=True, text=True
    )
    assert plots.returncode == 0, plots.stderr
    html = (demo_run / "dvc_plots" / "index.html").read_text()
    assert "metrics_report_search.png" in html and "metrics_report_captions.png" in html
    assert "metrics_report_failures.png" in html
    failures = Image.open(demo_run / "metrics/report/failures.png")
    assert failures.width >= 5 * 200 and failures.height >= 5 * 200  # 5 worst queries: true image + 4 hits each


def test_capsearch_index_and_caption_honour_the_runtime_params(toy_models, tmp_path):
    from capsearch.demo.scenes import generate_scenes

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (_, image, _) in enumerate(generate_scenes(3, seed=5)):
        image.save(photos / f"scene {i}.png")
    models = ["--blip-model", str(toy_models / "toy-blip"), "--clip-model", str(toy_models / "toy-clip")]
    project = tmp_path / "project"
    project.mkdir()
    cache_dir = tmp_path / "my-cache"
    write_typed_params(project, runtime=RuntimeParams(device="cpu", num_workers=1, cache_dir=str(cache_dir)))
    indexed = capsearch_here("index", str(photos), *models, "--project", str(project), cwd=tmp_path)
    assert indexed.returncode == 0, indexed.stderr
    assert (cache_dir / "results.sqlite").exists()  # runtime.cache_dir, not the default cache
    captioned = capsearch_here("caption", str(photos), models[0], models[1], "--project", str(project), cwd=tmp_path)
    assert captioned.returncode == 0, captioned.stderr
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["runtime"]["num_workers"] = -1
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    for command in (["index", str(photos), *models], ["caption", str(photos), *models[:2]]):
        refused = capsearch_here(*command, "--project", str(project), cwd=tmp_path)
        assert refused.returncode == 1 and "runtime.num_workers: expected 0 or more" in refused.stderr


def test_toy_data_writes_webdataset_shards(tmp_path, capsys):
    from capsearch.cli import main
    from capsearch.data.images import ImageSource

    assert main(["toy-data", str(tmp_path / "shards"), "--images", "10", "--shards", "3", "--seed", "2"]) == 0
    assert "wrote 3 webdataset shards" in capsys.readouterr().out
    source = ImageSource(tmp_path / "shards")
    assert len(source.ids()) == 10 and len(source.shards) == 3
    assert all(source.caption_of(image_id) for image_id in source.ids())


def test_a_file_name_that_is_not_utf8_is_skipped_and_listed_escaped(toy_models, tmp_path):
    from capsearch.demo.scenes import generate_scenes

    photos = tmp_path / "photos"
    photos.mkdir()
    scenes = generate_scenes(3, seed=8)
    for i, (_, image, _) in enumerate(scenes[:2]):
        image.save(photos / f"scene {i}.png")
    latin1 = os.path.join(os.fsencode(photos), b"caf\xe9.png")  # a name another system wrote in Latin-1
    scenes[2][1].save(os.fsdecode(latin1), format="PNG")
    models = ["--blip-model", str(toy_models / "toy-blip"), "--clip-model", str(toy_models / "toy-clip")]
    indexed = capsearch_here("index", str(photos), *models, cwd=tmp_path)
    assert indexed.returncode == 0, indexed.stderr
    assert "indexed 2 images" in indexed.stdout and "1 unreadable skipped" in indexed.stdout
    assert "skipped caf\\xe9.png: file name is not valid UTF-8" in indexed.stderr
    found = capsearch_here("search", "a red circle", "-k", "5", "--index", str(photos), "--json", cwd=tmp_path)
    assert found.returncode == 0, found.stderr
    assert sorted(hit["image_id"] for hit in json.loads(found.stdout)[0]["hits"]) == ["scene 0.png", "scene 1.png"]
    captioned = capsearch_here("caption", str(photos), models[0], models[1], cwd=tmp_path)
    assert captioned.returncode == 1 and len(captioned.stdout.splitlines()) == 2
    assert "caf\\xe9.png: file name is not valid UTF-8" in captioned.stderr


@pytest.mark.parametrize("layout", [[], ["--shards", "3"]])
def test_toy_data_memory_stays_flat_in_the_number_of_images(tmp_path, layout):
    def peak_kib(images: int) -> int:
        code = (
            "import resource, sys\nfrom capsearch.cli import main\n"
            f"main(['toy-data', sys.argv[1], '--images', '{images}', *sys.argv[2:]])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
        )
        out = tmp_path / f"data-{images}"
        result = subprocess.run([sys.executable, "-c", code, str(out), *layout], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return int(result.stdout.splitlines()[-1])

    small, large = peak_kib(200), peak_kib(1000)
    # 800 more images held in memory would be 800 x 528 x 345 x 3 bytes, about 430 MiB more
    assert large - small < 60 * 1024, (small, large)
