"""The gate: a low-rank logistic readout of harmfulness, recalibrated per language.

Defaults follow the paper's released code (github rashadaziz/low-resource-safety,
``src/multilingual_latent_safety/conditional_vhrl.py::train_gates`` and
``probe_evaluation.py``):

- **subspace**: the uncentred SVD of the source languages' *unit* difference-of-means
  directions at the gate layer (``probe_evaluation.py::subspace_basis``); a rank above
  the number of source languages is an error there and here. ``rank=None`` takes them
  all (the released code's rank 10 with its 10 high-resource languages).
- **readout** (``probe_evaluation.py::fit_logistic_probe``): features standardised with
  the population std (clamped at 1e-6), a linear layer (Xavier-uniform weight, zero
  bias) trained full-batch with AdamW (lr 0.05, weight decay 0.01, 80 steps,
  ``pos_weight = n_harmless / n_harmful``), stopped before convergence.
  ``readout="lbfgs"`` is a converged, L2-regularised scikit-learn fit instead.
- **threshold**: the candidate (midpoints of the sorted unique logits, ±1e-6 past the
  ends) with the best *balanced* F1 of the harmful class (``f1_curve`` with objective
  ``balanced_macro_f1``), computed in the released operation order so that ties break
  as they do there (:func:`balanced_f1_threshold`); a prompt is harmful when its logit is
  ``>=`` the threshold (``annotate_gate_outputs``).
- **recalibration** with ``k`` target examples per class: ``method="paper"`` refits the
  standardiser and readout on the source prompts plus the ``2k`` target examples, then
  searches the threshold on those ``2k`` logits (the released code).
  ``method="threshold"`` keeps the readout frozen and only searches the threshold (what
  the paper's text describes). The basis never changes. When the target examples' class
  means come out in the wrong order (easy with k = 1) the search puts the threshold
  below them and calls both harmful, where the midpoint of the class means (this
  toolkit's earlier rule, dropped) flips every call.

The gate follows scikit-learn's contract: ``__init__`` stores hyperparameters, ``fit``
returns ``self``, learned attributes end in ``_``. :meth:`Gate.margin` is the torch
function the routing hook calls on the live residual stream; the gate calls a prompt
harmful where it is ``>= 0``.
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
from sklearn.metrics import balanced_accuracy_score
from torch import Tensor

from . import directions as dirs
from ._runtime.files import atomic_save
from .activations import ActivationSet

__all__ = ["READOUTS", "RECALIBRATIONS", "Gate", "balanced_f1_threshold", "sample_per_class"]

_FORMAT = 2


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


def balanced_f1_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """Threshold with the best class-balanced F1 of the harmful class (mathematically 2·TPR / (1 + TPR + FPR)).

    The released code's search, in its operation order (``probe_evaluation.py``:
    ``candidate_threshold_tensor``, ``f1_curve(class_balance=True)`` and
    ``select_global_threshold_for_objective("balanced_macro_f1")``): candidates are the
    midpoints of the sorted unique scores plus 1e-6 beyond each end; a score counts as
    harmful when it is above the candidate; TP and FN weigh 0.5/n_harmful, FP
    0.5/n_harmless; F1 = 2PR/(P + R) in float64; the first maximum wins. The closed form
    rounds differently, and ties are common at weak separation (F1 = 2/3 for "everything
    harmful" equals F1 at any TPR = 0.5 + 0.5·FPR), so the order is kept, not simplified.
    """
    values = np.asarray(scores, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    if y.all() or not y.any():
        raise ValueError("a threshold search needs harmful and harmless examples")
    s = np.unique(values)
    candidates = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]]) if len(s) > 1 else \
        np.array([s[0] - 1e-6, s[0] + 1e-6])
    harmful, harmless = np.sort(values[y]), np.sort(values[~y])
    tp = len(harmful) - np.searchsorted(harmful, candidates, side="right").astype(np.float64)
    fp = len(harmless) - np.searchsorted(harmless, candidates, side="right").astype(np.float64)
    fn = float(len(harmful)) - tp
    w_harmful, w_harmless = 0.5 / len(harmful), 0.5 / len(harmless)
    tp, fn, fp = tp * w_harmful, fn * w_harmful, fp * w_harmless
    precision = np.where(tp + fp > 0, tp / np.where(tp + fp > 0, tp + fp, 1.0), 0.0)
    recall = np.where(tp + fn > 0, tp / np.where(tp + fn > 0, tp + fn, 1.0), 0.0)
    denom = precision + recall
    f1 = np.where(denom > 0, 2.0 * precision * recall / np.where(denom > 0, denom, 1.0), 0.0)
    return float(candidates[int(np.argmax(f1))])


# ---------------------------------------------------------------- readouts: (z standardised, y, seed, C) -> (coef, b)


def _adamw_readout(z: np.ndarray, y: np.ndarray, seed: int, C: float) -> tuple[np.ndarray, float]:
    """The released code's readout: 80 full-batch AdamW steps on a Xavier-initialised linear layer."""
    x, t = torch.as_tensor(z, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)
    generator = torch.Generator().manual_seed(int(seed))
    weight = torch.nn.init.xavier_uniform_(torch.empty(1, x.shape[1]), generator=generator).requires_grad_(True)
    bias = torch.zeros(1, requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=0.05, weight_decay=0.01)
    pos_weight = torch.tensor([(1 - t).sum() / t.sum()])
    with torch.enable_grad():
        for _ in range(80):
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight[0] + bias, t, pos_weight=pos_weight)
            loss.backward()
            opt.step()
    return weight.detach()[0].numpy().astype(np.float64), float(bias.detach()[0])


def _lbfgs_readout(z: np.ndarray, y: np.ndarray, seed: int, C: float) -> tuple[np.ndarray, float]:
    """A converged, class-balanced, L2-regularised logistic regression (scikit-learn)."""
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed).fit(z, y)
    return clf.coef_[0].astype(np.float64), float(clf.intercept_[0])


#: Readout trainers by name; all take standardised features and return (coef, intercept).
READOUTS = {"paper": _adamw_readout, "lbfgs": _lbfgs_readout}
#: Recalibration methods by name: whether the readout is refit on source + target before the search.
RECALIBRATIONS = {"paper": True, "threshold": False}


class Gate:
    """Low-rank logistic harmfulness readout with a per-language decision threshold."""

    def __init__(self, rank: int | None = None, C: float = 1.0, seed: int = 0, readout: str = "paper"):
        self.rank = rank
        self.C = C
        self.seed = seed
        self.readout = readout

    # ------------------------------------------------------------------ fitting

    def fit(self, acts: ActivationSet, layer: int, position: str = "t_post_inst", source_languages=None) -> Gate:
        """Fit subspace, readout and threshold on the source languages of ``acts`` at one layer/position."""
        if self.readout not in READOUTS:
            raise ValueError(f"unknown readout {self.readout!r}; use one of {sorted(READOUTS)}")
        languages = list(source_languages or acts.prompts.languages)
        missing = [lang for lang in languages if lang not in acts.prompts.languages]
        if missing:
            raise ValueError(f"source language(s) {missing} not in the activations ({acts.prompts.languages})")
        rank = len(languages) if self.rank is None else self.rank
        if not 1 <= rank <= len(languages):
            raise ValueError(f"rank {rank} exceeds the {len(languages)} source directions it is taken from "
                             f"({languages}); use rank <= {len(languages)} or rank=None for all of them")
        src = acts.where(language=languages)
        li, pi = src.layer_index(layer), src.position_index(position)
        per_lang = dirs.per_language(src, languages)
        stacked = dirs.unit(torch.stack([d[li, pi] for d in per_lang.values()]).double())
        _, _, vh = torch.linalg.svd(stacked, full_matrices=False)
        self.layer_, self.position_ = layer, str(position)
        self.source_languages_ = tuple(languages)
        self.rank_ = rank
        self.basis_ = vh[:rank].float().contiguous()
        self.d_model_ = int(self.basis_.shape[1])
        self.source_features_ = self._project(src.at(layer, position))
        self.source_labels_ = torch.from_numpy(src.prompts.labels.astype(np.int64))
        self._fit_readout(self.source_features_, self.source_labels_.numpy())
        self.threshold_ = balanced_f1_threshold(self.raw_logits(src.at(layer, position)).numpy(),
                                                src.prompts.labels)
        self.language_, self.k_, self.method_ = None, 0, None
        return self

    def _project(self, x: Float[Tensor, "n d_model"]) -> Float[Tensor, "n rank"]:
        return x.float() @ self.basis_.to(x.device).T

    def _fit_readout(self, z: Float[Tensor, "n rank"], y: np.ndarray) -> None:
        z = z.double()
        mean, scale = z.mean(0), z.std(0, unbiased=False).clamp_min(1e-6)
        coef, intercept = READOUTS[self.readout](((z - mean) / scale).numpy(), y, self.seed, self.C)
        self.mean_, self.scale_ = mean.float(), scale.float()
        self.coef_ = torch.tensor(coef, dtype=torch.float32)
        self.intercept_ = float(intercept)

    def recalibrate(self, target: ActivationSet, k: int, *, seed: int = 0, method: str = "paper") -> Gate:
        """A copy of the gate recalibrated for one target language from ``k`` examples per class.

        ``method="paper"`` (default, the released code's ``train_gates`` with a budget):
        refit the standardiser and readout on the source prompts plus the ``2k`` target
        examples, then search the threshold on the ``2k`` target logits.
        ``method="threshold"`` (the paper's text): readout frozen, threshold searched the
        same way. ``seed`` picks the examples.
        """
        self._check_fitted()
        if method not in RECALIBRATIONS:
            raise ValueError(f"unknown recalibration method {method!r}; use one of {sorted(RECALIBRATIONS)}")
        shots = sample_per_class(target, k, seed)
        x, y = self._features_of(shots), shots.prompts.labels
        gate = copy.deepcopy(self)
        if RECALIBRATIONS[method]:
            z = torch.cat([self.source_features_, self._project(x)])
            gate._fit_readout(z, np.concatenate([self.source_labels_.numpy(), y]))
        gate.threshold_ = balanced_f1_threshold(gate.raw_logits(x).numpy(), y)
        gate.language_, gate.k_, gate.method_ = target.prompts.languages[0], k, method
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
        z = (self._project(x) - self.mean_.to(x.device)) / self.scale_.to(x.device)
        return z @ self.coef_.to(x.device) + self.intercept_

    def margin(self, acts: ActivationSet | Float[Tensor, "n d_model"]) -> Float[Tensor, " n"]:
        """Readout logit minus the threshold: ``>= 0`` means the gate calls the prompt harmful."""
        return self.raw_logits(acts) - self.threshold_

    def predict(self, acts: ActivationSet | Float[Tensor, "n d_model"]) -> Bool[Tensor, " n"]:
        return self.margin(acts) >= 0

    def balanced_accuracy(self, acts: ActivationSet) -> float:
        return float(balanced_accuracy_score(acts.prompts.labels, self.predict(acts).cpu().numpy()))

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """One safetensors file with the learned tensors; the rest in its header. Atomic."""
        self._check_fitted()
        meta = {"format": _FORMAT, "rank": self.rank, "C": self.C, "seed": self.seed, "readout": self.readout,
                "layer": self.layer_, "position": self.position_, "source_languages": list(self.source_languages_),
                "rank_": self.rank_, "intercept": self.intercept_, "threshold": self.threshold_,
                "language": self.language_, "k": self.k_, "method": self.method_}
        tensors = {"basis": self.basis_, "mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                   "source_features": self.source_features_, "source_labels": self.source_labels_}
        atomic_save({k: v.contiguous() for k, v in tensors.items()}, Path(path), {"lowres_safety": json.dumps(meta)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> Gate:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads(fh.metadata()["lowres_safety"])
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{path} is a gate file of format {meta.get('format')}; this version reads format "
                             f"{_FORMAT}: fit the gate again")
        gate = cls(meta["rank"], meta["C"], meta["seed"], meta["readout"])
        gate.layer_, gate.position_ = meta["layer"], meta["position"]
        gate.source_languages_, gate.rank_ = tuple(meta["source_languages"]), meta["rank_"]
        gate.basis_, gate.mean_, gate.scale_, gate.coef_ = (tensors[k] for k in ("basis", "mean", "scale", "coef"))
        gate.source_features_, gate.source_labels_ = tensors["source_features"], tensors["source_labels"]
        gate.d_model_ = int(gate.basis_.shape[1])
        gate.intercept_, gate.threshold_ = meta["intercept"], meta["threshold"]
        gate.language_, gate.k_, gate.method_ = meta["language"], meta["k"], meta["method"]
        return gate

    def __repr__(self) -> str:
        if not hasattr(self, "basis_"):
            return f"Gate(rank={self.rank}, readout={self.readout!r}, seed={self.seed})"
        where = (f"recalibrated for {self.language_!r} with k={self.k_} ({self.method_})" if self.language_
                 else "source threshold")
        return (f"Gate(layer={self.layer_}, position={self.position_!r}, rank={self.rank_}, readout={self.readout!r}, "
                f"source={list(self.source_languages_)}, threshold={self.threshold_:.3f}, {where})")
