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
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from . import directions as dirs
from .activations import ActivationSet
from .data import tier_of

__all__ = ["RECOVERY_METHODS", "auroc", "heldout_projections", "probe_accuracy", "project", "projections",
           "recoverability", "separability", "transfer_matrix"]


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


#: Methods scored by :func:`recoverability`; the last two are controls.
RECOVERY_METHODS = ("direction", "gate", "target_probe", "random_direction", "permuted_probe")


def _probe_scores(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, C: float) -> np.ndarray:
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    return probe.fit(x_fit, y_fit).decision_function(x_eval)


def _auroc1(score: np.ndarray, y: np.ndarray) -> float:
    return float(auroc(np.asarray(score)[:, None], y)[0])


def _score(pred: np.ndarray, score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy of the predictions, AUROC of the scores)."""
    return float(balanced_accuracy_score(y, pred)), _auroc1(score, y)


def _midpoint(score: np.ndarray, y: np.ndarray) -> float:
    return float((score[y == 1].mean() + score[y == 0].mean()) / 2)


def recoverability(acts: ActivationSet, direction: Float[Tensor, "layer position d_model"], gate, *,
                   languages=None, budgets=(1, 2, 4, 8, 16, 32, 64), seeds=(0, 1, 2), n_eval: int | None = None,
                   C: float = 1.0, n_permutations: int = 8) -> pd.DataFrame:
    """How many target-language examples per class does a working harmfulness readout need?

    For each target language and seed the prompts of each class are shuffled; the last
    ``n_eval`` per class are held out (default: half the smaller class), and budget ``b``
    takes the first ``b`` of the rest (nested across budgets). Methods, all scored on the
    held-out prompts by balanced accuracy and AUROC:

    - ``direction``: projection on the high-resource ``direction`` at the gate's layer,
      threshold = midpoint of the ``b`` + ``b`` class means;
    - ``gate``: :meth:`Gate.recalibrate` on the same examples;
    - ``target_probe``: logistic probe on the ``2b`` target examples alone;
    - controls: ``random_direction`` (a seeded random unit vector, oriented and
      thresholded on the same examples) and ``permuted_probe`` (the target probe fitted
      on shuffled labels, averaged over ``n_permutations`` shuffles, since one shuffle of
      two examples is either the truth or its inverse): both near chance.

    Budgets larger than the pool are skipped. The direction's and gate's AUROC do not
    depend on ``b`` (only their threshold does); they are repeated so every method reads
    the same way.
    """
    layer, position = gate.layer_, gate.position_
    li, pi = acts.layer_index(layer), acts.position_index(position)
    rows = []
    for lang in languages or acts.prompts.languages:
        sub = acts.where(language=lang)
        x, y = sub.at(layer, position).float(), sub.prompts.labels
        counts = np.bincount(y, minlength=2)
        if counts.min() < 2:
            raise ValueError(f"language {lang!r} needs at least 2 prompts per class, has {counts.tolist()}")
        held = n_eval or counts.min() // 2
        if held >= counts.min():
            raise ValueError(f"n_eval={held} leaves no calibration prompts in {lang!r} ({counts.tolist()} per class)")
        proj = (x @ dirs.unit(direction[li, pi].float())).numpy()
        for seed in seeds:
            rng = np.random.default_rng(seed)
            order = {c: rng.permutation(np.flatnonzero(y == c)) for c in (0, 1)}
            test = np.concatenate([order[c][-held:] for c in (0, 1)])
            random_u = dirs.unit(torch.randn(x.shape[1], generator=torch.Generator().manual_seed(seed)))
            rand = (x @ random_u).numpy()
            for b in budgets:
                if b > counts.min() - held:
                    continue
                calib = np.concatenate([order[c][:b] for c in (0, 1)])
                yc, yt = y[calib], y[test]
                results = {"direction": (proj[test] > _midpoint(proj[calib], yc), proj[test])}
                sign = 1.0 if rand[calib][yc == 1].mean() >= rand[calib][yc == 0].mean() else -1.0
                results["random_direction"] = (sign * rand[test] > _midpoint(sign * rand[calib], yc), sign * rand[test])
                shots = sub.where(id=sub.prompts.frame["id"].iloc[calib].tolist())
                g = gate.recalibrate(shots, b, seed=seed)
                results["gate"] = (g.predict(x[test]).numpy(), g.raw_logits(x[test]).numpy())
                s = _probe_scores(x[calib].numpy(), yc, x[test].numpy(), C)
                results["target_probe"] = (s > 0, s)
                scored = {name: _score(pred, s, yt) for name, (pred, s) in results.items()}
                shuffled = [_probe_scores(x[calib].numpy(), rng.permutation(yc), x[test].numpy(), C)
                            for _ in range(n_permutations)]
                scored["permuted_probe"] = tuple(np.mean([_score(p > 0, p, yt) for p in shuffled], axis=0))
                for name in RECOVERY_METHODS:
                    ba, au = scored[name]
                    rows.append({"language": lang, "tier": tier_of(lang), "budget": b, "seed": seed, "method": name,
                                 "balanced_accuracy": float(ba), "auroc": float(au), "n_eval": len(test),
                                 "layer": layer})
    return pd.DataFrame(rows)
