"""Does the model act through the direction? Selection and interventional transfer, run for the reports.

Separability says the harmfulness direction can be *read* in a language; these two checks
say whether the model *acts* through it:

- :func:`selection.select_direction` (Arditi et al.): every layer's candidate direction
  scored by how much its ablation stops refusal, its addition induces it, and what the
  ablation costs on harmless prompts; the paper's filters pick one or none.
- :func:`transfer.interventional_transfer` (PolyRefuse): language A's own direction
  ablated on B's harmful prompts and added to B's harmless ones.

:func:`check` runs both on a small, seeded set of prompts so the ``diagnose`` and
``steer`` reports carry them in minutes; their report sections are
:func:`lowres_safety.pipelines.causal_report.sections`.
Selection prompts are held out from the candidates: the candidates are fitted on the
source prompts of every *other* source id, as refusal_direction keeps its train and
validation splits apart.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pandas as pd

from .activations import ActivationSet
from .data import PromptSet, sample_sources
from .directions import per_language
from .selection import NoSurvivorError, candidate_directions, select_direction
from .transfer import LogitJudge, interventional_transfer

__all__ = ["CausalCheck", "check"]


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
    held = sample_sources(ref.frame, n_select, seed, ref.origin)
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
