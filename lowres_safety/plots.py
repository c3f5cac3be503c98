"""Plotly figures, one function per figure, each taking a tidy DataFrame.

Computing lives in the analysis modules; these only draw. Every figure has a title and
labelled axes, so it reads on its own in a report or notebook.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

__all__ = ["TIER_COLOURS", "cosine_heatmap", "language_colours", "projection_distributions", "refusal_by_language",
           "refusal_tradeoff",
           "selectivity_bars", "separability"]

#: One colour family per resource tier; languages within a tier get shades of it.
TIER_COLOURS = {
    "high": px.colors.sequential.Blues[3:],
    "mid": px.colors.sequential.Oranges[3:],
    "low": px.colors.sequential.Reds[3:],
    "unlisted": px.colors.sequential.Greys[3:],
}
_TIER_ORDER = ["high", "mid", "low", "unlisted"]


def language_colours(frame: pd.DataFrame) -> dict[str, str]:
    """Colour for each language, shaded within its tier's colour family."""
    pairs = frame[["language", "tier"]].drop_duplicates()
    colours = {}
    for tier, group in pairs.groupby("tier", sort=False):
        palette = TIER_COLOURS.get(tier, TIER_COLOURS["unlisted"])
        for i, lang in enumerate(group["language"]):
            colours[lang] = palette[(len(palette) - 1 - i) % len(palette)]
    return colours


def separability(sep: pd.DataFrame, *, metric: str = "auroc", direction: str | None = None,
                 position: str | None = None) -> go.Figure:
    """Separability by layer: one line per language, coloured by tier (from ``probing.separability``)."""
    frame = sep
    if direction is not None and "direction" in frame:
        frame = frame[frame["direction"] == direction]
    position = position or frame["position"].iloc[0]
    frame = frame[frame["position"] == position].sort_values(["tier", "language", "layer"])
    if frame.empty:
        raise ValueError(f"no rows for direction={direction!r}, position={position!r}")
    label = {"auroc": "AUROC", "probe_accuracy": "probe accuracy (cross-validated)"}.get(metric, metric)
    fig = px.line(frame, x="layer", y=metric, color="language", line_dash="tier",
                  color_discrete_map=language_colours(frame), markers=True,
                  category_orders={"tier": _TIER_ORDER},
                  hover_data=["tier", "n_harmful", "n_harmless"])
    what = f"projection on the {direction} direction" if metric == "auroc" and direction else label
    fig.update_layout(title=f"Harmful vs harmless separability by layer ({what}, position {position})",
                      xaxis_title="layer (residual stream after block)", yaxis_title=label,
                      yaxis_range=[0.3, 1.02], legend_title="language (tier)")
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey", annotation_text="chance")
    return fig


def projection_distributions(proj: pd.DataFrame) -> go.Figure:
    """Projections of harmful and harmless prompts per tier at one layer (from ``probing.projections``)."""
    layer, position = proj["layer"].iloc[0], proj["position"].iloc[0]
    fig = px.violin(proj, x="tier", y="projection", color="subset", box=True, points="all",
                    category_orders={"tier": [t for t in _TIER_ORDER if t in set(proj["tier"])],
                                     "subset": ["harmful", "harmless"]},
                    color_discrete_map={"harmful": "#d62728", "harmless": "#2ca02c"},
                    hover_data=["language", "id"])
    fig.update_layout(title=f"Projection on the harmfulness direction by tier (layer {layer}, {position})",
                      xaxis_title="resource tier", yaxis_title="projection on unit direction",
                      violinmode="group")
    return fig


def cosine_heatmap(cos: pd.DataFrame, *, layer: int | None = None, position: str | None = None) -> go.Figure:
    """Cosine similarity of per-language directions at one layer (from ``directions.cosine_matrix``)."""
    layer = int(cos["layer"].max() // 2) if layer is None else layer
    position = position or cos["position"].iloc[0]
    frame = cos[(cos["layer"] == layer) & (cos["position"] == position)]
    if frame.empty:
        raise ValueError(f"no cosines for layer={layer}, position={position!r}")
    order = list(dict.fromkeys(frame["language_a"]))
    grid = frame.pivot(index="language_a", columns="language_b", values="cosine").loc[order, order]
    fig = px.imshow(grid, zmin=-1, zmax=1, color_continuous_scale="RdBu_r", text_auto=".2f")
    fig.update_layout(title=f"Cosine similarity of per-language harmfulness directions (layer {layer}, {position})",
                      xaxis_title="language", yaxis_title="language", coloraxis_colorbar_title="cosine")
    return fig


def _method_label(table: pd.DataFrame) -> pd.Series:
    return table["method"].where(table["method"] != "gate", "gate k=" + table["k"].astype(str))


def selectivity_bars(table: pd.DataFrame) -> go.Figure:
    """Selectivity Δ per language and method (from ``steering.evaluate``)."""
    frame = table.assign(method_k=_method_label(table))
    fig = px.bar(frame, x="language", y="selectivity", color="method_k", barmode="group",
                 hover_data=["tier", "harmful_refusal", "harmless_refusal", "kl"])
    fig.update_layout(title="Refusal selectivity by language and method",
                      xaxis_title="language", yaxis_title="selectivity Δ = harmful − harmless refusal (pp)",
                      legend_title="method")
    return fig


def refusal_tradeoff(table: pd.DataFrame) -> go.Figure:
    """Harmful against harmless refusal, one point per language × method (from ``steering.evaluate``)."""
    frame = table.assign(method_k=_method_label(table))
    fig = px.scatter(frame, x="harmless_refusal", y="harmful_refusal", color="method_k", symbol="tier",
                     hover_data=["language", "selectivity", "kl"], text="language")
    fig.update_traces(textposition="top center")
    fig.update_layout(title="Harmful vs harmless refusal under each method",
                      xaxis_title="harmless prompts refused (%)", yaxis_title="harmful prompts refused (%)",
                      xaxis_range=[-5, 105], yaxis_range=[-5, 105], legend_title="method, tier")
    return fig


def refusal_by_language(refusal: pd.DataFrame, *, judge: str = "substring") -> go.Figure:
    """Harmful and harmless refusal rate per language (from ``evaluation.measure_refusal``)."""
    frame = refusal[refusal["judge"] == judge]
    if frame.empty:
        raise ValueError(f"no refusal rows for judge {judge!r}; judges: {sorted(set(refusal['judge']))}")
    fig = px.bar(frame, x="language", y="rate", color="subset", barmode="group", hover_data=["tier", "n"],
                 color_discrete_map={"harmful": "#d62728", "harmless": "#2ca02c"},
                 category_orders={"subset": ["harmful", "harmless"]})
    fig.update_layout(title=f"Refusal rate by language ({judge} judge)", xaxis_title="language (tier order as given)",
                      yaxis_title="prompts refused (%)", yaxis_range=[0, 100], legend_title="prompt subset")
    return fig
