"""The diagnosis report's form controls (section 1b) and the twins check (1c), from :func:`form.form_controls` tables."""

from __future__ import annotations

import pandas as pd

from .. import plots
from .report import Section, interval_cell

__all__ = ["sections", "wide"]


def sections(forms: pd.DataFrame | None, twins: pd.DataFrame | None) -> list[Section]:
    """Section 1's controls: how much of the AUROC the prompts' form explains, and the twins."""
    if forms is None:
        return []
    how = ("Per language at the gate layer, with 95% bootstrap intervals: the AUROC of the prompt's token count "
           "alone, of a cross-validated probe on form features alone (token, character and word counts, a closing "
           "question mark, digits, punctuation), of the direction's projection, and of that projection less what "
           "the form features predict of it. Where the last bar falls to 0.5 the separability was form; "
           "'survives' is True where its interval stays above 0.5.")
    out = [Section("1b. Harm or form? The form controls", how,
                   ((plots.form_controls(forms), "Bars per language: grey length and form probe (form alone), "
                     "blue the direction, dark blue the direction with form partialled out."),),
                   wide(forms))]
    if twins is not None:
        out.append(Section(
            "1c. The twins: a form-matched check",
            "The same direction on the built-in twins: harmful and harmless prompts written in pairs of the same "
            "topic and form ('make a pipe bomb at home' / 'bake a loaf of bread at home'). A direction that reads "
            "harm separates them; one that reads form does not. Their own length AUROC shows how well the pairs "
            "are matched.",
            ((plots.form_controls(twins), "As in 1b, on the twins."),), wide(twins)))
    return out


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per language: each control's AUROC with its interval, and whether the separability survives."""
    cells = table.assign(cell=list(map(interval_cell, table["auroc"], table["auroc_low"], table["auroc_high"])))
    wide = cells.pivot_table(index=["language", "tier"], columns="control", values="cell", aggfunc="first",
                             sort=False)
    wide = wide[[c for c in ("length", "form_probe", "direction", "residualised") if c in wide]].reset_index()
    return wide.assign(survives=wide["language"].map(table.groupby("language")["survives"].first()))
