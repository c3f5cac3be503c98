"""The report sections of the causal check (:mod:`lowres_safety.causal`): selection, then transfer."""

from __future__ import annotations

from .. import plots
from ..causal import CausalCheck
from .report import Section

__all__ = ["sections"]


def sections(c: CausalCheck, first: int | None = None) -> list[Section]:
    """Two report sections (numbered ``first`` and ``first + 1`` when given): selection, then transfer."""
    lead, lead2 = (f"{first}. ", f"{first + 1}. ") if first is not None else ("", "")
    kept = c.selection[~c.selection["filtered"]]
    outcome = (f"Layer {c.chosen_layer} is chosen ({len(kept)} of {len(c.selection)} candidates pass the filters)."
               if c.chosen_layer is not None else f"No candidate passes the filters: {c.selection_note}")
    transfer_table = c.transfer[["source", "target", "baseline_harmful_refusal", "ablated_harmful_refusal", "drop",
                                 "baseline_harmless_refusal", "added_harmless_refusal"]]
    where = "the chosen layer" if c.chosen_layer is not None else "the gate layer (no candidate was chosen)"
    return [
        Section(
            f"{lead}Which direction does the model act through? (Arditi et al.'s selection)",
            f"Each layer's difference of means (source languages, prompts disjoint from these) scored on "
            f"{c.n_select} harmful and {c.n_select} harmless reference-language prompts: refusal log-odds on "
            f"harmful prompts with it ablated at every layer (bypass), on harmless prompts with it added at its "
            f"layer (induce), and the KL of the ablation on harmless prompts; refusal_direction's filters drop "
            f"the last 20% of layers, KL > 0.1 and induce < 0. {outcome} Took {c.timing['selection_s']:.0f} s.",
            ((plots.selection_scores(c.selection),
              "Left: low is good (ablating it stops refusal); middle: high is good (adding it makes harmless "
              "prompts refused); right: low is good. Grey crosses were filtered out (hover for why); the star is "
              "the choice."),),
            c.selection.round(3),
        ),
        Section(
            f"{lead2}Does one language's direction move another's refusal? (PolyRefuse's transfer matrix)",
            f"Each language's own direction at layer {c.transfer_layer} ({where}), ablated at every layer on "
            f"every language's harmful prompts and added (raw, coefficient 1) on its harmless ones; refusal by "
            f"the first-token logit judge. Took {c.timing['transfer_s']:.0f} s. {c.transfer_note}".strip(),
            ((plots.transfer_intervention_heatmap(c.transfer),
              "Rows: whose direction; columns: whose prompts. A shared direction moves every column from every "
              "row; a row that moves only its own column is a language-specific direction."),),
            transfer_table.round(1),
        ),
    ]
