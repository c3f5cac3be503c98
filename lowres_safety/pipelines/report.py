"""Self-contained HTML reports and JSON results, written atomically.

Plotly's JavaScript is embedded once, so a report opens without internet.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from .._runtime.files import atomic_write_text

__all__ = ["Section", "formatters", "interval_cell", "records", "write_html", "write_json"]


@dataclass(frozen=True)
class Section:
    """One report section: a heading, a sentence of context, figures, and how to read them."""

    title: str
    intro: str = ""
    figures: tuple[tuple[go.Figure, str], ...] = ()  # (figure, one sentence on how to read it)
    table: pd.DataFrame | None = None


def records(frame: pd.DataFrame) -> list[dict]:
    """DataFrame rows as JSON-safe dicts (NaN becomes null, numpy scalars become Python)."""
    out = []
    for row in frame.to_dict(orient="records"):
        clean = {}
        for k, v in row.items():
            v = v.item() if hasattr(v, "item") else v
            clean[k] = None if isinstance(v, float) and math.isnan(v) else v
        out.append(clean)
    return out


def write_json(path: str | Path, payload: dict) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=1, ensure_ascii=False, allow_nan=False))


#: Column name -> decimals a table shows: what a 95% interval on tens of prompts supports (AUROC and accuracies
#: to 0.01, refusal rates and selectivity to whole points); anything else to three significant digits.
_DECIMALS = ((re.compile(r"^mc_|refus|selectivity|rate|%|^harmful_|^harmless_|gap"), 0),
             (re.compile(r"auroc|accuracy|cosine|probe|balanced|score|similarity"), 2))


def interval_cell(point: float, low: float, high: float, places: int = 2) -> str:
    """A figure with its interval as one table cell: ``0.87 [0.72, 0.98]``."""
    return f"{point:.{places}f} [{low:.{places}f}, {high:.{places}f}]"


def formatters(table: pd.DataFrame) -> dict:
    """``DataFrame.to_html`` formatters per float column (:data:`_DECIMALS`)."""
    out = {}
    for column in table.select_dtypes("float").columns:
        name = str(column).lower()
        places = next((d for pattern, d in _DECIMALS if pattern.search(name)), None)
        out[column] = (lambda x, p=places: f"{x:.{p}f}") if places is not None else (lambda x: f"{x:.3g}")
    return out


def write_html(path: str | Path, title: str, sections: list[Section], header: str = "") -> Path:
    """One HTML file: plotly.js inline once, each figure with its reading note underneath."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
        "color:#222}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-top:1em}"
        ".how{color:#555;font-style:italic;margin:0 0 2em}table{border-collapse:collapse;font-size:.85em}"
        "td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}.scroll{overflow-x:auto;max-width:100%}"
        "</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        header,
    ]
    first = True
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.intro:
            parts.append(f"<p>{html.escape(section.intro)}</p>")
        for fig, how in section.figures:
            parts.append(pio.to_html(fig, full_html=False, include_plotlyjs="inline" if first else False))
            parts.append(f"<p class='how'>{html.escape(how)}</p>")
            first = False
        if section.table is not None:
            table = section.table.rename_axis(columns=None)  # a pivot's column-axis name is no column
            parts.append("<div class='scroll'>" + table.to_html(index=False, formatters=formatters(table),
                                                                 na_rep="–") + "</div>")
    parts.append("</body></html>")
    return atomic_write_text(path, "\n".join(parts))
