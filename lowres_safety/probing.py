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

__all__ = ["auroc", "auroc_interval", "bootstrap_auroc", "choose_layer", "heldout_projections", "middle_layers",
           "probe_accuracy", "project", "projections", "separability", "transfer_matrix"]


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
    return np.asarray((ranks[labels].sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_auroc(pos: np.ndarray, neg: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """AUROC of ``n_boot`` class-stratified resamples of positive and negative scores (class sizes fixed)."""
    scores = np.concatenate([pos[rng.integers(0, len(pos), (len(pos), n_boot))],
                             neg[rng.integers(0, len(neg), (len(neg), n_boot))]])
    return auroc(scores, np.r_[np.ones(len(pos)), np.zeros(len(neg))])


def auroc_interval(score: np.ndarray, labels: np.ndarray, *, n_boot: int = 1000, level: float = 0.95,
                   seed: int = 0) -> tuple[float, float, float]:
    """(AUROC, low, high): the point and a ``level`` bootstrap interval over class-stratified resamples."""
    score, labels = np.asarray(score, dtype=float), np.asarray(labels).astype(bool)
    boots = bootstrap_auroc(score[labels], score[~labels], n_boot, np.random.default_rng(seed))
    lo, hi = np.percentile(boots, [50 * (1 - level), 50 * (1 + level)])
    return float(auroc(score[:, None], labels)[0]), float(lo), float(hi)


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


def heldout_projections(acts: ActivationSet, source_languages, layer: int, position: str = "t_post_inst", *,
                        folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold projections on the pooled source direction: no prompt scores a direction fitted on it.

    Source prompts (``source_id``, all translations together, per class) are dealt into
    ``folds`` folds; the direction of fold f is the pooled difference of means of the
    source languages' prompts outside f, and every prompt of f, in every language, is
    projected on it. So the source languages' AUROC is held out, not in-sample, and no
    translation of a scored prompt helped fit its direction. ``folds`` is capped at the
    number of source ids per class. Rows as :func:`projections`, plus ``fold``.
    """
    frame = acts.prompts.frame
    li, pi = acts.layer_index(layer), acts.position_index(position)
    x = acts.acts[:, li, pi].float()
    group = frame["subset"] + "\0" + frame["source_id"].fillna(frame["id"]).astype(str)
    rng = np.random.default_rng(seed)
    fold_of, groups = {}, group.drop_duplicates().groupby(frame["subset"])
    folds = min(folds, int(groups.size().min()))
    if folds < 2:
        raise ValueError("held-out projections need at least 2 prompts per class (source ids) to hold one out")
    for _, ids in groups:
        fold_of.update({g: i % folds for i, g in enumerate(rng.permutation(ids.to_numpy()))})
    fold = group.map(fold_of).to_numpy()
    in_source = frame["language"].isin(list(source_languages)).to_numpy()
    if not in_source.any():
        raise ValueError(f"none of {list(source_languages)} is in this activation set ({acts.prompts.languages})")
    harmful = acts.prompts.labels.astype(bool)
    proj = np.full(len(frame), np.nan)
    for f in range(folds):
        fit = in_source & (fold != f)
        if not (fit & harmful).any() or not (fit & ~harmful).any():
            raise ValueError(f"fold {f} of {folds} leaves no source prompts of one class to fit on; use fewer folds")
        v = x[torch.from_numpy(fit & harmful)].mean(0) - x[torch.from_numpy(fit & ~harmful)].mean(0)
        rows = torch.from_numpy(fold == f)
        proj[rows.numpy()] = (x[rows] @ dirs.unit(v)).numpy()
    out = frame[["id", "language", "subset", "source_id"]].copy()
    out["tier"] = out["language"].map(tier_of)
    out["layer"], out["position"], out["projection"], out["fold"] = layer, position, proj, fold
    return out


def transfer_matrix(acts: ActivationSet, layer: int, position: str = "t_post_inst") -> pd.DataFrame:
    """AUROC of every language's own direction on every language's prompts (diagonal in-sample).

    Rows: ``direction_language``, ``target_language``, ``auroc``. PolyRefuse's
    universality claim predicts a matrix near its diagonal everywhere.
    """
    own = dirs.per_language(acts)
    li, pi = acts.layer_index(layer), acts.position_index(position)
    rows = []
    for source, v in own.items():
        u = dirs.unit(v[li, pi].float())
        for target in acts.prompts.languages:
            sub = acts.where(language=target)
            score = (sub.at(layer, position).float() @ u).numpy()
            rows.append({"direction_language": source, "target_language": target, "layer": layer,
                         "position": position, "auroc": _auroc1(score, sub.prompts.labels)})
    return pd.DataFrame(rows)


def _auroc1(score: np.ndarray, y: np.ndarray) -> float:
    return float(auroc(np.asarray(score)[:, None], y)[0])


def middle_layers(n_layers: int) -> list[int]:
    """The middle half of the network, where the steering layer is searched."""
    return list(range(n_layers // 4, (3 * n_layers) // 4))


def choose_layer(acts: ActivationSet, source_languages, position: str = "t_post_inst", *, n_layers: int) -> int:
    """Layer where the pooled source direction separates the source languages best (mean AUROC).

    Only the middle half of the model's ``n_layers`` (``model.cfg.n_layers``) is searched:
    the earliest layers carry little meaning and the last ones leave no room for steering
    to act. The layer count comes from the model, not from the layers extracted, so a
    set holding only the middle layers is searched over the same range.
    """
    middle = [l for l in acts.layers if l in middle_layers(n_layers)] or list(acts.layers)
    v = dirs.pooled(acts, source_languages)
    pi = acts.position_index(position)
    per_lang = [auroc(project(sub, v)[:, :, pi].numpy(), sub.prompts.labels)
                for sub in (acts.where(language=lang) for lang in source_languages)]
    scores = np.mean(per_lang, axis=0)  # [layer]
    return int(max(middle, key=lambda l: scores[acts.layer_index(l)]))
