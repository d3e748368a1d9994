"""Comparing models the DVC way: a generated COCO (Karpathy split) made and run with the toy CLIP by
`capsearch demo --dataset coco`, then `dvc exp run --queue -S clip.model=<toy SigLIP>` (another family),
`dvc exp show` and `dvc plots diff` of the two; two open_clip toys, the BiomedCLIP-shaped one fine-tuned by
finetune_clip."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import experiment_rows

from capsearch.demo.workspace import run_dvc


def experiments(shown: object) -> list[dict]:
    """Every experiment of `dvc exp show --json`: its name, clip.model and text→image R@1."""
    return [
        {
            "name": row["name"],
            "clip": row["params"]["clip"]["model"],
            "r1": row["metrics"].get("metrics/retrieval.json", {}).get("text_to_image", {}).get("R@1"),
            "epochs": row["params"]["finetune"]["clip"]["epochs"],
            "finetuned": row["metrics"].get("metrics/finetune_clip/metrics.json", {}),
        }
        for row in experiment_rows(shown)
    ]


@pytest.mark.slow
def test_queued_experiments_compare_clip_siglip_and_open_clip_fine_tuned_or_not(
    toy_models, toy_families, toy_open_clip, tmp_path
):
    workspace = tmp_path / "ws"
    demo = [str(Path(sys.executable).parent / "capsearch"), "demo", "--dataset", "coco", "--dir", str(workspace)]
    env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}  # a shell without the venv
    made = subprocess.run(
        [*demo, "--models", str(toy_models), "--images", "240", "--num-images", "24"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert made.returncode == 0, made.stdout[-3000:] + made.stderr[-3000:]
    stages = [line.split("]")[0][1:] for line in made.stdout.splitlines() if line.startswith("[")]
    assert stages[:2] == ["fetch", "subset"] and {"caption", "evaluate", "report"} <= set(stages)  # stage by stage
    assert "coco: " in made.stdout and "text→image  R@1" in made.stdout and "source .venv/bin/activate" in made.stdout
    clip, siglip = str(toy_models / "toy-clip"), str(toy_families / "toy-siglip")
    open_clip = str(toy_open_clip / "toy-open-clip")  # open_clip's layout: another family, the same one line
    biomedclip = str(toy_open_clip / "toy-biomedclip")  # BiomedCLIP's shape: a timm tower and a BERT text tower
    for model in (siglip, open_clip):  # the demo ran toy-clip
        run_dvc(workspace, "exp", "run", "--queue", "evaluate", "-S", f"clip.model={model}")
    # the BiomedCLIP-shaped toy fine-tuned by finetune_clip (two short epochs) before it embeds, as the radiology
    # recipe does: its best epoch handed on in open_clip's own layout
    tuned = ["finetune.clip.epochs=2", "finetune.clip.batch_size=8", "finetune.clip.warmup_steps=1"]  # 30 train
    run_dvc(workspace, "exp", "run", "--queue", "evaluate", "-S", f"clip.model={biomedclip}",
            *(arg for change in tuned for arg in ("-S", change)))  # fmt: skip
    ran = run_dvc(workspace, "exp", "run", "--run-all", "-j", "1", check=False)
    assert ran.returncode == 0, ran.stdout[-4000:] + ran.stderr[-4000:]
    queue = run_dvc(workspace, "queue", "status").stdout  # --run-all exits 0 even when an experiment failed
    assert "Failed" not in queue and queue.count("Success") == 3, queue
    found = experiments(json.loads(run_dvc(workspace, "exp", "show", "--json").stdout))
    by_model = {row["clip"]: row for row in found if row["r1"] is not None and not row["epochs"]}
    [fine_tuned] = [row for row in found if row["epochs"] == 2 and row["r1"] is not None]
    assert fine_tuned["clip"] == biomedclip and fine_tuned["finetuned"]["best_epoch"] in (0, 1, 2), found
    by_model[biomedclip] = fine_tuned
    assert set(by_model) == {clip, siglip, open_clip, biomedclip}, found
    assert fine_tuned["r1"] > 100 / 24
    assert len({row["r1"] for row in by_model.values()}) > 1  # four models, their results, each above chance (1/24)
    assert min(row["r1"] for row in by_model.values()) > 100 / 24
    names = ["HEAD", by_model[siglip]["name"]]  # the committed demo run (CLIP) and the queued one (SigLIP)
    output = run_dvc(workspace, "plots", "diff", *names, "--json").stdout  # the report images are not built
    plots = json.loads(output[output.index("{") :])["data"]
    curves = [
        entry for key, entries in plots.items() if key in ("recall_at_k", "fusion_recall_at_k") for entry in entries
    ]
    assert curves and all(set(names) <= set(entry["revisions"]) for entry in curves), curves
    values = curves[0]["content"]["data"]["values"]
    per_rev = {
        n: sorted((v["k"], v["field"], v["dvc_inferred_y_value"]) for v in values if v["rev"] == n) for n in names
    }
    assert all(per_rev.values()) and per_rev[names[0]] != per_rev[names[1]]
    table = run_dvc(workspace, "exp", "show", "--md", "--only-changed").stdout
    assert siglip in table and clip in table and "R@1" in table
