"""Generation-based sweeps of the released code: steering strength, and where ablation removes refusal.

Sources: github rashadaziz/low-resource-safety

- ``scripts/activation_sweep/run_refusal_activation_sweep.py`` with ``interventions.py::make_directional_addition_hook``:
  the **strength sweep** adds λ·v̂ (λ ∈ {0, 0.25, …, 3}, the raw coefficient, not scaled) at one
  block output, at the last prompt token and every generated token, on harmful prompts;
  refusal is judged on the generated text, per language, averaged per tier, and each tier's
  peak λ (the smallest on ties) is read off.
- ``scripts/routing_refusal/intervene_and_generate.py`` with ``+intervention.sweep_layers=true``
  or ``intervention.direction_layer=X``: the **ablation sweeps** of the released
  ``directional_ablation`` (:class:`~lowres_safety.methods.DirectionalAblation`) on harmful
  prompts: per layer L, block L alone ablated with the direction from L (the paper's figure 1);
  or the block range fixed and the direction read at each layer (the anchor-layer sweep).

The released runs judge with GPT-4o-mini; any judge of :mod:`~lowres_safety.judges` goes here
(substring by default). The released strength sweep reads PolyRefuse's val split; pass those prompts.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import hooks as H
from .._runtime.files import atomic_write_text
from ..activations import ActivationSet
from ..data import PromptSet
from ..evaluation import refusal_rates
from ..generation import generate
from ..methods.directional_ablation import LAYER_RANGE, source_direction

__all__ = ["STRENGTHS", "ablation_sweep", "peak_strengths", "strength_sweep", "tier_means"]

#: λ of the released sweep.
STRENGTHS = tuple(float(x) for x in np.arange(0.0, 3.0 + 1e-9, 0.25))


def _refusal(model, prompts: PromptSet, hooks, judge, max_new_tokens: int, batch_size: int) -> pd.DataFrame:
    completions = generate(model, prompts, hooks, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           progress=False)
    return refusal_rates(completions, judge, by=("language",)).rename(columns={"rate": "refusal"})


def _kept(store: str | Path | None, name: str, compute: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """One finished step's rows: read from ``store`` where a run before wrote them, else computed and written."""
    if store is None:
        return compute()
    path = Path(store) / f"{name}.json"
    if path.exists():
        return pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
    rows = compute()
    atomic_write_text(path, json.dumps(rows.to_dict(orient="records"), ensure_ascii=False))
    return rows


def _harmful(prompts: PromptSet) -> PromptSet:
    harmful = prompts.where(subset="harmful")
    if len(harmful) == 0:
        raise ValueError("the sweeps read harmful prompts; this set has none")
    return harmful


def strength_sweep(model, prompts: PromptSet, direction: torch.Tensor, layer: int, *,
                   strengths: Sequence[float] = STRENGTHS, judge=None, max_new_tokens: int = 128,
                   batch_size: int = 16, store: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Refusal (%) of the harmful ``prompts`` with λ·v̂ added at ``blocks.{layer}.hook_resid_post`` from the last
    prompt token on: one row per λ × language (``strength``, ``language``, ``tier``, ``refusal``, ``n``).

    ``store``: a folder that keeps each finished λ, so an interrupted sweep resumes (one folder per
    sweep: nothing in it says which model, prompts or direction its rows came from)."""
    harmful = _harmful(prompts)
    rows = []
    for lam in tqdm(strengths, desc="strength sweep", unit="λ", disable=not progress):
        hooks = H.add(direction, float(lam), layer, scope="from_last") if lam else []
        rows.append(_kept(store, f"strength-{float(lam):g}", lambda hooks=hooks, lam=lam: _refusal(
            model, harmful, hooks, judge, max_new_tokens, batch_size).assign(strength=float(lam))))
    return pd.concat(rows, ignore_index=True)[["strength", "language", "tier", "refusal", "n"]]


def tier_means(table: pd.DataFrame, by: str = "strength") -> pd.DataFrame:
    """The unweighted mean refusal over each tier's languages, per value of ``by``."""
    return table.groupby([by, "tier"], sort=True)["refusal"].mean().reset_index()


def peak_strengths(table: pd.DataFrame) -> pd.DataFrame:
    """Each tier's λ of highest mean refusal (the smallest λ on ties), as the released figure marks it."""
    means = tier_means(table).sort_values(["tier", "strength"])
    best = means.loc[means.groupby("tier")["refusal"].idxmax()]  # idxmax: the first, so the smallest λ
    return best.rename(columns={"strength": "peak_strength"}).reset_index(drop=True)


def ablation_sweep(model, prompts: PromptSet, acts: ActivationSet, *, layers: Sequence[int] | None = None,
                   sources: Sequence[str] = ("en", "hrl_pooled"), anchored: bool = False,
                   layer_range: tuple[int, int] = LAYER_RANGE, judge=None, max_new_tokens: int = 128,
                   batch_size: int = 16, store: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Refusal (%) of the harmful ``prompts`` under the released directional ablation, per layer and source.

    ``anchored=False`` (the per-layer sweep): for each layer L, block L alone, direction from L.
    ``anchored=True`` (the anchor-layer sweep): the blocks of ``layer_range`` (clipped to the
    model), direction from each layer L. ``acts`` are the fit activations the directions come
    from (``t_post_inst`` at every swept layer). Rows: ``source``, ``layer``, ``language``,
    ``tier``, ``refusal``, ``n``, plus the unablated model as ``layer = -1``. ``store`` keeps each
    finished run, as in :func:`strength_sweep`.
    """
    harmful = _harmful(prompts)
    layers = list(range(model.cfg.n_layers) if layers is None else layers)
    fixed = tuple(range(layer_range[0], min(layer_range[1], model.cfg.n_layers)))
    if anchored and not fixed:
        raise ValueError(f"the layer range {layer_range} holds no layer of this {model.cfg.n_layers}-layer model")
    rows = [_kept(store, "none", lambda: _refusal(model, harmful, [], judge, max_new_tokens, batch_size).assign(
        source="none", layer=-1))]
    plan = [(s, layer) for s in sources for layer in layers]
    for source, layer in tqdm(plan, desc="ablation sweep", unit="run", disable=not progress):
        v = source_direction(acts, source, layer)
        if v is None:
            raise ValueError("the sweeps ablate one direction for every language; 'per_language' is not swept")
        hooks = H.ablate(v, fixed if anchored else [layer], sites=("hook_resid_post",))
        name = f"{'anchored' if anchored else 'block'}-{source}-{layer}"
        rows.append(_kept(store, name, lambda hooks=hooks, source=source, layer=layer: _refusal(
            model, harmful, hooks, judge, max_new_tokens, batch_size).assign(source=source, layer=layer)))
    return pd.concat(rows, ignore_index=True)[["source", "layer", "language", "tier", "refusal", "n"]]
