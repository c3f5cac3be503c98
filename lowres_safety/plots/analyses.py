"""Figures of the paper's analyses (:mod:`lowres_safety.analyses`), each with a caption that says how to read it."""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from ..analyses.sweeps import peak_strengths, tier_means
from .colours import TIER_ORDER

__all__ = ["ablation_curves", "fewshot_curves", "ood_bars", "ood_category_heatmap", "rank_curves", "readout_curves",
           "strength_curves", "subspace_transfer_heatmap", "utility_by_category"]

_TIER_COLOUR = {"high": "#2171b5", "mid": "#f16913", "low": "#cb181d"}


def _captioned(fig: go.Figure, caption: str) -> go.Figure:
    """The caption under the plot, inside the figure, so it travels with it (notebook, report, export)."""
    fig.add_annotation(text=caption, xref="paper", yref="paper", x=0, y=-0.22, showarrow=False, align="left",
                       xanchor="left", yanchor="top", font={"size": 11})
    return fig.update_layout(margin={"b": 130})


def _rows(table: pd.DataFrame, language: str, what: str) -> pd.DataFrame:
    frame = table[table["language"] == language]
    if frame.empty:
        raise ValueError(f"no {what} rows for {language!r}; the table has {sorted(set(table['language']))}")
    return frame


def fewshot_curves(table: pd.DataFrame, *, metric: str = "auc", language: str = "__macro_low__") -> go.Figure:
    """Few-shot recoverability (:func:`analyses.recoverability`): metric by examples per class, one line per readout."""
    frame = _rows(table, language, "recoverability")
    mean = (frame.groupby(["readout", "control", "budget"])[metric].agg(["mean", "sem"]).reset_index()
            .rename(columns={"mean": metric, "sem": "spread"}))
    fig = px.line(mean, x="budget", y=metric, color="readout", line_dash="control", error_y="spread", markers=True,
                  log_x=True)
    fig.update_layout(title=f"How many target examples does a readout need? ({language}, {metric})",
                      xaxis_title="examples per class (log scale)", yaxis_title=f"test {metric} (mean over seeds)")
    return _captioned(fig, "The HRL direction's line is flat (fixed vector): where it sits high from the start while "
                           "the local readouts climb with examples, the high-resource representation already "
                           "serves the language.<br>The permutation and random-direction controls should stay near "
                           "0.5 (AUC); bars are the standard error over seeds.")


def rank_curves(table: pd.DataFrame, *, metric: str = "f1", language: str = "__macro_low__") -> go.Figure:
    """The gate by subspace rank (:func:`analyses.rank_sweep`): one line per budget."""
    frame = _rows(table, language, "rank sweep")
    mean = frame.groupby(["budget", "rank"])[metric].agg(["mean", "sem"]).reset_index()
    mean["budget"] = mean["budget"].astype(str)
    fig = px.line(mean, x="rank", y="mean", color="budget", error_y="sem", markers=True,
                  labels={"mean": metric, "budget": "examples per class"})
    fig.update_layout(title=f"The gate by subspace rank ({language}, test {metric})", xaxis_title="rank",
                      yaxis_title=f"test {metric} (mean over seeds)")
    return _captioned(fig, "A line that rises with rank means directions beyond the first carry what the target "
                           "language needs; a flat line, that one shared direction is enough.<br>Budget 0 is the "
                           "source gate as fitted; each k refits on the source plus k + k target examples.")


def subspace_transfer_heatmap(table: pd.DataFrame, *, metric: str = "f1", split: str = "test",
                              condition: str = "hrl_plus_lrl_full") -> go.Figure:
    """Zero-shot gates with one added language (:func:`analyses.subspace_transfer`): added language × target."""
    frame = table[(table["condition"] == condition) & (table["split"] == split)
                  & ~table["language"].str.startswith("__")]
    if frame.empty:
        raise ValueError(f"no {condition!r} rows on {split!r}")
    base = table[(table["condition"] == "hrl_to_target") & (table["split"] == split)].set_index("language")[metric]
    grid = frame.pivot_table(index="added", columns="language", values=metric)
    gain = grid - base.reindex(grid.columns).to_numpy()[None, :]
    fig = px.imshow(gain, color_continuous_scale="RdBu", color_continuous_midpoint=0.0, text_auto=".2f",
                    labels={"color": f"{metric} gain", "x": "target language", "y": "added source language"})
    fig.update_layout(title=f"What one added language brings to the high-resource gate ({split} {metric} minus "
                            "the high-resource gate's)")
    return _captioned(fig, "Each cell: a target's score with the row's language added to the high-resource sources, "
                           "minus its score with the high-resource sources alone.<br>Blue: the added language's "
                           "direction carries something the target needs that high-resource languages lack.")


def strength_curves(table: pd.DataFrame) -> go.Figure:
    """Harmful refusal by steering strength (:func:`analyses.strength_sweep`): the tier means, peaks marked."""
    means = tier_means(table)
    fig = px.line(means, x="strength", y="refusal", color="tier", markers=True, color_discrete_map=_TIER_COLOUR,
                  category_orders={"tier": TIER_ORDER})
    peaks = peak_strengths(table)
    fig.add_trace(go.Scatter(x=peaks["peak_strength"], y=peaks["refusal"], mode="markers", name="peak",
                             marker={"symbol": "x", "size": 12, "color": "black"}))
    fig.update_layout(title="Harmful refusal as the steering strength grows (mean over each tier's languages)",
                      xaxis_title="λ (added λ·v̂ at the steering layer)", yaxis_title="harmful prompts refused (%)")
    return _captioned(fig, "A tier whose curve rises as steeply as the high-resource one needs only a push along "
                           "the same direction (an action failure);<br>one that stays flat does not respond to it. "
                           "× marks each tier's peak λ (the smallest on ties).")


def ablation_curves(table: pd.DataFrame) -> go.Figure:
    """Harmful refusal with the released directional ablation at each layer (:func:`analyses.ablation_sweep`)."""
    base = table[table["layer"] == -1]["refusal"].mean()
    swept = table[table["layer"] >= 0].groupby(["source", "layer"])["refusal"].mean().reset_index()
    fig = px.line(swept, x="layer", y="refusal", color="source", markers=True)
    fig.add_hline(y=base, line_dash="dot", line_color="grey", annotation_text="no ablation")
    fig.update_layout(title="Harmful refusal with the direction ablated (mean over languages)",
                      xaxis_title="layer (its block output ablated, or its direction)",
                      yaxis_title="harmful prompts refused (%)")
    return _captioned(fig, "Where a line drops lowest is where the model reads the direction it refuses through;<br>"
                           "two sources dropping at the same layers means they are one direction there.")


def readout_curves(table: pd.DataFrame, *, metric: str = "balanced_accuracy", language: str = "__macro__",
                   rank: int | None = None, group: str = "hrl", split: str = "test") -> go.Figure:
    """The readout comparison (:func:`analyses.compare_readouts`): metric by examples per class, one line per readout,
    the subspace readouts at one ``rank`` (default: the largest the gate has), global thresholds."""
    frame = _rows(table, language, "readout comparison")
    frame = frame[(frame["split"] == split) & (frame["threshold_scope"] == "global")
                  & frame["group"].isin([group, "target"])]
    rank = int(frame.loc[frame["method"] == "subspace_logistic", "rank"].max()) if rank is None else rank
    if "memory_rank" in frame:  # a widened gate: its base rank is the rank compared, its memory rank in its name
        memory = frame["memory_rank"].notna()
        frame = frame.assign(rank=frame["rank"].mask(memory, frame["base_rank"]), method=frame["method"].mask(
            memory, frame["method"] + " m=" + frame["memory_rank"].astype("Int64").astype(str)))
    frame = frame[frame["rank"].isna() | (frame["rank"] == rank)]
    mean = frame.groupby(["method", "budget"])[metric].agg(["mean", "sem"]).reset_index()
    mean["budget"] = mean["budget"].astype(str)
    fig = px.line(mean, x="budget", y="mean", color="method", error_y="sem", markers=True,
                  labels={"mean": metric, "budget": "examples per class"},
                  category_orders={"budget": [str(b) for b in sorted(frame["budget"].unique())]})
    fig.update_layout(title=f"Which readout recovers the target languages? ({language}, {split} {metric}, rank {rank}, "
                            f"sources {group})", xaxis_title="examples per class (0: the source fit alone)",
                      yaxis_title=f"{split} {metric} (mean over seeds)")
    return _captioned(fig, "subspace_logistic is the gate; pca_ and random_subspace_logistic are subspaces of the same "
                           "rank not built from the harm directions.<br>If the gate's line sits above theirs, the "
                           "high-resource subspace is special; if they overlap, any subspace of that rank would do.")


def ood_bars(table: pd.DataFrame, *, metric: str = "balanced_accuracy") -> go.Figure:
    """The gate on another data set (:func:`analyses.ood_transfer`): per language, each gate zero- and one-shot."""
    frame = table[table["evaluation_group"] == "language"].assign(
        gate=lambda f: f["gate"] + " " + f["shot"].astype(str) + "-shot")
    mean = frame.groupby(["language", "gate"], sort=False)[metric].agg(["mean", "sem"]).reset_index()
    fig = px.bar(mean, x="language", y="mean", color="gate", error_y="sem", barmode="group",
                 labels={"mean": metric})
    fig.update_layout(title=f"The source gate on another data set ({metric})", xaxis_title="language",
                      yaxis_title=f"{metric} (mean over seeds)")
    return _captioned(fig, "0-shot: the gate as fitted on the source languages; 1-shot: re-set (v_hrl) or refitted "
                           "(hrl_subspace) with one example per class.<br>0.5 is chance; bars are the standard error "
                           "over seeds.")


def ood_category_heatmap(table: pd.DataFrame, *, metric: str = "balanced_accuracy", gate: str = "hrl_subspace",
                         shot: int = 1) -> go.Figure:
    """The gate on another data set by harm category (the released IndoSafety heatmap): category × language."""
    frame = table[(table["evaluation_group"] == "category") & (table["gate"] == gate) & (table["shot"] == shot)]
    if frame.empty:
        raise ValueError("no category rows: the data set's prompts carry no category")
    grid = frame.pivot_table(index="category", columns="language", values=metric)
    fig = px.imshow(grid, color_continuous_scale="RdBu", zmin=0.0, zmax=1.0, text_auto=".2f",
                    labels={"color": metric, "x": "language", "y": "category"})
    fig.update_layout(title=f"The gate by harm category ({gate}, {shot}-shot, {metric}, mean over seeds)")
    return _captioned(fig, "Each cell scores a category's harmful prompts against all of the language's harmless "
                           "ones at the gate's threshold.<br>A red row is a kind of harm the source gate misses in "
                           "every language; a red column, a language it misses.")


def utility_by_category(table: pd.DataFrame, *, metric: str = "accuracy") -> go.Figure:
    """Utility as released (:func:`utility.mc_summary` rows with ``method``): metric per subject category."""
    frame = table.assign(method=table["method"] + (" k=" + table["k"].astype(str) if "k" in table else ""))
    mean = frame.groupby(["subject_category", "method"], sort=False)[metric].mean().reset_index()
    fig = px.bar(mean, x="subject_category", y=metric, color="method", barmode="group")
    fig.update_layout(title=f"Utility by subject category ({metric}, mean over languages)",
                      xaxis_title="subject category (ALL: every item)", yaxis_title=metric)
    return _captioned(fig, "A method whose bars drop below no intervention's costs utility there;<br>the gate should "
                           "match no intervention on harmless questions, since it routes them to ablation.")
