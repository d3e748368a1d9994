"""DVC's plots drawn without a network: each Vega-Lite plot of ``dvc plots diff --json`` rendered to PNG (and SVG)
by vl-convert (Vega in a bundled engine, no CDN), with an ``index.html`` showing them and DVC's own image plots."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

from capsearch.errors import CapsearchError
from capsearch.io import atomic_folder


class PlotsError(CapsearchError, RuntimeError):
    """Plots that cannot be drawn; the message says why."""


def _vl_convert() -> Any:
    try:
        import vl_convert
    except ImportError:
        raise PlotsError("drawing plots offline needs vl-convert-python: pip install 'capsearch[plots]'") from None
    return vl_convert


def _file_name(plot_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", plot_id).strip("_") or "plot"


def legible(spec: dict[str, Any]) -> dict[str, Any]:
    """A DVC Vega-Lite spec whose legend tells its lines apart. DVC colours by revision and dashes by field, with
    grey legend symbols: with one revision every field got the same grey swatch. One revision: each field its own
    colour; several: the dash legend drawn as line strokes, long enough to show each dash."""
    spec = json.loads(json.dumps(spec))  # a copy
    encoding = spec.get("encoding", {})
    dash, color = encoding.get("strokeDash"), encoding.get("color")
    if not dash or not color:
        return spec
    revisions = {row.get(color.get("field")) for row in spec.get("data", {}).get("values", [])}
    if len(revisions) <= 1:
        encoding["color"] = {"field": dash["field"], "title": None, "scale": {"domain": dash["scale"]["domain"]}}
        del encoding["strokeDash"]
    else:
        dash["legend"] = {
            "symbolType": "stroke",
            "symbolStrokeColor": "black",
            "symbolSize": 400,
            "symbolStrokeWidth": 2,
        }
    return spec


def render_plots(plots: dict[str, list[dict[str, Any]]], out: str | Path) -> list[Path]:
    """Draw the ``data`` of ``dvc plots diff --json`` into ``out`` (replaced as one unit): ``<plot>.png`` and
    ``.svg`` for each Vega-Lite plot with data, image plots copied as ``<rev>_<plot>.png``, and ``index.html``
    showing all of them; returns the PNG files drawn."""
    vlc = _vl_convert()
    drawn: list[Path] = []
    sections = []
    with atomic_folder(out) as building:
        for plot_id, entries in plots.items():
            for entry in entries:
                name = _file_name(plot_id)
                if entry.get("type") == "vega" and entry.get("content", {}).get("data", {}).get("values"):
                    spec = legible(entry["content"])
                    (building / f"{name}.png").write_bytes(vlc.vegalite_to_png(spec, scale=2))
                    (building / f"{name}.svg").write_text(vlc.vegalite_to_svg(spec), encoding="utf-8")
                    drawn.append(Path(out) / f"{name}.png")
                    revisions = ", ".join(entry.get("revisions", []))
                    sections.append(
                        f'<h2>{html.escape(plot_id)} ({html.escape(revisions)})</h2><img src="{name}.png" width="640">'
                    )
                elif entry.get("type") == "image" and Path(entry.get("url", "")).is_file():
                    revision = _file_name("_".join(entry.get("revisions", [])))
                    shutil.copyfile(entry["url"], building / f"{revision}_{name}")
                    sections.append(
                        f"<h2>{html.escape(plot_id)} ({html.escape(revision)})</h2>"
                        f'<img src="{revision}_{name}" width="640">'
                    )
        if not drawn:
            raise PlotsError("no plot with data: run the pipeline (dvc repro) or an experiment first")
        page = "<!doctype html><meta charset='utf-8'><title>capsearch plots</title>\n" + "\n".join(sections) + "\n"
        (building / "index.html").write_text(page, encoding="utf-8")
    return drawn
