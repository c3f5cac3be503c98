"""Colours shared by every figure: one colour family per resource tier, shades within it."""

from __future__ import annotations

import pandas as pd
import plotly.express as px

__all__ = ["TIER_COLOURS", "TIER_ORDER", "language_colours"]

#: One colour family per resource tier; languages within a tier get shades of it.
TIER_COLOURS = {
    "high": px.colors.sequential.Blues[3:],
    "mid": px.colors.sequential.Oranges[3:],
    "low": px.colors.sequential.Reds[3:],
    "unlisted": px.colors.sequential.Greys[3:],
}
TIER_ORDER = ["high", "mid", "low", "unlisted"]


def language_colours(frame: pd.DataFrame) -> dict[str, str]:
    """Colour for each language, shaded within its tier's colour family."""
    pairs = frame[["language", "tier"]].drop_duplicates()
    colours = {}
    for tier, group in pairs.groupby("tier", sort=False):
        palette = TIER_COLOURS.get(tier, TIER_COLOURS["unlisted"])
        for i, lang in enumerate(group["language"]):
            colours[lang] = palette[(len(palette) - 1 - i) % len(palette)]
    return colours
