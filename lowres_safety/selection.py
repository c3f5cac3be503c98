"""Choosing the refusal direction among candidates, as Arditi et al. (2024) do.

Every candidate is a raw difference-of-means vector r at one (layer, position). Three
numbers are measured for it on validation prompts, exactly as andyrdt/refusal_direction's
``pipeline/submodules/select_direction.py`` does:

- ``bypass_score``: mean refusal log-odds on the *harmful* prompts with r̂ ablated at
  every layer (block input, attention output and MLP output, every position:
  :func:`hooks.ablate` over ``range(n_layers)``). Low = ablating it stops refusal.
- ``induce_score``: mean refusal log-odds on the *harmless* prompts with the raw r
  (coefficient 1, i.e. α = ‖r‖ along r̂) added at the candidate's own layer, every
  position. High = adding it makes the model refuse.
- ``kl``: mean KL(p_base ‖ p_ablated) of the first response token on the *harmless*
  prompts under the same all-layer ablation. Low = ablation leaves harmless use alone.

Refusal log-odds are log P − log(1 − P), P the summed probability of the refusal tokens
at the first response position (:func:`evaluation.refusal_log_odds`; refusal_direction
adds ε = 1e-8 inside both logs, which only matters where P is within 1e-8 of 0 or 1).

**Which "layer".** Our activations are ``blocks.{l}.hook_resid_post``, the output of
block l, which is the *input* of block l + 1: refusal_direction's ``resid_pre`` of layer
l + 1. The table keeps our index in ``layer`` (the one :class:`ActivationSet` and
:func:`hooks.add` use; addition goes to ``blocks.{layer}.hook_resid_post``, the same
tensor as their pre-hook on block l + 1) and refusal_direction's index in
``resid_pre_layer`` = layer + 1. Their pruning rule is applied to ``resid_pre_layer``, so
exactly the same residual-stream tensors are pruned: in a 30-layer model our layers
23–29 (their 24–29). Candidates read at ``hook_resid_pre`` (``site="hook_resid_pre"``)
have ``resid_pre_layer`` = layer.

Filters (refusal_direction's ``filter_fn``): any score NaN; ``resid_pre_layer >=
int(n_layers * (1 - prune_layer_fraction))``; ``kl > kl_threshold``; ``induce_score <
induce_threshold``. Among the survivors the lowest bypass score wins (ties: the first in
table order). Scoring (:func:`score_candidates`) is separate from choosing
(:func:`filter_candidates`, :func:`choose`), so the rule can be checked on a hand-made table.

Cost: per candidate one ablated pass over harmful + harmless prompts together (giving
bypass and KL) and one pass over harmless prompts with the addition; the unhooked pass
is done once. Both sweeps run through :func:`grid.next_token_grid`: the addition pass
starts at the block after the candidate's layer from residuals cached once per batch
(TransformerLens 4's ``start_at_layer`` would still run blocks 0..k−1), the ablation
pass after the embedding, and logits are computed at the last position only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from . import hooks as H
from .activations import ActivationSet
from .data import PromptSet
from .directions import diff_of_means
from .grid import next_token_grid, token_summary
from .judges import refusal_log_odds

__all__ = ["NoSurvivorError", "Selection", "candidate_directions", "choose", "filter_candidates", "score_candidates",
           "select_direction"]

#: How many blocks later refusal_direction's ``resid_pre`` index is, per site the candidate was read at.
RESID_PRE_OFFSET = {"hook_resid_pre": 0, "hook_resid_post": 1}
_SCORES = ("bypass_score", "induce_score", "kl")


class NoSurvivorError(ValueError):
    """Every candidate was filtered out; ``table`` keeps all scores, so thresholds can be relaxed
    with :func:`filter_candidates` and :func:`choose` without scoring again."""

    def __init__(self, message: str, table: pd.DataFrame):
        super().__init__(message)
        self.table = table


@dataclass(frozen=True)
class Selection:
    """The chosen direction and the table it was chosen from (one row per candidate)."""

    table: pd.DataFrame
    layer: int
    position: str
    direction: Float[Tensor, " d_model"]  # raw, unnormalised
    site: str = "hook_resid_post"

    @property
    def unit(self) -> Float[Tensor, " d_model"]:
        return self.direction / self.direction.norm()

    @property
    def chosen(self) -> pd.Series:
        """The chosen candidate's row of :attr:`table`."""
        return self.table[self.table["chosen"]].iloc[0]


def candidate_directions(acts: ActivationSet) -> dict[tuple[int, str], Float[Tensor, " d_model"]]:
    """mean(harmful) − mean(harmless) at every extracted (layer, position), unnormalised.

    Keys use the set's own layer indices (``acts.hook``, normally ``hook_resid_post``:
    block l's output = refusal_direction's resid_pre of l + 1); pass ``site=acts.hook``
    to :func:`select_direction` when you extracted elsewhere.
    """
    if acts.hook not in RESID_PRE_OFFSET:
        raise ValueError(f"candidates must be read from one of {sorted(RESID_PRE_OFFSET)}, not {acts.hook!r}")
    diff = diff_of_means(acts)
    return {(layer, pos): diff[li, pi].clone() for li, layer in enumerate(acts.layers)
            for pi, pos in enumerate(acts.positions)}


# ---------------------------------------------------------------- scoring


def _only(prompts: PromptSet, subset: str, name: str) -> PromptSet:
    if len(prompts) == 0:
        raise ValueError(f"{name} is empty; it needs {subset} validation prompts")
    other = int((prompts.frame["subset"] != subset).sum())
    if other:
        raise ValueError(f"{name} holds {other} prompt(s) that are not {subset}; "
                         f"pass prompts.where(subset={subset!r})")
    return prompts


def _check_candidates(candidates: Mapping, n_layers: int, d_model: int) -> list[tuple[int, str, Tensor]]:
    if not candidates:
        raise ValueError("no candidate directions given; build them with candidate_directions(acts)")
    out = []
    for key, r in candidates.items():
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], (int, np.integer))):
            raise ValueError(f"candidate keys are (layer, position) pairs, got {key!r}")
        layer, pos = int(key[0]), str(key[1])
        if not 0 <= layer < n_layers:
            raise ValueError(f"candidate {key!r}: layer {layer} outside this model's 0..{n_layers - 1}")
        r = torch.as_tensor(r).detach().float().cpu()
        if r.shape != (d_model,):
            raise ValueError(f"candidate {key!r} has shape {tuple(r.shape)}; the model needs [{d_model}]")
        if not (torch.isfinite(r).all() and r.norm() > 0):
            raise ValueError(f"candidate {key!r} is zero or not finite")
        out.append((layer, pos, r))
    return out


def score_candidates(
    model,
    harmful_val: PromptSet,
    harmless_val: PromptSet,
    candidates: Mapping[tuple[int, str], Tensor],
    refusal_tokens,
    *,
    site: str = "hook_resid_post",
    batch_size: int = 16,
    progress: bool = True,
) -> pd.DataFrame:
    """Bypass, induce and KL scores of every candidate (see the module docstring); no filtering.

    ``refusal_tokens``: token ids, or a dict language → ids. Columns: layer, position,
    resid_pre_layer, norm, bypass_score, induce_score, kl, baseline_harmful_score,
    baseline_harmless_score (the unhooked mean log-odds, for reference).
    """
    if site not in RESID_PRE_OFFSET:
        raise ValueError(f"site must be one of {sorted(RESID_PRE_OFFSET)}, got {site!r}")
    harmful = _only(harmful_val, "harmful", "harmful_val")
    harmless = _only(harmless_val, "harmless", "harmless_val")
    cands = _check_candidates(candidates, model.cfg.n_layers, model.cfg.d_model)
    both, n_harm = PromptSet.concat([harmful, harmless]), len(harmful)
    every_layer = range(model.cfg.n_layers)
    reduce, columns = token_summary(refusal_tokens)  # refusal-token log-probs and KL, per prompt

    def sweep(prompts, points):
        return next_token_grid(model, prompts, points, position_wise=True, reduce=reduce, batch_size=batch_size,
                               progress=progress)

    ablated = sweep(both, [[]] + [H.ablate(r, every_layer) for _, _, r in cands])  # point 0: unhooked
    added = sweep(harmless, [H.add(r, float(r.norm()), layer, site=site, scope="all") for layer, _, r in cands])

    def score(point, prompts):
        return float(refusal_log_odds(point[:, :-1], prompts, columns).mean())

    rows = [{"layer": layer, "position": pos, "resid_pre_layer": layer + RESID_PRE_OFFSET[site],
             "norm": float(r.norm()), "bypass_score": score(ablated[i + 1, :n_harm], harmful),
             "induce_score": score(added[i], harmless), "kl": float(ablated[i + 1, n_harm:, -1].mean())}
            for i, (layer, pos, r) in enumerate(cands)]
    table = pd.DataFrame(rows)
    table["baseline_harmful_score"] = score(ablated[0, :n_harm], harmful)
    table["baseline_harmless_score"] = score(ablated[0, n_harm:], harmless)
    return table


# ---------------------------------------------------------------- choosing

Rule = tuple[str, Callable[[pd.DataFrame], pd.Series]]


def _rules(n_layers: int, prune_layer_fraction, kl_threshold, induce_threshold) -> list[Rule]:
    """refusal_direction's filters as (reason, predicate) pairs; a ``None`` threshold drops its rule."""
    rules: list[Rule] = [("nan", lambda t: t[list(_SCORES)].isna().any(axis=1))]
    if prune_layer_fraction is not None:
        cut = int(n_layers * (1.0 - prune_layer_fraction))
        rules.append((f"last {prune_layer_fraction:.0%} of layers", lambda t: t["resid_pre_layer"] >= cut))
    if kl_threshold is not None:
        rules.append((f"kl > {kl_threshold:g}", lambda t: t["kl"] > kl_threshold))
    if induce_threshold is not None:
        rules.append((f"induce < {induce_threshold:g}", lambda t: t["induce_score"] < induce_threshold))
    return rules


def filter_candidates(scores: pd.DataFrame, n_layers: int, *, prune_layer_fraction: float | None = 0.2,
                      kl_threshold: float | None = 0.1, induce_threshold: float | None = 0.0) -> pd.DataFrame:
    """The score table with ``filtered`` (bool) and ``why`` (every reason that applies, "; "-joined)."""
    missing = {"layer", "position", "resid_pre_layer", *_SCORES} - set(scores.columns)
    if missing:
        raise ValueError(f"the score table lacks columns {sorted(missing)} (make it with score_candidates)")
    table = scores.copy()
    hits = {reason: rule(table).to_numpy(bool) for reason, rule in
            _rules(n_layers, prune_layer_fraction, kl_threshold, induce_threshold)}
    table["why"] = ["; ".join(reason for reason, hit in hits.items() if hit[i]) for i in range(len(table))]
    table["filtered"] = table["why"] != ""
    return table


def choose(table: pd.DataFrame) -> pd.DataFrame:
    """Mark the surviving candidate with the lowest bypass score (``chosen`` column).

    Raises :class:`NoSurvivorError` (a ValueError carrying the table) when every
    candidate was filtered, saying how many each filter caught.
    """
    survivors = table[~table["filtered"]]
    out = table.assign(chosen=False)
    if survivors.empty:
        counts = table["why"].str.split("; ").explode().value_counts()
        listed = ", ".join(f"{reason}: {n}" for reason, n in counts.items())
        raise NoSurvivorError(f"no candidate survives the filters ({len(table)} candidates; {listed}); relax "
                              "kl_threshold / induce_threshold / prune_layer_fraction (None disables one) or check "
                              "the refusal tokens; the error's .table has every score", out)
    out.loc[survivors["bypass_score"].idxmin(), "chosen"] = True
    return out


def select_direction(
    model,
    harmful_val: PromptSet,
    harmless_val: PromptSet,
    candidates: Mapping[tuple[int, str], Tensor],
    refusal_tokens,
    *,
    prune_layer_fraction: float | None = 0.2,
    kl_threshold: float | None = 0.1,
    induce_threshold: float | None = 0.0,
    site: str = "hook_resid_post",
    batch_size: int = 16,
    progress: bool = True,
) -> Selection:
    """Score every candidate, filter and choose as refusal_direction does (module docstring).

    ``candidates`` maps (layer, position) → raw direction ``[d_model]``, e.g. from
    :func:`candidate_directions`; ``site`` is where they were read. refusal_direction's
    pipeline first drops harmful validation prompts the model does not refuse (log-odds
    < 0) and harmless ones it does (``filter_val``); do that before calling to match it.
    A ``None`` threshold turns its filter off.
    """
    for name, value in (("prune_layer_fraction", prune_layer_fraction), ("kl_threshold", kl_threshold),
                        ("induce_threshold", induce_threshold)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} must be finite or None, got {value}")
    scores = score_candidates(model, harmful_val, harmless_val, candidates, refusal_tokens, site=site,
                              batch_size=batch_size, progress=progress)
    table = choose(filter_candidates(scores, model.cfg.n_layers, prune_layer_fraction=prune_layer_fraction,
                                     kl_threshold=kl_threshold, induce_threshold=induce_threshold))
    best = table[table["chosen"]].iloc[0]
    key = next(k for k in candidates if int(k[0]) == best["layer"] and str(k[1]) == best["position"])
    direction = torch.as_tensor(candidates[key]).detach().float().cpu().clone()
    return Selection(table, int(best["layer"]), str(best["position"]), direction, site)
