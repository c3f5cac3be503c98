"""Per-layer separability of harmful vs harmless prompts, per language.

Two readings of "is the harmfulness representation there?":
- AUROC of the projection onto a direction (the high-resource direction, or the
  language's own): threshold-free, so it measures the representation, not a calibration.
- Cross-validated accuracy of a logistic probe on the full residual stream: an upper
  bound of what any linear readout could get from this language alone.
AUROC is computed for all layers and positions at once from ranks (Mann-Whitney U).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from . import directions as dirs
from .activations import ActivationSet
from .data import tier_of

__all__ = ["auroc", "probe_accuracy", "project", "projections", "separability"]


def project(acts: ActivationSet, direction: Float[Tensor, "layer position d_model"]) -> Float[Tensor, "prompt layer position"]:
    """Scalar projection of every activation on the unit direction of its layer and position."""
    if direction.shape != acts.acts.shape[1:]:
        raise ValueError(
            f"direction has shape {tuple(direction.shape)}; this activation set needs "
            f"{tuple(acts.acts.shape[1:])} (layer, position, d_model)"
        )
    return torch.einsum("nlpd,lpd->nlp", acts.acts.float(), dirs.unit(direction.float()))


def auroc(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """AUROC of ``scores`` (``[n, ...]``) for binary ``labels`` (``[n]``), vectorised over trailing axes.

    Equals ``sklearn.metrics.roc_auc_score`` column by column (ties get half credit).
    """
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUROC needs both classes; got {n_pos} positive and {n_neg} negative")
    ranks = rankdata(scores, axis=0)
    return (ranks[labels].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def probe_accuracy(x: np.ndarray, y: np.ndarray, *, folds: int = 5, seed: int = 0, C: float = 1.0) -> float:
    """Mean stratified k-fold accuracy of a standardised logistic probe (NaN if too few examples)."""
    folds = min(folds, int(np.bincount(y, minlength=2).min()))
    if folds < 2:
        return float("nan")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, x, y, cv=cv).mean())


def separability(
    acts: ActivationSet,
    direction: Float[Tensor, "layer position d_model"] | None = None,
    *,
    direction_name: str = "pooled",
    own: bool = False,
    probe: bool = True,
    folds: int = 5,
    seed: int = 0,
) -> pd.DataFrame:
    """Tidy table: one row per language x layer x position (x direction).

    ``direction`` (e.g. :func:`directions.pooled` of the high-resource languages) is
    scored as ``direction_name``; ``own=True`` adds each language's own direction (always
    in-sample). Without any direction, only the probe is scored.
    """
    rows = []
    for lang in acts.prompts.languages:
        sub = acts.where(language=lang)
        y = sub.prompts.labels
        if y.min() == y.max():
            raise ValueError(f"language {lang!r} has only {'harmful' if y[0] else 'harmless'} prompts")
        scored = {}
        if direction is not None:
            scored[direction_name] = auroc(project(sub, direction).numpy(), y)
        if own:
            scored["own"] = auroc(project(sub, dirs.diff_of_means(sub)).numpy(), y)
        if not scored:
            scored = {None: None}
        for li, layer in enumerate(acts.layers):
            for pi, pos in enumerate(acts.positions):
                acc = probe_accuracy(sub.acts[:, li, pi].numpy(), y, folds=folds, seed=seed) if probe else np.nan
                base = {"language": lang, "tier": tier_of(lang), "layer": layer, "position": pos,
                        "n_harmful": int(y.sum()), "n_harmless": int(len(y) - y.sum()), "probe_accuracy": acc}
                for name, au in scored.items():
                    rows.append({**base, "direction": name, "auroc": float(au[li, pi]) if au is not None else np.nan})
    return pd.DataFrame(rows)


def projections(acts: ActivationSet, direction: Float[Tensor, "layer position d_model"], layer: int,
                position: str) -> pd.DataFrame:
    """Tidy projections at one layer and position: one row per prompt (for distribution plots)."""
    proj = project(acts, direction)[:, acts.layer_index(layer), acts.position_index(position)]
    frame = acts.prompts.frame[["id", "language", "subset", "source_id"]].copy()
    frame["tier"] = frame["language"].map(tier_of)
    frame["layer"], frame["position"], frame["projection"] = layer, position, proj.numpy()
    return frame
