"""Plotly figures, one function per figure, each taking a tidy DataFrame.

Computing lives in the analysis modules; these only draw. Every figure has a title and
labelled axes, so it reads on its own in a report or notebook; the figures of the paper's
analyses (:mod:`lowres_safety.analyses`, drawn in :mod:`.analyses`) also carry a caption
that says how to read them.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from .analyses import (
    ablation_curves,
    fewshot_curves,
    ood_bars,
    ood_category_heatmap,
    rank_curves,
    readout_curves,
    strength_curves,
    subspace_transfer_heatmap,
    utility_by_category,
)
from .colours import TIER_COLOURS, TIER_ORDER, language_colours

__all__ = ["TIER_COLOURS", "TIER_ORDER", "ablation_curves", "cosine_heatmap", "fewshot_curves", "language_colours",
           "ood_bars", "ood_category_heatmap", "projection_distributions", "rank_curves", "readout_curves",
           "refusal_by_language", "refusal_tradeoff", "selectivity_bars", "separability", "strength_curves",
           "subspace_transfer_heatmap", "utility_by_category"]

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
                  category_orders={"tier": TIER_ORDER},
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
                    category_orders={"tier": [t for t in TIER_ORDER if t in set(proj["tier"])],
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
    """``method`` alone, or ``method k=…`` for a method the table has at several k (gate, AdaSteer, CAST)."""
    several = table.groupby("method")["k"].transform("nunique") > 1
    return table["method"].where(~several, table["method"] + " k=" + table["k"].astype(str))


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


# ---------------------------------------------------------------- where calibration breaks (issue 5)


def cosine_by_layer(cos: pd.DataFrame, *, reference: str = "en", position: str | None = None) -> go.Figure:
    """Cosine of every language's direction with ``reference``'s, by layer (from ``directions.cosine_matrix``)."""
    position = position or cos["position"].iloc[0]
    frame = cos[(cos["language_a"] == reference) & (cos["language_b"] != reference) & (cos["position"] == position)]
    if frame.empty:
        raise ValueError(f"no cosines with reference language {reference!r} at position {position!r}")
    frame = frame.rename(columns={"language_b": "language", "tier_b": "tier"})
    fig = px.line(frame, x="layer", y="cosine", color="language", line_dash="tier", markers=True,
                  color_discrete_map=language_colours(frame), category_orders={"tier": TIER_ORDER})
    fig.update_layout(title=f"Cosine of each language's harmfulness direction with {reference}'s, by layer ({position})",
                      xaxis_title="layer", yaxis_title=f"cosine with {reference}", yaxis_range=[-0.2, 1.02],
                      legend_title="language (tier)")
    return fig


def transfer_heatmap(transfer: pd.DataFrame) -> go.Figure:
    """AUROC of each language's direction (rows) on each language's prompts (columns) (``probing.transfer_matrix``)."""
    order = list(dict.fromkeys(transfer["direction_language"]))
    grid = transfer.pivot(index="direction_language", columns="target_language", values="auroc").loc[order, order]
    fig = px.imshow(grid, zmin=0.5, zmax=1, color_continuous_scale="Viridis", text_auto=".2f")
    layer, position = transfer["layer"].iloc[0], transfer["position"].iloc[0]
    fig.update_layout(title=f"Transfer of per-language directions (AUROC, layer {layer}, {position})",
                      xaxis_title="scored on prompts of", yaxis_title="direction from", coloraxis_colorbar_title="AUROC")
    return fig


def gap_scatter(gap: pd.DataFrame) -> go.Figure:
    """Representation (held-out AUROC) against action (harmful refusal) per language, with intervals.

    Takes ``calibration.gap_table``; the error bars are its bootstrap intervals.
    """
    colours = {"representation failure": "#7f7f7f", "action failure": "#d62728", "acted on": "#2ca02c"}
    gap = gap.assign(_ax=gap["auroc_high"] - gap["auroc"], _axm=gap["auroc"] - gap["auroc_low"],
                     _ay=gap["harmful_high"] - gap["harmful_refusal"], _aym=gap["harmful_refusal"] - gap["harmful_low"])
    fig = px.scatter(gap, x="auroc", y="harmful_refusal", color="failure_type", symbol="tier", text="language",
                     color_discrete_map=colours, error_x="_ax", error_x_minus="_axm", error_y="_ay",
                     error_y_minus="_aym", hover_data=["harmless_refusal", "action_gap", "failure_direction",
                                                       "decided"])
    fig.update_traces(textposition="top center", marker_size=11)
    fig.add_vline(x=float(gap["auroc_threshold"].iloc[0]), line_dash="dot", line_color="grey",
                  annotation_text="AUROC threshold")
    fig.add_hline(y=float(gap["refusal_threshold"].iloc[0]), line_dash="dot", line_color="grey",
                  annotation_text="refusal threshold")
    fig.update_layout(title="Representation vs action per language", xaxis_title="held-out AUROC of the "
                      "high-resource direction at the gate layer", yaxis_title="harmful prompts refused (%)",
                      yaxis_range=[-5, 105], xaxis_range=[0.4, 1.02], legend_title="failure type, tier")
    return fig


def threshold_shift_bars(shift: pd.DataFrame) -> go.Figure:
    """Projection at 50% refusal relative to the source languages (``calibration.threshold_shift``)."""
    fig = px.bar(shift, x="language", y="shift", color="tier", hover_data=["p50", "refusal_rate", "n"],
                 color_discrete_map={t: c[-3] for t, c in TIER_COLOURS.items()}, category_orders={"tier": TIER_ORDER})
    fig.update_layout(title="Decision-threshold shift: extra harmfulness signal needed for 50% refusal",
                      xaxis_title="language", yaxis_title="projection at 50% refusal − source languages'",
                      legend_title="tier")
    return fig


def dose_response_curves(dose: pd.DataFrame) -> go.Figure:
    """Harmful refusal, harmless refusal and KL against α, one panel column per layer (``dose_response.dose_response``)."""
    measures = {"harmful_refusal": "harmful refused (%)", "harmless_refusal": "harmless refused (%)",
                "kl_harmless": "KL on harmless"}
    long = dose.melt(id_vars=["language", "tier", "layer", "alpha"], value_vars=list(measures), var_name="measure")
    long["measure"] = long["measure"].map(measures)
    fig = px.line(long, x="alpha", y="value", color="language", facet_col="layer", facet_row="measure", markers=True,
                  color_discrete_map=language_colours(dose), category_orders={"measure": list(measures.values())})
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_xaxes(matches=None, showticklabels=True)  # each layer has its own α unit
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    fig.update_layout(title="Dose-response of adding α·v̂ (columns: layer; rows: measure)", height=720,
                      legend_title="language")
    fig.update_xaxes(title_text="α (added along the unit direction)", row=1)
    return fig


def loophole_bars(loop: pd.DataFrame) -> go.Figure:
    """Paired disagreement with the reference language (``calibration.loophole_rates``)."""
    long = loop.melt(id_vars=["language", "tier", "n_pairs"], value_vars=["loophole_rate", "reverse_rate"],
                     var_name="rate")
    long["rate"] = long["rate"].map({"loophole_rate": "reference refuses, language answers",
                                     "reverse_rate": "reference answers, language refuses"})
    fig = px.bar(long, x="language", y="value", color="rate", barmode="group", hover_data=["tier", "n_pairs"],
                 color_discrete_sequence=["#d62728", "#1f77b4"])
    ref = loop["reference"].iloc[0]
    fig.update_layout(title=f"Loophole rate on parallel harmful prompts (reference {ref})", xaxis_title="language",
                      yaxis_title="% of paired prompts", yaxis_range=[0, 100], legend_title="")
    return fig


def attribution_by_layer(components: pd.DataFrame) -> go.Figure:
    """Mean direct contribution of each layer's attention and MLP to the refusal logit difference.

    Takes ``Attribution.mean("components")`` (one row per language × subset × component).
    """
    frame = components[components["kind"].isin(["attn", "mlp"])]
    fig = px.line(frame, x="layer", y="contribution", color="language", line_dash="kind", facet_col="subset",
                  markers=True, color_discrete_map=language_colours(frame))
    fig.for_each_annotation(lambda a: a.update(text=a.text.replace("subset=", "") + " prompts"))
    fig.update_layout(title="Direct logit attribution of refusal vs compliance, by layer and component",
                      yaxis_title="contribution to refusal logit difference", legend_title="language, component")
    fig.update_xaxes(title_text="layer")
    return fig


def head_heatmap(heads: pd.DataFrame, *, language: str, subset: str = "harmful") -> go.Figure:
    """Mean contribution of each attention head for one language and subset (``Attribution.mean("heads")``)."""
    frame = heads[(heads["language"] == language) & (heads["subset"] == subset)]
    if frame.empty:
        raise ValueError(f"no head attributions for language {language!r}, subset {subset!r}")
    grid = frame.pivot(index="layer", columns="head", values="contribution")
    bound = float(grid.abs().max().max()) or 1.0
    fig = px.imshow(grid, color_continuous_scale="RdBu_r", zmin=-bound, zmax=bound, aspect="auto", origin="lower")
    fig.update_layout(title=f"Per-head contribution to the refusal logit difference ({language}, {subset})",
                      xaxis_title="head", yaxis_title="layer", coloraxis_colorbar_title="logit diff")
    return fig


def logit_lens_curves(lens: pd.DataFrame) -> go.Figure:
    """Refusal logit difference read from the residual stream at each layer (``Attribution.mean("lens")``)."""
    fig = px.line(lens, x="layer", y="logit_diff", color="language", line_dash="subset", markers=True,
                  color_discrete_map=language_colours(lens))
    fig.add_hline(y=0, line_dash="dot", line_color="grey")
    fig.update_layout(title="Logit lens: accumulated refusal logit difference by layer",
                      xaxis_title="residual stream before layer (last point: final)",
                      yaxis_title="refusal − compliance logit", legend_title="language, subset")
    return fig


def divergence_bars(compare: pd.DataFrame, *, top: int = 15) -> go.Figure:
    """Components whose contributions differ most between two languages (``attribution.compare_languages``)."""
    a, b = [c[len("mean_"):] for c in compare.columns if c.startswith("mean_")]
    frame = compare.head(top).iloc[::-1]
    label = frame["component"] if "component" in frame else "L" + frame["layer"].astype(str) + "H" + frame["head"].astype(str)
    fig = go.Figure(go.Bar(x=frame["diff"], y=label, orientation="h",
                           marker_color=["#d62728" if d > 0 else "#1f77b4" for d in frame["diff"]]))
    fig.update_layout(title=f"Where {a} and {b} diverge on parallel prompts (n={int(compare['n_pairs'].iloc[0])})",
                      xaxis_title=f"contribution in {a} − in {b} (refusal logit difference)", yaxis_title="component")
    return fig


def recoverability_curves(rec: pd.DataFrame, *, metric: str = "balanced_accuracy") -> go.Figure:
    """Held-out accuracy against examples per class, per method and language (``recoverability.recoverability``)."""
    mean = rec.groupby(["language", "method", "budget"], sort=False)[metric].agg(["mean", "std"]).reset_index()
    fig = px.line(mean, x="budget", y="mean", error_y="std", color="method", facet_col="language", markers=True,
                  log_x=True, category_orders={"method": ["direction", "gate", "target_probe", "random_direction",
                                                           "permuted_probe"]})
    fig.for_each_annotation(lambda a: a.update(text=a.text.replace("language=", "")))
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey")
    label = {"balanced_accuracy": "balanced accuracy", "auroc": "AUROC"}.get(metric, metric)
    fig.update_layout(title=f"Few-shot recoverability: held-out {label} vs target examples per class",
                      yaxis_title=f"{label} (mean ± sd over seeds)", yaxis_range=[0.3, 1.02], legend_title="method")
    fig.update_xaxes(title_text="examples per class")
    return fig


# ---------------------------------------------------------------- direction selection and interventional transfer

__all__ += ["selection_scores", "transfer_intervention_heatmap"]


def selection_scores(table: pd.DataFrame) -> go.Figure:
    """Bypass, induce and KL scores of every candidate by layer (``selection.select_direction(...).table``).

    One line per position; filtered candidates are hollow grey crosses (hover shows why),
    the chosen one a star. Dashed lines: the unhooked scores and the default filters.
    """
    from plotly.subplots import make_subplots

    panels = [("bypass_score", "refusal after ablation (harmful)", "baseline_harmful_score"),
              ("induce_score", "refusal after addition (harmless)", "baseline_harmless_score"),
              ("kl", "KL after ablation (harmless)", None)]
    fig = make_subplots(rows=1, cols=3, subplot_titles=[title for _, title, _ in panels])
    palette = px.colors.qualitative.Plotly
    for col, (measure, _, baseline) in enumerate(panels, start=1):
        for i, (position, part) in enumerate(table.sort_values("layer").groupby("position", sort=False)):
            colour = palette[i % len(palette)]
            fig.add_trace(go.Scatter(x=part["layer"], y=part[measure], mode="lines", line_color=colour,
                                     name=f"position {position}", legendgroup=str(position),
                                     showlegend=col == 1), row=1, col=col)
            kept, dropped = part[~part["filtered"]], part[part["filtered"]]
            fig.add_trace(go.Scatter(x=kept["layer"], y=kept[measure], mode="markers", marker_color=colour,
                                     legendgroup=str(position), showlegend=False, hoverinfo="x+y"), row=1, col=col)
            fig.add_trace(go.Scatter(x=dropped["layer"], y=dropped[measure], mode="markers", text=dropped["why"],
                                     marker=dict(symbol="x-open", color="grey", size=8), name="filtered",
                                     legendgroup="filtered", showlegend=col == 1 and i == 0), row=1, col=col)
        if baseline is not None and baseline in table:
            fig.add_hline(y=float(table[baseline].iloc[0]), line_dash="dash", line_color="black", row=1, col=col,
                          annotation_text="no intervention")
        best = table[table["chosen"]] if "chosen" in table else table.iloc[:0]
        fig.add_trace(go.Scatter(x=best["layer"], y=best[measure], mode="markers", name="chosen",
                                 marker=dict(symbol="star", size=16, color="gold", line=dict(color="black", width=1)),
                                 legendgroup="chosen", showlegend=col == 1), row=1, col=col)
    fig.add_hline(y=0, line_dash="dot", line_color="grey", row=1, col=2, annotation_text="induce filter")
    fig.add_hline(y=0.1, line_dash="dot", line_color="grey", row=1, col=3, annotation_text="KL filter")
    fig.update_xaxes(title_text="layer of the candidate (residual stream after block)")
    fig.update_yaxes(title_text="refusal log-odds", row=1, col=1)
    fig.update_yaxes(title_text="refusal log-odds", row=1, col=2)
    fig.update_yaxes(title_text="KL(base ‖ ablated)", row=1, col=3)
    fig.update_layout(title="Refusal-direction candidates (Arditi et al. 2024 selection)", legend_title="candidate",
                      width=1300, height=450)
    return fig


def transfer_intervention_heatmap(table: pd.DataFrame) -> go.Figure:
    """Source × target refusal after ablating / adding the source's direction (``transfer.interventional_transfer``).

    Left: harmful prompts refused after ablation, each cell annotated with the drop from
    the target's unhooked rate. Right: harmless prompts refused after addition, annotated
    with the unhooked rate. Rows: whose direction; columns: whose prompts.
    """
    from plotly.subplots import make_subplots

    sources = list(dict.fromkeys(table["source"]))
    targets = list(dict.fromkeys(table["target"]))

    def grid(column: str) -> pd.DataFrame:
        return table.pivot(index="source", columns="target", values=column).loc[sources, targets]

    ablated, drop = grid("ablated_harmful_refusal"), grid("drop")
    added, base = grid("added_harmless_refusal"), grid("baseline_harmless_refusal")
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=["harmful refused after ablation (%); drop from baseline in brackets",
                                        "harmless refused after addition (%); baseline in brackets"])
    for col, (values, note) in enumerate(((ablated, drop), (added, base)), start=1):
        text = [[f"{v:.0f} ({n:+.0f})" if col == 1 else f"{v:.0f} ({n:.0f})" for v, n in zip(vr, nr)]
                for vr, nr in zip(values.to_numpy(), note.to_numpy())]
        fig.add_trace(go.Heatmap(z=values.to_numpy(), x=targets, y=sources, text=text, texttemplate="%{text}",
                                 zmin=0, zmax=100, coloraxis="coloraxis"), row=1, col=col)
    fig.update_xaxes(title_text="target language (prompts)")
    fig.update_yaxes(title_text="source language (direction)", autorange="reversed")
    judge = table["judge"].iloc[0] if "judge" in table else "?"
    fig.update_layout(title=f"Interventional cross-lingual transfer of refusal directions ({judge} judge)",
                      coloraxis=dict(colorscale="Viridis", cmin=0, cmax=100, colorbar_title="refused (%)"),
                      width=1200, height=500)
    return fig


__all__ += ["form_controls"]

_CONTROL_COLOURS = {"length": "#bbbbbb", "form_probe": "#888888", "direction": "#6baed6", "residualised": "#08519c"}


def form_controls(table: pd.DataFrame) -> go.Figure:
    """AUROC per language of form alone and of the direction raw and with form partialled out (``form.form_controls``)."""
    frame = table.assign(plus=table["auroc_high"] - table["auroc"], minus=table["auroc"] - table["auroc_low"])
    fig = px.bar(frame, x="language", y="auroc", color="control", barmode="group", error_y="plus",
                 error_y_minus="minus", color_discrete_map=_CONTROL_COLOURS,
                 category_orders={"control": list(_CONTROL_COLOURS)})
    fig.add_hline(y=0.5, line_dash="dot", line_color="grey")
    fig.update_layout(title="Harm or form: the direction's AUROC beside what form alone gives",
                      yaxis_title="AUROC (95% interval)", xaxis_title="language", yaxis_range=[0, 1.02],
                      legend_title="score")
    return fig
