"""The demo run's metrics against a stored snapshot, so that drift in any stage shows (tolerance in the file)."""

import json
from pathlib import Path

import pytest

SNAPSHOT = json.loads((Path(__file__).parent / "data" / "demo_metrics.json").read_text(encoding="utf-8"))
RECALL_POINTS = 8.0  # recall, in percentage points: toy weights differ slightly from one CPU to another
RELATIVE = 0.10  # every other number


def test_demo_metrics_match_the_snapshot(demo_run):
    retrieval = json.loads((demo_run / "metrics/retrieval.json").read_text())
    assert retrieval["gallery_images"] == 60 and retrieval["query_captions"] == 300
    for direction, expected in SNAPSHOT["retrieval"].items():
        for key, value in expected.items():
            assert retrieval[direction][key] == pytest.approx(value, abs=RECALL_POINTS), (direction, key)
    quality = json.loads((demo_run / "metrics/caption_quality.json").read_text())
    for key, value in SNAPSHOT["caption_quality"].items():
        assert quality[key] == pytest.approx(value, rel=RELATIVE), key
    expert = json.loads((demo_run / "metrics/human_agreement.json").read_text())["flickr8k_expert"]
    for key, value in SNAPSHOT["human_agreement"].items():
        assert expert[key] == pytest.approx(value, rel=RELATIVE), key
