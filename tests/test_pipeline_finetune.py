"""Pipeline: finetune_clip and finetune_captioner. Off (``epochs: 0``, the demo run's setting) they train nothing
and the run's results are the base models', byte for byte; on, the dual encoder reaches every later stage, search
included, and its learning rate re-runs what depends on the dual encoder and nothing else; the captioner reaches
caption, and a run killed mid-epoch resumes under `dvc repro` and ends as an uninterrupted one."""

import json
import re

import numpy as np
import pytest
import torch
import yaml
from helpers import capsearch_here, dvc_in_background, experiment_rows, pending, wait_for
from safetensors.torch import load_file

from capsearch.artifacts import read_image_embeddings, read_image_table
from capsearch.data.images import ImageSource
from capsearch.demo.workspace import run_dvc
from capsearch.index import load_pipeline_index
from capsearch.models.embedder import DualEncoder

pytestmark = pytest.mark.slow


def test_fine_tuning_off_trains_nothing_and_leaves_the_base_models_results(demo_run):
    assert sorted(p.name for p in (demo_run / "data/models/clip").iterdir()) == ["finetune.json"]
    record = json.loads((demo_run / "data/models/clip/finetune.json").read_text())
    params = yaml.safe_load((demo_run / "params.yaml").read_text())
    assert record == {"fine_tuned": False, "base": {"model": params["clip"]["model"], "revision": "main"}}
    ids, vectors = read_image_embeddings(demo_run / "data/embeddings/images")
    base = DualEncoder(params["clip"]["model"], "main", "fp32", "cpu")
    rows = read_image_table(demo_run / "data/subset/images.csv")
    direct = base.embed_images(ImageSource(demo_run / rows[0][1]), ids[:16])
    assert np.array_equal(vectors[:16], direct)  # byte for byte the base model's embeddings
    manifest = json.loads((demo_run / "data/embeddings/images/manifest.json").read_text())
    assert manifest["model"] == params["clip"]["model"]
    shown = run_dvc(demo_run, "plots", "show", "--json")  # empty curves, no warning for a newcomer
    assert shown.returncode == 0 and "failed" not in shown.stdout + shown.stderr, shown.stdout + shown.stderr


def test_fine_tuning_on_reaches_every_later_stage_and_its_learning_rate_reruns_only_what_it_should(run_copy):
    # Two learning rates as two experiments (`dvc exp run`, in the workspace): the first through the embed stages
    tuned = ["epochs=2", "batch_size=16", "warmup_steps=2", "train_images=64", "dev_images=32", "learning_rate=1e-4"]
    settings = [arg for setting in tuned for arg in ("-S", f"finetune.clip.{setting}")]
    result = run_dvc(run_copy, "exp", "run", "embed_images", "embed_texts", *settings, check=False)  # what search needs
    assert result.returncode == 0, result.stdout + result.stderr
    ran = set(re.findall(r"Running stage '([\w-]+)'", result.stdout))
    assert ran == {"finetune_clip", "embed_images", "embed_texts"}  # not caption
    assert pending(run_copy) == {"tune_fusion", "evaluate", "index", "report", "agreement"}  # the rest it reaches
    summary = next(line for line in result.stdout.splitlines() if line.startswith("[finetune_clip]"))
    assert "2 epochs on 64 train images (batch 16, lr 0.0001" in summary, summary
    live = json.loads((run_copy / "metrics/finetune_clip/metrics.json").read_text())
    kept = f"(best epoch {live['best_epoch']})" if live["best_epoch"] else "the base model is kept"  # plain scenes:
    assert kept in summary, summary  # the toy CLIP's own domain, where an epoch may not beat it (tested in the library)
    assert "embedded by data/models/clip into" in result.stdout  # a local folder: no "@None"

    model = run_copy / "data/models/clip"
    assert {"model.safetensors", "config.json", "finetune.json"} <= {p.name for p in model.iterdir()}
    assert json.loads((run_copy / "data/embeddings/images/manifest.json").read_text())["model"] == "data/models/clip"
    assert live["best_epoch"] in (0, 1, 2) and set(live["dev"]) == {"base", "best"}
    losses = (run_copy / "metrics/finetune_clip/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert losses[0] == "step\tloss" and len(losses) == 1 + 2 * 4  # 4 steps per epoch
    diff = run_dvc(run_copy, "metrics", "diff").stdout  # against the run without fine-tuning (HEAD)
    assert "dev.best.mean_recall" in diff, diff

    assert load_pipeline_index(run_copy).clip.model == str(model.resolve())  # search embeds queries with it
    found = capsearch_here("search", "a red circle", "-k", "3", "--json", cwd=run_copy)
    assert found.returncode == 0, found.stderr
    assert len(json.loads(found.stdout)[0]["hits"]) == 3

    params_file = run_copy / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    params["finetune"]["clip"]["learning_rate"] = 3e-4
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    assert pending(run_copy) == {"finetune_clip", "tune_fusion", "evaluate", "index", "report", "agreement"}
    # the second experiment through DVC's queue, as a user compares learning rates
    run_dvc(run_copy, "exp", "run", "--queue", "finetune_clip", "-S", "finetune.clip.learning_rate=3e-4")
    done = run_dvc(run_copy, "exp", "run", "--run-all", "-j", "1", check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = experiments(json.loads(run_dvc(run_copy, "exp", "show", "--json").stdout))
    names = [name for rate in (1e-4, 3e-4) for name, value in rows.items() if value == rate]
    assert len(names) == 2, rows  # two rows in `dvc exp show`
    output = run_dvc(run_copy, "plots", "diff", *names, "--json").stdout
    plots = json.loads(output[output.index("{") :])["data"]
    revisions = {rev for entry in plots["finetune_clip_loss"] for rev in entry["revisions"]}
    assert set(names) <= revisions, plots["finetune_clip_loss"]  # two loss curves in `dvc plots diff`

    # clip.model, the other way the dual encoder changes: the same stages follow, never caption
    params = yaml.safe_load(params_file.read_text())
    params["clip"]["model"] = params["clip"]["model"] + "-early"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    assert "caption" not in pending(run_copy) and {"finetune_clip", "embed_images"} <= pending(run_copy)


def experiments(shown: object) -> dict[str, float]:
    """The learning rate of each experiment in `dvc exp show --json`, by experiment name."""
    rows = experiment_rows(shown)
    return {
        row["name"]: row["params"]["finetune"]["clip"]["learning_rate"] for row in rows if row["rev"] != "workspace"
    }


def test_captioner_fine_tuning_reaches_caption_and_a_run_killed_mid_epoch_resumes_under_dvc(run_copy, tmp_path):
    params_file = run_copy / "params.yaml"
    params = yaml.safe_load(params_file.read_text())
    tuned = {"epochs": 2, "batch_size": 8, "warmup_steps": 2, "train_images": 160, "dev_images": 16}
    params["finetune"]["captioner"].update(tuned, learning_rate=1e-4)  # 20 steps per epoch
    params["runtime"].update(cache_dir=str(tmp_path / "cache"), checkpoint_steps=2)  # untracked: no stage reruns
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    checkpoints = tmp_path / "cache" / "checkpoints"

    with dvc_in_background(run_copy, "repro", "finetune_captioner"):  # SIGKILLed at the block's end
        saved = lambda: [p for p in checkpoints.glob("finetune-captioner-*/state.pt") if "." not in p.parent.name]  # noqa: E731
        wait_for(lambda: any(saved()), 120, "the first checkpoint")  # a finished one, not one still being written
    assert "finetune_captioner" in pending(run_copy)  # killed mid-run: DVC does not take the stage as done

    rerun = run_dvc(run_copy, "repro", "caption", check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert set(re.findall(r"Running stage '([\w-]+)'", rerun.stdout)) == {"finetune_captioner", "caption"}
    summary = next(line for line in rerun.stdout.splitlines() if line.startswith("[finetune_captioner]"))
    resumed = int(re.search(r"resumed from step (\d+)", summary)[1])
    assert 0 < resumed < 40 and "2 epochs on 160 train images (batch 8" in summary and "dev CIDEr-D" in summary
    assert not any(checkpoints.iterdir())  # removed once the model is saved
    losses = (run_copy / "metrics/finetune_captioner/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert len(losses) == 1 + 40  # the curve whole: the steps before the kill replayed from the checkpoint
    manifest = json.loads((run_copy / "data/captions/manifest.json").read_text())
    assert manifest["model"] == "data/models/captioner"  # caption ran the fine-tuned captioner
    assert load_pipeline_index(run_copy).captioner.model == str((run_copy / "data/models/captioner").resolve())
    assert {"embed_texts", "tune_fusion", "evaluate"} <= pending(run_copy)  # what reads the captions follows
    assert not {"finetune_clip", "embed_images"} & pending(run_copy)  # the dual encoder's stages are untouched

    weights = run_copy / "data/models/captioner/model.safetensors"
    resumed_weights = load_file(weights)
    again = run_dvc(run_copy, "repro", "-f", "-s", "finetune_captioner", check=False)  # uninterrupted, same params
    assert again.returncode == 0 and "resumed" not in again.stdout, again.stdout + again.stderr
    for name, tensor in load_file(weights).items():
        assert torch.allclose(tensor, resumed_weights[name], atol=1e-5), name
