"""The whole pipeline through `dvc repro` on generated data with toy models, and per-key params tracking.

Read-only tests look at the session's demo run; every test that changes something works on its own copy of it,
so no test depends on another's leftovers or on their order.
"""

import json
import re

import numpy as np
import pytest
import yaml
from helpers import capsearch_here, pending

from capsearch.artifacts import read_generated, read_image_embeddings
from capsearch.cache import ResultCache
from capsearch.demo.toy_models import COLOUR_WORDS, names_colour_and_shape
from capsearch.demo.workspace import run_dvc
from capsearch.evaluation.ranks import index_of
from capsearch.evaluation.recall import retrieval_report
from capsearch.evaluation.run import CAPTION_SCORES_HEADER
from capsearch.io import load_npy, read_csv

pytestmark = pytest.mark.slow
STAGES = {
    "fetch",
    "subset",
    "finetune_clip",
    "caption",
    "embed_images",
    "embed_texts",
    "tune_fusion",
    "evaluate",
    "index",
    "report",
    "agreement",
}


GALLERY = 60  # the demo run's subset.num_images (conftest.demo_run)


@pytest.fixture
def workspace(demo_run):
    """The session's demo run (committed); tests using it must not change it."""
    return demo_run


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", output))


def repro_after(ws, change, *targets):
    params_file = ws / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    change(params)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_dvc(ws, "repro", *targets, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return ran_stages(result.stdout)


def load_run(ws):
    ids, images = read_image_embeddings(ws / "data/embeddings/images")
    captions = read_csv(ws / "data/subset/references.csv", ["image_id", "caption_index", "caption"])
    owner = index_of(ids, [row["image_id"] for row in captions])
    vectors = {name: load_npy(ws / f"data/embeddings/{name}.npy") for name in ("references", "generated")}
    return ids, captions, owner, {"images": images, **vectors}


def test_full_run_writes_every_artifact(workspace):
    metrics = json.loads((workspace / "metrics/retrieval.json").read_text())
    assert metrics["gallery_images"] == GALLERY and metrics["query_captions"] == 5 * GALLERY
    curve = json.loads((workspace / "metrics/recall_curve.json").read_text())
    assert [row["k"] for row in curve] == [1, 5, 10]
    for section in ("text_to_image", "image_to_text", "text_to_generated_caption"):
        values = [row[section] for row in curve]
        assert values == sorted(values) and values == [metrics[section][f"R@{k}"] for k in (1, 5, 10)]
    ids, _, _, vectors = load_run(workspace)
    assert vectors["images"].shape[0] == GALLERY and vectors["references"].shape[0] == 5 * GALLERY
    assert np.allclose(np.linalg.norm(vectors["images"], axis=1), 1, atol=1e-5)
    assert np.allclose(np.linalg.norm(vectors["references"], axis=1), 1, atol=1e-5)
    quality = json.loads((workspace / "metrics/caption_quality.json").read_text())
    assert quality["images"] == GALLERY and 0 < quality["BLEU-4"] <= quality["BLEU-1"] <= 100
    assert quality["CLIP-S"] > 0 and quality["CIDEr-D"] > 50  # the toy BLIP mostly says what the references say
    for metric in ("METEOR", "ROUGE-L"):  # the full COCO set but SPICE, with bootstrap intervals
        assert 0 < quality[f"{metric}_low"] <= quality[metric] <= quality[f"{metric}_high"] < 100, metric
    per_image = read_csv(workspace / "metrics/caption_scores.csv", CAPTION_SCORES_HEADER)
    assert [row["image_id"] for row in per_image] == ids
    assert np.mean([float(row["CLIP-S"]) for row in per_image]) == pytest.approx(quality["CLIP-S"], abs=1e-5)
    rouge = np.mean([float(row["ROUGE-L"]) for row in per_image])  # COCO's corpus ROUGE-L: the mean of the rows
    assert 100 * rouge == pytest.approx(quality["ROUGE-L"], abs=1e-3) and all(row["METEOR"] for row in per_image)
    fusion = metrics["text_to_image_fusion"]
    tuned = json.loads((workspace / "data/fusion/alpha.json").read_text())
    assert tuned["split"] == "dev" and tuned["images"] == GALLERY // 2 and fusion["alpha"] == tuned["alpha"]
    assert max(row["mean_recall"] for row in tuned["grid"]) == next(
        row["mean_recall"] for row in tuned["grid"] if row["alpha"] == tuned["alpha"]
    )
    assert [row["text_to_image_fusion"] for row in curve] == [fusion[f"R@{k}"] for k in (1, 5, 10)]
    t2i = metrics["text_to_image"]
    assert t2i["R@1_low"] <= t2i["R@1"] <= t2i["R@1_high"] and t2i["R@1_high"] - t2i["R@1_low"] > 1
    status = run_dvc(workspace, "status")
    assert "up to date" in status.stdout


def test_toy_models_retrieve_far_above_chance_and_at_chance_when_shuffled(workspace):
    metrics = json.loads((workspace / "metrics/retrieval.json").read_text())
    chance_r1, chance_r5 = 100 / GALLERY, 500 / GALLERY
    assert metrics["text_to_image"]["R@1"] > 5 * chance_r1
    assert metrics["text_to_image"]["R@5"] > 4 * chance_r5
    assert metrics["image_to_text"]["R@5"] > 4 * chance_r5
    assert metrics["text_to_generated_caption"]["R@5"] > 4 * chance_r5
    _, _, owner, vectors = load_run(workspace)
    rng = np.random.default_rng(0)
    shuffled = []
    for seed in range(5):
        permutation = np.random.default_rng(seed).permutation(GALLERY)
        images, references = vectors["images"], vectors["references"]
        report = retrieval_report(images, references, permutation[owner], vectors["generated"], [5])
        shuffled.append(report["text_to_image"]["R@5"])
    assert np.mean(shuffled) < 2 * chance_r5, shuffled  # wrong id alignment falls to chance
    assert rng is not None


def test_generated_captions_name_colour_and_shape(workspace):
    generated = [
        {"image_id": i, "caption": c} for i, c in zip(*read_generated(workspace / "data/captions"), strict=True)
    ]
    references = read_csv(workspace / "data/subset/references.csv", ["image_id", "caption_index", "caption"])
    truth = {}
    for row in references:
        words = row["caption"].lower().split()
        colour = next(w for w in words if w in COLOUR_WORDS)
        shape = next(w for w in words if w in ("circle", "square", "triangle"))
        truth[row["image_id"]] = (colour, shape)
    correct = sum(names_colour_and_shape(row["caption"], *truth[row["image_id"]]) for row in generated)
    assert correct / len(generated) > 0.5, correct


def test_metrics_agree_with_the_generated_human_judgments(workspace, toy_models):
    from capsearch.data.flickr8k import parse_token_file
    from capsearch.evaluation.human_agreement import human_agreement, read_crowdflower_judgments, read_expert_judgments
    from capsearch.models.embedder import DualEncoder

    report = json.loads((workspace / "metrics/human_agreement.json").read_text())
    expert = report["flickr8k_expert"]
    assert expert["pairs"] > 100
    assert expert["tau_CLIP-S"] > 15 and expert["tau_RefCLIP-S"] > 15 and expert["tau_CIDEr-D"] > 15
    assert {"tau_BLEU-1", "tau_METEOR", "tau_ROUGE-L"} <= set(expert)
    text = workspace / "data/text"
    ids, images = read_image_embeddings(workspace / "data/embeddings/images")
    embedder = DualEncoder(str(toy_models / "toy-clip"), precision="fp32", device="cpu")
    args = (
        read_expert_judgments(text / "ExpertAnnotations.txt"),
        read_crowdflower_judgments(text / "CrowdFlowerAnnotations.txt"),
        parse_token_file(text / "Flickr8k.token.txt").captions,
        ids,
    )
    cache = ResultCache()  # the stage's: METEOR of the same pairs comes from it, Java is not started again
    again = human_agreement(*args, images, lambda texts: embedder.embed_texts(texts).vectors, cache)
    assert again["flickr8k_expert"]["tau_CLIP-S"] == pytest.approx(expert["tau_CLIP-S"], abs=1e-3)
    assert again["flickr8k_expert"]["tau_METEOR"] == pytest.approx(expert["tau_METEOR"], abs=1e-6)
    shuffled_images = images[np.random.default_rng(0).permutation(len(ids))]
    shuffled = human_agreement(*args, shuffled_images, embedder_texts(embedder), cache)
    assert abs(shuffled["flickr8k_expert"]["tau_CLIP-S"]) < 10  # wrong image alignment: no agreement left


def embedder_texts(embedder):
    return lambda texts: embedder.embed_texts(texts).vectors


def test_changing_evaluate_ks_reruns_only_evaluate_index_and_finetune_clip(run_copy):
    ran = repro_after(run_copy, lambda p: p["evaluate"].update(ks=[1, 5, 10, 20]))
    # the index reports Recall@K through it at the same Ks; finetune_clip picks its best epoch by them (off here:
    # it writes the same record, so nothing after it re-runs)
    assert ran == {"finetune_clip", "evaluate", "index"}
    assert "R@20" in json.loads((run_copy / "metrics/retrieval.json").read_text())["text_to_image"]
    assert "R@20" in json.loads((run_copy / "metrics/index.json").read_text())["image"]["index"]


def test_changing_report_queries_reruns_only_report(run_copy):
    ran = repro_after(run_copy, lambda p: p["report"].update(queries=["a green square"], k=3))
    assert ran == {"report"}


def test_untracked_runtime_knobs_rerun_nothing(run_copy):
    ran = repro_after(run_copy, lambda p: p["runtime"]["batch_size"].update(caption=7, embed_images=5))
    assert ran == set()


def test_an_experiment_with_another_caption_model_reruns_what_depends_on_captions(run_copy, toy_vlms):
    """`dvc exp run -S caption.model=...` against the committed run (the toy BLIP): here a PaliGemma-shaped VLM
    asked by its prefix prompt. Caption and what reads captions re-run, not embed_images; the experiment is listed by
    `dvc exp show` and keeps its params and outputs in the workspace."""
    assert run_dvc(run_copy, "status").stdout.strip().endswith("up to date.")  # the committed demo run
    before = read_generated(run_copy / "data/captions")
    early = str(toy_vlms / "toy-paligemma")
    result = run_dvc(run_copy, "exp", "run", "-S", f"caption.model={early}", "evaluate", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    # not embed_images; finetune_captioner (off) records the new base model, which caption then uses
    assert ran_stages(result.stdout) == {"finetune_captioner", "caption", "embed_texts", "tune_fusion", "evaluate"}
    assert pending(run_copy) == {"index", "report"}  # what else the change reaches (not agreement)
    after = read_generated(run_copy / "data/captions")
    assert after[0] == before[0] and after[1] != before[1]  # the same images, the other model's captions
    assert "asked 'caption en' as its prefix" in result.stdout  # the family's default prompt, said
    assert not any("caption en" in caption or "<" in caption for caption in after[1])  # never in a caption
    shown = json.loads(run_dvc(run_copy, "exp", "show", "--json").stdout)
    experiments = [exp for rev in shown for exp in (rev.get("experiments") or [])]
    assert experiments, shown
    params = yaml.safe_load((run_copy / "params.yaml").read_text())
    assert params["caption"]["model"] == early  # a plain `dvc exp run -S` keeps the experiment's params


def test_changing_subset_num_images_reruns_everything_after_fetch_computing_only_new_images(run_copy, tmp_path):
    params_file = run_copy / "params.yaml"

    def repro_with(num_images: int, *targets: str) -> tuple[set[str], dict[str, str]]:
        params = yaml.safe_load(params_file.read_text())
        params["subset"]["num_images"] = num_images
        params["runtime"]["cache_dir"] = str(tmp_path / "fresh-cache")  # untracked: re-runs nothing by itself
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))
        result = run_dvc(run_copy, "repro", *targets, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        lines = {line.split("]")[0][1:]: line for line in result.stdout.splitlines() if line.startswith("[")}
        return ran_stages(result.stdout), lines

    ran, first = repro_with(40)
    assert ran == STAGES - {"fetch", "finetune_clip", "tune_fusion"}  # train and dev splits untouched
    assert json.loads((run_copy / "metrics/retrieval.json").read_text())["gallery_images"] == 40
    assert "subset.num_images" in run_dvc(run_copy, "params", "diff").stdout
    fresh, grown_text = "40 images computed, 0 from the result cache", "10 images computed, 40 from the result cache"
    assert fresh in first["caption"] and fresh in first["embed_images"]
    ran, grown = repro_with(50, "caption", "embed_images")  # a grown subset: only the new images are computed
    assert ran == {"subset", "caption", "embed_images"}
    assert grown_text in grown["caption"], grown["caption"]
    assert grown_text in grown["embed_images"], grown["embed_images"]


def test_index_stage_measures_the_index_against_exact_search(run_copy):
    exact = json.loads((run_copy / "metrics/index.json").read_text())
    retrieval = json.loads((run_copy / "metrics/retrieval.json").read_text())
    assert exact["kind"] == "exact" and exact["vectors"] == GALLERY  # auto: a small gallery is scanned exactly
    for k in (1, 5, 10):  # Recall@K through the index = the evaluate stage's, computed independently
        assert exact["image"]["index"][f"R@{k}"] == pytest.approx(retrieval["text_to_image"][f"R@{k}"], abs=1e-3)
        assert exact["caption"]["exact"][f"R@{k}"] == pytest.approx(
            retrieval["text_to_generated_caption"][f"R@{k}"], abs=1e-3
        )
    assert exact["image"]["recall_at_10"] == exact["image"]["reranked_recall_at_10"] == 1.0
    # an approximate index that proposes few candidates: recall below 1, re-ranking never worse, scores exact
    ran = repro_after(run_copy, lambda p: p["index"].update(kind="ivf_sq8", ivf_nlist=1, candidates=12))
    assert ran == {"index"}
    approximate = json.loads((run_copy / "metrics/index.json").read_text())["image"]
    assert approximate["factory"] == "IVF1,SQ8" and approximate["bytes_per_vector"] < exact["image"]["bytes_per_vector"]
    assert 0.8 <= approximate["recall_at_10"] <= approximate["reranked_recall_at_10"] <= 1.0
    assert approximate["index"]["R@10"] <= approximate["exact"]["R@10"] == exact["image"]["exact"]["R@10"]
    found = json.loads(capsearch_here("search", "a red circle", "-k", "10", "--json", cwd=run_copy).stdout)[0]["hits"]
    full = json.loads(capsearch_here("search", "a red circle", "-k", "60", "--exact", "--json", cwd=run_copy).stdout)
    exact_score = {h["image_id"]: h["score"] for h in full[0]["hits"]}
    assert [h["score"] for h in found] == pytest.approx([exact_score[h["image_id"]] for h in found], abs=1e-5)
    assert len({h["image_id"] for h in found} & {h["image_id"] for h in full[0]["hits"][:10]}) >= 8
