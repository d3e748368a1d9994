"""plots: DVC's Vega-Lite plots drawn offline, with a legend that tells every line apart."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from capsearch.plots import legible

FIELDS = ["image_to_text", "text_to_generated_caption", "text_to_image"]


def dvc_spec(revisions: list[str]) -> dict:
    """A plot as `dvc plots diff --json` gives it for metrics/recall_at_k.json: colour by revision, dash by field,
    grey legend symbols (DVC's own template)."""
    values = [
        {"k": k, "rev": rev, "field": field, "dvc_inferred_y_value": 10 * k + 5 * i + 3 * r}
        for r, rev in enumerate(revisions)
        for i, field in enumerate(FIELDS)
        for k in (1, 5, 10)
    ]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "data": {"values": values},
        "mark": {"type": "line"},
        "encoding": {
            "x": {"field": "k", "type": "quantitative"},
            "y": {"field": "dvc_inferred_y_value", "type": "quantitative"},
            "color": {
                "field": "rev",
                "scale": {"domain": revisions, "range": ["#945dd6", "#13adc7"][: len(revisions)]},
            },
            "strokeDash": {
                "field": "field",
                "scale": {"domain": FIELDS, "range": [[1, 0], [8, 8], [8, 4]]},
                "legend": {"symbolFillColor": "transparent", "symbolStrokeColor": "grey"},
            },
        },
    }


def colours(png: bytes) -> int:
    """How many hues (of 36 ten-degree bins) a drawing shows in more than a few strongly coloured pixels."""
    image = Image.open(io.BytesIO(png)).convert("RGBA")
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    hsv = np.asarray(Image.alpha_composite(white, image).convert("RGB").convert("HSV")).reshape(-1, 3).astype(int)
    strong = hsv[(hsv[:, 1] > 100) & (hsv[:, 2] > 80)]
    counts = np.bincount(strong[:, 0] * 36 // 256, minlength=36)
    return int((counts > 100).sum())


def test_one_revision_gets_a_colour_per_field_not_three_grey_swatches():
    import vl_convert

    spec = dvc_spec(["HEAD"])
    assert colours(vl_convert.vegalite_to_png(spec)) == 1  # DVC's: one colour, the fields told apart by grey dashes
    drawn = legible(spec)
    assert drawn["encoding"]["color"]["field"] == "field" and "strokeDash" not in drawn["encoding"]
    assert colours(vl_convert.vegalite_to_png(drawn)) >= 3
    assert spec["encoding"]["color"]["field"] == "rev"  # the input is left as it was


def test_several_revisions_keep_colour_by_revision_and_draw_dashes_in_the_legend():
    drawn = legible(dvc_spec(["HEAD", "exp-1"]))
    assert drawn["encoding"]["color"]["field"] == "rev"
    legend = drawn["encoding"]["strokeDash"]["legend"]
    assert legend["symbolType"] == "stroke" and legend["symbolStrokeColor"] != "grey"
    assert len({tuple(p) for p in drawn["encoding"]["strokeDash"]["scale"]["range"]}) == 3  # three distinct dashes
