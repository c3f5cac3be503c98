"""Does the model act through the direction? Selection and interventional transfer, run for the reports.

Separability says the harmfulness direction can be *read* in a language; these two checks
say whether the model *acts* through it:

- :func:`selection.select_direction` (Arditi et al.): every layer's candidate direction
  scored by how much its ablation stops refusal, its addition induces it, and what the
  ablation costs on harmless prompts; the paper's filters pick one or none.
- :func:`transfer.interventional_transfer` (PolyRefuse): language A's own direction
  ablated on B's harmful prompts and added to B's harmless ones.

:func:`check` runs both on a small, seeded set of prompts so the ``diagnose`` and
``steer`` reports carry them in minutes; :func:`sections` writes their report sections.
Selection prompts are held out from the candidates: the candidates are fitted on the
source prompts of every *other* source id, as refusal_direction keeps its train and
validation splits apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from . import plots
from .activations import ActivationSet
from .data import PromptSet, _sample_sources
from .directions import per_language
from .report import Section
from .selection import NoSurvivorError, candidate_directions, select_direction
from .transfer import LogitJudge, interventional_transfer

__all__ = ["CausalCheck", "check", "sections"]


@dataclass
class CausalCheck:
    """What :func:`check` found (tables as their producers return them)."""

    selection: pd.DataFrame  # one row per candidate, with ``filtered``/``why``/``chosen``
    chosen_layer: int | None  # None: no candidate survived the filters
    selection_note: str
    transfer: pd.DataFrame
    transfer_layer: int
    n_select: int
    timing: dict[str, float]
    transfer_note: str = ""  # languages without a direction of their own, left out of the transfer rows


def check(model, acts: ActivationSet, prompts: PromptSet, source: list[str], refusal_tokens, *, reference: str,
          gate_layer: int, position: str = "t_post_inst", n_select: int = 8, seed: int = 0,
          progress: bool = True) -> CausalCheck:
    """Direction selection on ``reference`` prompts, then the transfer matrix on ``prompts``.

    ``acts`` needs every layer at ``position`` for the source languages and every language
    of ``prompts`` (for their own directions); ``prompts`` are the prompts the transfer
    matrix is measured on (each language harmful and harmless); its rows are the
    directions of ``reference`` and of every language of ``prompts``. ``n_select`` source ids
    per class of ``reference`` (at most half of them) are the selection's validation
    prompts, and no translation of them enters a candidate. The transfer adds each language's direction at the chosen
    layer, or at ``gate_layer`` when no candidate survives.
    """
    timing = {}
    t = time.perf_counter()
    ref = acts.where(language=reference).prompts
    have = int(ref.frame.groupby("subset").size().min())
    if have < 2:
        raise ValueError(f"selection needs at least 2 {reference!r} prompts per class (has {have}): one to score "
                         "on and one to fit candidates on")
    n_select = min(n_select, have // 2)  # the rest, and their translations, fit the candidates
    held = _sample_sources(ref.frame, n_select, seed, ref.origin)
    val = PromptSet(held, ref.origin + f" ({n_select} per class for selection)")
    fit = acts.where(language=source)
    fit = fit.where(id=fit.prompts.frame[~fit.prompts.frame["source_id"].isin(held["source_id"])]["id"].tolist())
    candidates = {key: r for key, r in candidate_directions(fit).items() if key[1] == position}
    try:
        found = select_direction(model, val.where(subset="harmful"), val.where(subset="harmless"), candidates,
                                 refusal_tokens, site=acts.hook, progress=progress)
        table, chosen, note = found.table, found.layer, f"layer {found.layer} chosen"
    except NoSurvivorError as err:
        table, chosen, note = err.table, None, str(err)
    timing["selection_s"] = time.perf_counter() - t

    t = time.perf_counter()
    layer = gate_layer if chosen is None else chosen
    li, pi = acts.layer_index(layer), acts.position_index(position)
    sources = list(dict.fromkeys([reference, *prompts.languages]))
    own = {lang: v[li, pi] for lang, v in per_language(acts.where(language=sources)).items()}
    largest = max(float(v.norm()) for v in own.values())
    silent = [lang for lang, v in own.items() if not float(v.norm()) > 1e-6 * largest]  # e.g. a lesioned script
    own = {lang: v for lang, v in own.items() if lang not in silent}
    why = (f"No row for {', '.join(silent)}: harmful and harmless prompts have the same mean activation there, so "
           "there is no direction of its own to move anything with." if silent else "")
    transfer = interventional_transfer(model, prompts, own, layer, measure=LogitJudge(refusal_tokens),
                                       progress=progress)
    timing["transfer_s"] = time.perf_counter() - t
    return CausalCheck(table, chosen, note, transfer, layer, n_select, timing, transfer_note=why)


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
