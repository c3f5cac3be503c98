"""The gate: a low-rank logistic readout of harmfulness, recalibrated per language.

Fit on high-resource (source) languages: the subspace spanned by their per-language
difference-of-means directions (an SVD keeps ``rank`` axes), a standardised,
class-balanced logistic regression on the projected features, and a decision threshold
that maximises macro F1 on the source prompts. For a target language,
:meth:`Gate.recalibrate` resets only the threshold from ``k`` harmful and ``k`` harmless
examples (Aziz, Hanif, Koto 2026): the readout stays, the alarm level moves.

The gate follows scikit-learn's contract: ``__init__`` stores hyperparameters, ``fit``
returns ``self``, learned attributes end in ``_``. :meth:`Gate.margin` is the torch
function the routing hook calls on the live residual stream; it is positive where the
gate calls a prompt harmful.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float
from safetensors.torch import safe_open
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from . import directions as dirs
from .activations import ActivationSet
from .files import atomic_save

__all__ = ["Gate", "best_threshold", "sample_per_class"]

_FORMAT = 1


def sample_per_class(acts: ActivationSet, k: int, seed: int = 0) -> ActivationSet:
    """``k`` harmful and ``k`` harmless prompts of one language, drawn with ``seed``."""
    languages = acts.prompts.languages
    if len(languages) != 1:
        raise ValueError(f"calibration examples must come from one language; got {languages}")
    y = acts.prompts.labels
    counts = {"harmful": int(y.sum()), "harmless": int(len(y) - y.sum())}
    if min(counts.values()) == 0:
        raise ValueError(f"language {languages[0]!r} has only one class here ({counts}); "
                         "recalibration needs harmful and harmless examples")
    if not 1 <= k <= min(counts.values()):
        raise ValueError(f"k={k} examples per class requested but language {languages[0]!r} has {counts}")
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c in (1, 0)])
    keep = np.zeros(len(y), dtype=bool)
    keep[idx] = True
    ids = acts.prompts.frame["id"][keep].tolist()
    return acts.where(id=ids)


def best_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """Threshold maximising macro F1; the midpoint between neighbouring scores, so it is stable."""
    s = np.unique(scores)
    candidates = np.concatenate([[s[0] - 1.0], (s[:-1] + s[1:]) / 2, [s[-1] + 1.0]])
    f1 = [f1_score(y, scores > t, average="macro", zero_division=0) for t in candidates]
    return float(candidates[int(np.argmax(f1))])


class Gate:
    """Low-rank logistic harmfulness readout with a per-language decision threshold."""

    def __init__(self, rank: int = 10, C: float = 1.0, seed: int = 0):
        self.rank = rank
        self.C = C
        self.seed = seed

    # ------------------------------------------------------------------ fitting

    def fit(self, acts: ActivationSet, layer: int, position: str = "t_post_inst", source_languages=None) -> Gate:
        """Fit subspace, readout and threshold on the source languages of ``acts`` at one layer/position."""
        if self.rank < 1:
            raise ValueError(f"rank must be at least 1, got {self.rank}")
        languages = list(source_languages or acts.prompts.languages)
        missing = [lang for lang in languages if lang not in acts.prompts.languages]
        if missing:
            raise ValueError(f"source language(s) {missing} not in the activations ({acts.prompts.languages})")
        src = acts.where(language=languages)
        li, pi = src.layer_index(layer), src.position_index(position)
        per_lang = dirs.per_language(src, languages)
        stacked = torch.stack([d[li, pi] for d in per_lang.values()]).double()
        _, _, vh = torch.linalg.svd(stacked, full_matrices=False)
        self.layer_, self.position_ = layer, str(position)
        self.source_languages_ = tuple(languages)
        self.rank_ = min(self.rank, len(languages))  # a subspace of n directions has at most n axes
        self.basis_ = vh[: self.rank_].float().contiguous()
        self.d_model_ = int(self.basis_.shape[1])
        self._fit_readout(src.at(layer, position), src.prompts.labels)
        self.threshold_ = best_threshold(self.raw_logits(src.at(layer, position)).numpy(), src.prompts.labels)
        self.language_, self.k_, self.refit_ = None, 0, False
        return self

    def _fit_readout(self, x: Float[Tensor, "n d_model"], y: np.ndarray, weight: np.ndarray | None = None) -> None:
        z = (x.double() @ self.basis_.double().T).numpy()
        scaler = StandardScaler().fit(z)
        clf = LogisticRegression(C=self.C, class_weight="balanced", max_iter=2000, random_state=self.seed)
        clf.fit(scaler.transform(z), y, sample_weight=weight)
        self.mean_ = torch.tensor(scaler.mean_, dtype=torch.float32)
        self.scale_ = torch.tensor(scaler.scale_, dtype=torch.float32)
        self.coef_ = torch.tensor(clf.coef_[0], dtype=torch.float32)
        self.intercept_ = float(clf.intercept_[0])

    def recalibrate(self, target: ActivationSet, k: int, *, seed: int = 0, refit: bool = False,
                    source: ActivationSet | None = None) -> Gate:
        """A copy of the gate with its threshold reset for one target language from ``k`` examples per class.

        The threshold is the midpoint of the mean readout logits of the ``k`` harmful and
        ``k`` harmless examples (the equal-variance decision boundary; with ``k = 1``, the
        midpoint of the two). ``refit=True`` follows the paper's released code instead:
        the readout is refit on ``source`` plus the ``2k`` target examples before the
        threshold is chosen on them. The subspace never changes.
        """
        self._check_fitted()
        shots = sample_per_class(target, k, seed)
        x, y = self._features_of(shots), shots.prompts.labels
        gate = copy.deepcopy(self)
        if refit:
            if source is None:
                raise ValueError("refit=True needs the source activations the gate was fitted on (source=...)")
            src = source.where(language=list(self.source_languages_))
            xs = self._features_of(src)
            gate._fit_readout(torch.cat([xs, x]), np.concatenate([src.prompts.labels, y]))
        raw = gate.raw_logits(x).numpy()
        gate.threshold_ = float((raw[y == 1].mean() + raw[y == 0].mean()) / 2)
        gate.language_, gate.k_, gate.refit_ = target.prompts.languages[0], k, refit
        return gate

    # ------------------------------------------------------------------ reading

    def _check_fitted(self) -> None:
        if not hasattr(self, "basis_"):
            raise RuntimeError("this Gate is not fitted yet; call fit(acts, layer, position, source_languages)")

    def _features_of(self, acts) -> Float[Tensor, "n d_model"]:
        if isinstance(acts, ActivationSet):
            if self.layer_ not in acts.layers or self.position_ not in acts.positions:
                raise ValueError(
                    f"this gate was fitted at layer {self.layer_}, position {self.position_!r}; the activations "
                    f"have layers {list(acts.layers)} and positions {list(acts.positions)}"
                )
            return acts.at(self.layer_, self.position_)
        return acts

    def raw_logits(self, acts: ActivationSet | Float[Tensor, "n d_model"]) -> Float[Tensor, " n"]:
        """The readout's logit, before the threshold."""
        self._check_fitted()
        x = self._features_of(acts)
        if x.shape[-1] != self.d_model_:
            raise ValueError(f"activations have width {x.shape[-1]}; this gate was fitted on d_model={self.d_model_}")
        basis = self.basis_.to(x.device, torch.float32)
        z = (x.float() @ basis.T - self.mean_.to(x.device)) / self.scale_.to(x.device)
        return z @ self.coef_.to(x.device) + self.intercept_

    def margin(self, acts: ActivationSet | Float[Tensor, "n d_model"]) -> Float[Tensor, " n"]:
        """Readout logit minus the threshold: positive means the gate calls the prompt harmful."""
        return self.raw_logits(acts) - self.threshold_

    def predict(self, acts: ActivationSet | Float[Tensor, "n d_model"]) -> Bool[Tensor, " n"]:
        return self.margin(acts) > 0

    def balanced_accuracy(self, acts: ActivationSet) -> float:
        return float(balanced_accuracy_score(acts.prompts.labels, self.predict(acts).cpu().numpy()))

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """One safetensors file with the learned tensors; the rest in its header. Atomic."""
        self._check_fitted()
        meta = {"format": _FORMAT, "rank": self.rank, "C": self.C, "seed": self.seed, "layer": self.layer_,
                "position": self.position_, "source_languages": list(self.source_languages_),
                "rank_": self.rank_, "intercept": self.intercept_, "threshold": self.threshold_,
                "language": self.language_, "k": self.k_, "refit": self.refit_}
        tensors = {"basis": self.basis_, "mean": self.mean_, "scale": self.scale_, "coef": self.coef_}
        atomic_save({k: v.contiguous() for k, v in tensors.items()}, Path(path), {"lowres_safety": json.dumps(meta)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Gate:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["lowres_safety"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        gate = cls(meta["rank"], meta["C"], meta["seed"])
        gate.layer_, gate.position_ = meta["layer"], meta["position"]
        gate.source_languages_, gate.rank_ = tuple(meta["source_languages"]), meta["rank_"]
        gate.basis_, gate.mean_, gate.scale_, gate.coef_ = (tensors[k] for k in ("basis", "mean", "scale", "coef"))
        gate.d_model_ = int(gate.basis_.shape[1])
        gate.intercept_, gate.threshold_ = meta["intercept"], meta["threshold"]
        gate.language_, gate.k_, gate.refit_ = meta["language"], meta["k"], meta["refit"]
        return gate

    def __repr__(self) -> str:
        if not hasattr(self, "basis_"):
            return f"Gate(rank={self.rank}, C={self.C}, seed={self.seed})"
        where = f"recalibrated for {self.language_!r} with k={self.k_}" if self.language_ else "source threshold"
        return (f"Gate(layer={self.layer_}, position={self.position_!r}, rank={self.rank_}, "
                f"source={list(self.source_languages_)}, threshold={self.threshold_:.3f}, {where})")
