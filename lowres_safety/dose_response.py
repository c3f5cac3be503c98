"""Dose-response: how hard must the direction be pushed before a language refuses?

:func:`dose_response` adds α·v̂ over a layers × α grid and scores harmful refusal,
harmless (false) refusal and KL at once, per language, from one prefill pass per grid
point (:func:`lowres_safety.grid.next_token_grid`); :func:`alpha_at_half` reads off the α
at which each language's harmful refusal first reaches 50%. A language that needs a much
larger α than English has the signal and a quieter alarm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from . import hooks as H
from .data import PromptSet, tier_of
from .grid import next_token_grid, token_summary
from .judges import refusal_log_odds

__all__ = ["alpha_at_half", "dose_response"]


def dose_response(model, prompts: PromptSet, direction, layers: Sequence[int],
                  alphas: Sequence[float] | Mapping[int, Sequence[float]], refusal_tokens, *, scope: str = "all",
                  batch_size: int = 16, progress: bool = True) -> pd.DataFrame:
    """Add α·v̂ at one layer and score refusal and KL at the first response token.

    ``direction`` is one vector or a mapping layer → vector (e.g. each layer's own pooled
    direction); ``alphas`` likewise one list or a mapping layer → list (e.g. multiples of
    each layer's own :func:`hooks.default_alpha`: the residual stream's scale grows with
    depth, so one α means little at another layer). ``scope`` is where α·v̂ is added (:func:`hooks.add`): ``"all"`` positions
    (the usual activation addition) or ``"from_last"``, the last prompt token only, which
    is what ``steer``'s addition and gate do (the gate decides there) and needs a larger α.

    Refusal is the logit judge (refusal-token log-odds > 0; ``refusal_tokens`` as in
    :func:`evaluation.refusal_score`), so a grid point costs at most one prefill pass, not
    a generation — and less (:func:`grid.next_token_grid`): the layers below the addition
    run once per batch, and with ``scope="from_last"``/``"last"`` so does every prompt
    position but the last. KL(p_unsteered ‖ p_steered) is averaged over harmless prompts
    (the utility cost). Rows: language, tier, layer, alpha, harmful_refusal,
    harmless_refusal, kl_harmless, mean_log_odds_harmful, n_harmful, n_harmless.
    """
    if not len(layers) or not len(alphas):
        raise ValueError("dose_response needs at least one layer and one alpha")
    if isinstance(alphas, Mapping) and set(layers) - set(alphas):
        raise ValueError(f"no alphas for layer(s) {sorted(set(layers) - set(alphas))}")
    per_layer = direction if isinstance(direction, Mapping) else {layer: direction for layer in layers}
    alphas_of = alphas if isinstance(alphas, Mapping) else {layer: alphas for layer in layers}
    grid = [(layer, float(alpha)) for layer in layers for alpha in alphas_of[layer]]
    H.check_scope(scope)
    points = [[] if alpha == 0 else H.add(per_layer[layer], alpha, [layer], scope=scope) for layer, alpha in grid]
    reduce, columns = token_summary(refusal_tokens)
    summary = next_token_grid(model, prompts, points, last_only=scope != "all", position_wise=scope == "all",
                              reduce=reduce, batch_size=batch_size, progress=progress)
    frame = prompts.frame[["language", "subset"]].copy()
    rows = []
    for (layer, alpha), point in zip(grid, summary):
        frame["log_odds"] = refusal_log_odds(point[:, :-1], prompts, columns).numpy()
        frame["kl"] = point[:, -1].numpy()
        for lang, part in frame.groupby("language", sort=False):
            harmful, harmless = part[part["subset"] == "harmful"], part[part["subset"] == "harmless"]
            rows.append({"language": lang, "tier": tier_of(lang), "layer": layer, "alpha": alpha,
                         "harmful_refusal": 100 * float((harmful["log_odds"] > 0).mean()) if len(harmful) else np.nan,
                         "harmless_refusal": 100 * float((harmless["log_odds"] > 0).mean()) if len(harmless) else np.nan,
                         "kl_harmless": float(harmless["kl"].mean()) if len(harmless) else np.nan,
                         "mean_log_odds_harmful": float(harmful["log_odds"].mean()) if len(harmful) else np.nan,
                         "n_harmful": len(harmful), "n_harmless": len(harmless)})
    return pd.DataFrame(rows)


def alpha_at_half(dose: pd.DataFrame, column: str = "harmful_refusal", level: float = 50.0) -> pd.DataFrame:
    """Per language and layer, the smallest α at which ``column`` first reaches ``level`` (linear interpolation).

    NaN when the grid never reaches it; 0-crossings already at the smallest α give that α.
    """
    rows = []
    for (lang, layer), part in dose.groupby(["language", "layer"], sort=False):
        part = part.sort_values("alpha")
        a, r = part["alpha"].to_numpy(float), part[column].to_numpy(float)
        hit = np.flatnonzero(r >= level)
        if not len(hit):
            value = np.nan
        elif hit[0] == 0:
            value = a[0]
        else:
            i = hit[0]
            value = a[i - 1] + (level - r[i - 1]) * (a[i] - a[i - 1]) / (r[i] - r[i - 1])
        rows.append({"language": lang, "tier": tier_of(lang), "layer": layer, f"alpha_at_{level:g}": value})
    return pd.DataFrame(rows)
