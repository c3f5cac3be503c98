"""How many target-language examples does a working harmfulness readout need?

The paper's recoverability analysis: in each target language, the high-resource direction
with a re-set threshold and the gate re-calibrated on ``b`` examples per class, against a
probe trained on the target language alone and two controls that should stay at chance.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from . import directions as dirs
from .activations import ActivationSet
from .data import tier_of
from .probing import auroc

__all__ = ["RECOVERY_METHODS", "recoverability", "recovery_split"]


#: Methods scored by :func:`recoverability`; the last two are controls.
RECOVERY_METHODS = ("direction", "gate", "target_probe", "random_direction", "permuted_probe")


def _probe_scores(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, C: float) -> np.ndarray:
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    return probe.fit(x_fit, y_fit).decision_function(x_eval)


def _score(pred: np.ndarray, score: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(balanced accuracy of the predictions, AUROC of the scores)."""
    return float(balanced_accuracy_score(y, pred)), float(auroc(np.asarray(score)[:, None], y)[0])


def _midpoint(score: np.ndarray, y: np.ndarray) -> float:
    return float((score[y == 1].mean() + score[y == 0].mean()) / 2)


def recovery_split(labels: np.ndarray, n_eval: int,
                   rng: np.random.Generator) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """One seed's split of a language's prompts (row indices): a shuffled order per class and the held-out rows.

    The last ``n_eval`` of each class's order are held out; budget ``b`` calibrates on the
    first ``b`` of each (nested across budgets, and never a held-out row while
    ``b <= count - n_eval``). :func:`recoverability` draws it with ``default_rng(seed)``.
    """
    order = {c: rng.permutation(np.flatnonzero(labels == c)) for c in (0, 1)}
    return order, np.concatenate([order[c][-n_eval:] for c in (0, 1)])


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
        held = int(n_eval or counts.min() // 2)
        if held >= counts.min():
            raise ValueError(f"n_eval={held} leaves no calibration prompts in {lang!r} ({counts.tolist()} per class)")
        proj = (x @ dirs.unit(direction[li, pi].float())).numpy()
        for seed in seeds:
            rng = np.random.default_rng(seed)
            order, test = recovery_split(y, held, rng)
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
