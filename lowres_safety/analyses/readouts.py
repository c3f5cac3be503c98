"""Is the high-resource subspace special? The released comparison of harmfulness readouts.

Source: github rashadaziz/low-resource-safety ``scripts/probe_method_comparison/compute_probe_method_comparison.py``
(``append_direction_baselines``, ``append_target_direction_methods``,
``append_budgeted_source_direction_baselines``, ``append_data_matched_logistic_baselines``,
``append_subspace_methods``, ``append_subspace_logistic_methods``) and
``src/multilingual_latent_safety/probe_evaluation.py`` (bases, the logistic probe).

Every readout is scored on each target's val and test prompts; k + k target train prompts
(drawn per target, budget and seed with ``stable_seed``) adapt it where it adapts:

- ``source_direction`` (source groups ``hrl``, ``mrl``, ``lrl_loo``, ``hrl_mrl``): the pooled
  difference of means of the group, budget 0;
- ``target_only_direction``: the difference of means of the k + k target examples;
- ``source_direction_budget_threshold`` and ``random_direction`` (a QR-normalised Gaussian
  direction per seed): fixed directions whose threshold the k examples set;
- ``direction_bank_logistic`` (features x·Dᵀ, D the unit per-language source directions),
  ``full_space_logistic`` (raw activations), ``pca_subspace_logistic`` (top-r principal
  components of the unlabelled source activations), ``random_subspace_logistic`` (off by
  default, as released) and ``subspace_logistic`` (the gate: top-r singular vectors of D, per
  source group): the released logistic probe (standardised, class-balanced, 80 AdamW steps,
  :data:`lowres_safety.gate.READOUTS` ``"paper"``) fitted on the source prompts (budget 0,
  threshold from the source logits) or refitted on the source plus the k + k examples;
- ``subspace_constrained_direction``: the k-shot difference of means projected on the gate's subspace;
- off by default, as released: ``subspace_logistic_refit_target_direction`` (``target_refit``: the
  gate's basis refitted with the target's k-shot direction appended to the source directions)
  and ``subspace_logistic_residual_memory`` (``memory_ranks``: one readout for every target on the
  gate's basis widened by the targets' k-shot directions' residuals, :func:`residual_memory_basis`;
  ``rank`` is the widened width, ``base_rank`` and ``memory_rank`` its parts; not for ``*_loo`` groups).

Thresholds (``threshold_source``): ``"validation"`` (the released config's default: one
threshold for every target, the best mean F1 over their val scores) or ``"target_budget"``
(from the k + k examples' scores: what the paper's figures show, since the fixed direction's
curve moves with k). Each budgeted readout also has ``<method>_threshold_oracle`` rows: a
threshold per target on the same fit scores. Budget-0 rows of fitted readouts use the
source train scores. Answer the question by comparing ``subspace_logistic`` with
``pca_subspace_logistic`` and ``random_subspace_logistic`` at the same rank and budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..activations import ActivationSet
from ..data import in_tier, tier_of
from ..gate import READOUTS
from .metrics import binary_metrics, global_threshold, language_thresholds, macro_rows, stable_seed
from .recoverability import draw_balanced

__all__ = ["GROUPS", "THRESHOLD_SOURCES", "compare_readouts", "residual_memory_basis", "source_languages"]

Matrix = np.ndarray  # [prompts, d_model] activations at the layer and position


def source_languages(group: str, languages: Sequence[str], target: str) -> list[str]:
    """The released source groups: hrl, mrl, hrl_mrl, lrl_loo (all low-resource but the target), all_loo."""
    high, mid, low = (in_tier(languages, t) for t in ("high", "mid", "low"))
    groups = {"hrl": high, "mrl": mid, "hrl_mrl": high + mid, "lrl_loo": [lang for lang in low if lang != target],
              "all_loo": [lang for lang in languages if lang != target]}
    if group not in groups:
        raise ValueError(f"unknown source group {group!r}; use one of {sorted(groups)}")
    return groups[group]


GROUPS = ("hrl", "mrl", "lrl_loo", "hrl_mrl", "all_loo")
THRESHOLD_SOURCES = ("validation", "target_budget")


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-8)


def _dom(x: Matrix, y: np.ndarray) -> np.ndarray:
    return x[y == 1].mean(0) - x[y == 0].mean(0)


def _top_right(matrix: np.ndarray, r: int) -> np.ndarray:
    """Top-r right singular vectors as columns [d, r] (uncentred SVD)."""
    return np.linalg.svd(matrix, full_matrices=False)[2][:r].T


def _random_basis(d: int, r: int, seed: int) -> np.ndarray:
    """``random_subspace_basis``: a seeded Gaussian [d, r], orthonormalised by torch's QR."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.linalg.qr(torch.randn(d, r, generator=g), mode="reduced").Q.numpy()


def _logistic(z_fit: np.ndarray, y: np.ndarray, seed: int) -> Callable[[np.ndarray], np.ndarray]:
    """The released probe on features: standardised on the fit rows, class-balanced, 80 AdamW steps."""
    mean, std = z_fit.mean(0), np.maximum(z_fit.std(0), 1e-6)
    coef, b = READOUTS["paper"]((z_fit - mean) / std, y, seed, 1.0)
    return lambda z: ((z - mean) / std) @ coef + b


class _Data:
    """Per-language train/val/test matrices and labels at one layer and position."""

    def __init__(self, acts: ActivationSet, layer: int, position: str):
        li, pi = acts.layer_index(layer), acts.position_index(position)
        self.parts = {}
        for lang in acts.prompts.languages:
            for split in ("train", "val", "test"):
                sub = acts.where(language=lang, split=split)
                if len(sub):
                    self.parts[lang, split] = (sub.acts[:, li, pi].double().numpy(), sub.prompts.labels.astype(int))
        self.width = int(acts.acts.shape[-1])

    def stack(self, languages: Sequence[str]) -> tuple[Matrix, np.ndarray]:
        xs, ys = zip(*(self.parts[lang, "train"] for lang in languages), strict=True)
        return np.concatenate(xs), np.concatenate(ys)

    def bank(self, languages: Sequence[str]) -> np.ndarray:
        return np.stack([_unit(_dom(*self.parts[lang, "train"])) for lang in languages])

    def shots(self, lang: str, k: int, seed: int) -> tuple[Matrix, np.ndarray]:
        x, y = self.parts[lang, "train"]
        h, n = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        hi, ni = draw_balanced(len(h), len(n), k, seed)
        return np.concatenate([x[h[hi.numpy()]], x[n[ni.numpy()]]]), np.r_[np.ones(k, int), np.zeros(k, int)]


def compare_readouts(acts: ActivationSet, layer: int, *, targets: Sequence[str] | None = None,
                     budgets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64), seeds: Sequence[int] = range(10),
                     ranks: Sequence[int] = (1, 2, 3, 5, 8, 10), direction_groups: Sequence[str] = ("hrl", "mrl",
                     "lrl_loo", "hrl_mrl"), subspace_groups: Sequence[str] = GROUPS, matched_groups: Sequence[str] = ("hrl",),
                     random_subspaces: bool = False, target_refit: bool = False, memory_ranks: Sequence[int] = (),
                     threshold_source: str = "validation",
                     position: str = "t_post_inst", model: str = "", progress: bool = True) -> pd.DataFrame:
    """The released readout comparison: one row per method × group × rank × budget × seed × threshold scope × split
    × target, plus macro rows (``__macro__``, ``__macro_<tier>__``) per group of the rest.

    ``acts`` holds every language's train prompts and the targets' val and test prompts at
    ``layer``. ``targets`` default to every language (the released run scores all 23).
    """
    if threshold_source not in THRESHOLD_SOURCES:
        raise ValueError(f"threshold_source must be one of {THRESHOLD_SOURCES}, got {threshold_source!r}")
    data = _Data(acts, layer, position)
    languages = acts.prompts.languages
    targets = list(targets or languages)
    missing = [t for t in targets for split in ("val", "test") if (t, split) not in data.parts]
    if missing:
        raise ValueError(f"targets need val and test prompts; missing for {sorted(set(missing))}")
    rows: list[pd.DataFrame] = []

    def emit(meta: dict, scorers: dict, fit: dict, source_train: bool) -> None:
        """Rows for one readout setting: a global threshold (and, unless from source scores, per-language ones)."""
        if not scorers:
            return
        chosen = {"global": dict.fromkeys(scorers, global_threshold(fit))}
        if not source_train:
            chosen["language_oracle"] = language_thresholds(fit)
        for scope, thresholds in chosen.items():
            method = meta["method"] + ("_threshold_oracle" if scope == "language_oracle" else "")
            out = []
            for lang, score in scorers.items():
                for split in ("val", "test"):
                    x, y = data.parts[lang, split]
                    out.append({**meta, "method": method, "threshold_scope": scope, "split": split, "language": lang,
                                "threshold": thresholds[lang], **binary_metrics(score(x), y, thresholds[lang])})
            rows.append(macro_rows(pd.DataFrame(out), [*meta, "threshold_scope", "split"]))

    def fit_scores(lang: str, score, shots) -> tuple:
        """The threshold's fit scores for one target: val, or the k-shot examples (in-sample for refitted ones)."""
        if threshold_source == "validation":
            x, y = data.parts[lang, "val"]
            return score(x), y
        return score(shots[0]), shots[1]

    plan = [(k, s) for k in budgets for s in seeds]
    # --- budget 0: fixed directions from each source group, validation threshold
    for group in direction_groups:
        scorers, fit = {}, {}
        for lang in targets:
            src = source_languages(group, languages, lang)
            if not src:
                continue
            v = _unit(_dom(*data.stack(src)))
            scorers[lang] = lambda x, v=v: x @ v
            fit[lang] = (scorers[lang](data.parts[lang, "val"][0]), data.parts[lang, "val"][1])
        emit({"method": "source_direction", "group": group, "rank": None, "budget": 0, "seed": None}, scorers, fit,
             False)
    # --- fitted readouts on the matched groups, zero-shot (source-train threshold)
    for group in matched_groups:
        for method, features in _feature_maps(data, languages, group, ranks, random_subspaces, model, None):
            scorers, fit = {}, {}
            for lang in targets:
                f = features(lang)
                if f is None:
                    continue
                sx, sy = data.stack(source_languages(group, languages, lang))
                seed = stable_seed(0, model, lang, group, method[1] or "", method[0], "zero_shot")
                probe = _logistic(f(sx), sy, seed)
                scorers[lang] = lambda x, f=f, probe=probe: probe(f(x))
                fit[lang] = (scorers[lang](sx), sy)
            emit({"method": method[0], "group": group, "rank": method[1], "budget": 0, "seed": None}, scorers, fit,
                 True)
    # --- budgeted rows
    for k, s in tqdm(plan, desc="readout comparison", unit="draw", disable=not progress):
        scorers, fit = {}, {}
        for lang in targets:
            shots = data.shots(lang, k, stable_seed(0, s, model, lang, k, "target"))
            v = _unit(_dom(*shots))
            scorers[lang] = lambda x, v=v: x @ v
            fit[lang] = fit_scores(lang, scorers[lang], shots)
        emit({"method": "target_only_direction", "group": "target", "rank": None, "budget": k, "seed": s}, scorers,
             fit, False)
        for group in matched_groups:
            for method, direction in (("source_direction_budget_threshold", None), ("random_direction", "random")):
                scorers, fit = {}, {}
                for lang in targets:
                    src = source_languages(group, languages, lang)
                    v = (_unit(_dom(*data.stack(src))) if direction is None
                         else _random_basis(data.width, 1, stable_seed(0, s, model, group, "random_direction"))[:, 0])
                    shots = data.shots(lang, k, stable_seed(0, s, model, lang, k, group, method))
                    scorers[lang] = lambda x, v=v: x @ v
                    fit[lang] = fit_scores(lang, scorers[lang], shots)
                emit({"method": method, "group": group, "rank": None, "budget": k, "seed": s}, scorers, fit, False)
            for method, features in _feature_maps(data, languages, group, ranks, random_subspaces, model, s):
                scorers, fit = {}, {}
                for lang in targets:
                    f = features(lang)
                    if f is None:
                        continue
                    draw = stable_seed(0, s, model, lang, k, group, *([method[1]] if method[1] else []), method[0])
                    shots = data.shots(lang, k, draw)
                    sx, sy = data.stack(source_languages(group, languages, lang))
                    probe = _logistic(f(np.concatenate([sx, shots[0]])), np.r_[sy, shots[1]], draw)
                    scorers[lang] = lambda x, f=f, probe=probe: probe(f(x))
                    fit[lang] = fit_scores(lang, scorers[lang], shots)
                emit({"method": method[0], "group": group, "rank": method[1], "budget": k, "seed": s}, scorers, fit,
                     False)
        for group in subspace_groups:
            for r in ranks:
                scorers, fit, gate_scorers, gate_fit = {}, {}, {}, {}
                for lang in targets:
                    src = source_languages(group, languages, lang)
                    if r > len(src):
                        continue
                    basis = _top_right(data.bank(src), r)
                    shots = data.shots(lang, k, stable_seed(0, s, model, lang, k, group, r, "subspace"))
                    v = _unit(basis @ (basis.T @ _dom(*shots)))
                    scorers[lang] = lambda x, v=v: x @ v
                    fit[lang] = fit_scores(lang, scorers[lang], shots)
                    draw = stable_seed(0, s, model, lang, k, group, r, "subspace_logistic")
                    shots = data.shots(lang, k, draw)
                    sx, sy = data.stack(src)
                    probe = _logistic(np.concatenate([sx, shots[0]]) @ basis, np.r_[sy, shots[1]], draw)
                    gate_scorers[lang] = lambda x, basis=basis, probe=probe: probe(x @ basis)
                    gate_fit[lang] = fit_scores(lang, gate_scorers[lang], shots)
                if len(scorers) == len(targets):  # the released code skips a setting any target lacks
                    meta = {"group": group, "rank": r, "budget": k, "seed": s}
                    emit({"method": "subspace_constrained_direction", **meta}, scorers, fit, False)
                    emit({"method": "subspace_logistic", **meta}, gate_scorers, gate_fit, False)
                    if target_refit:
                        emit({"method": "subspace_logistic_refit_target_direction", **meta},
                             *_refit_target_direction(data, languages, targets, group, r, k, s, model, fit_scores),
                             False)
                    for m in memory_ranks if "loo" not in group else ():
                        width, shots, score = _residual_memory(data, languages, targets, group, r, k, s, model, m)
                        emit({"method": "subspace_logistic_residual_memory", **meta, "rank": width, "base_rank": r,
                              "memory_rank": m}, dict.fromkeys(targets, score),
                             {lang: fit_scores(lang, score, shots[lang]) for lang in targets}, False)
    for group in subspace_groups:  # the gate zero-shot: fitted on the group's sources, source-train threshold
        for r in ranks:
            scorers, fit = {}, {}
            for lang in targets:
                src = source_languages(group, languages, lang)
                if r > len(src):
                    break
                basis = _top_right(data.bank(src), r)
                sx, sy = data.stack(src)
                probe = _logistic(sx @ basis, sy, stable_seed(0, model, lang, group, r, "subspace_logistic",
                                                              "zero_shot"))
                scorers[lang] = lambda x, basis=basis, probe=probe: probe(x @ basis)
                fit[lang] = (scorers[lang](sx), sy)
            if len(scorers) == len(targets):
                emit({"method": "subspace_logistic", "group": group, "rank": r, "budget": 0, "seed": None}, scorers,
                     fit, True)
    if not rows:
        return pd.DataFrame()
    out = pd.concat(rows, ignore_index=True)
    out["tier"] = out["language"].map(lambda lang: lang.strip("_").removeprefix("macro_") if lang.startswith("__")
                                      else tier_of(lang))
    return out.assign(threshold_source=np.where(out["budget"] == 0, "source_train", threshold_source))


def _feature_maps(data: _Data, languages, group: str, ranks, random_subspaces: bool, model: str, seed):
    """((method, rank), target -> feature map or None) for the matched logistic baselines; ``seed`` None: zero-shot."""
    def bank(lang):
        directions = data.bank(source_languages(group, languages, lang))
        return lambda x: x @ directions.T

    yield ("direction_bank_logistic", None), bank
    yield ("full_space_logistic", None), lambda lang: (lambda x: x)
    for r in ranks:
        def pca(lang, r=r):
            sx, _ = data.stack(source_languages(group, languages, lang))
            if r > min(sx.shape):
                return None
            basis = _top_right(sx - sx.mean(0), r)
            return lambda x: x @ basis

        yield ("pca_subspace_logistic", r), pca
        if random_subspaces:  # one basis per seed, shared by every target (zero-shot: one in all)
            tag = (stable_seed(0, model, group, r, "random_subspace_basis_zero_shot") if seed is None
                   else stable_seed(0, seed, model, group, r, "random_subspace_basis"))
            basis = _random_basis(data.width, r, tag)
            yield ("random_subspace_logistic", r), lambda lang, basis=basis: (lambda x: x @ basis)


def _refit_target_direction(data: _Data, languages, targets, group: str, r: int, k: int, s: int, model: str,
                            fit_scores) -> tuple[dict, dict]:
    """``subspace_logistic_refit_target_direction`` (``probe_evaluation.target_refit_subspace_basis``): the gate's
    basis refitted on the source directions plus the target's own k-shot direction, the readout on source + shots."""
    scorers, fit = {}, {}
    for lang in targets:
        src = source_languages(group, languages, lang)
        draw = stable_seed(0, s, model, lang, k, group, r, "subspace_logistic_refit_target_direction")
        shots = data.shots(lang, k, draw)
        basis = _top_right(np.vstack([data.bank(src), _unit(_dom(*shots))]), r)
        sx, sy = data.stack(src)
        probe = _logistic(np.concatenate([sx, shots[0]]) @ basis, np.r_[sy, shots[1]], draw)
        scorers[lang] = lambda x, basis=basis, probe=probe: probe(x @ basis)
        fit[lang] = fit_scores(lang, scorers[lang], shots)
    return scorers, fit


def residual_memory_basis(base: np.ndarray, directions: np.ndarray, memory_rank: int, eps: float = 1e-8
                          ) -> np.ndarray:
    """``probe_evaluation.residual_memory_subspace_basis``: ``base`` [d, r] plus the top ``memory_rank`` right singular
    vectors of the rows of ``directions`` less their part in ``base``, orthonormalised against it: [d, r + m]."""
    residuals = directions - (directions @ base) @ base.T
    residuals = residuals[np.linalg.norm(residuals, axis=1) > eps]
    if memory_rank == 0 or not len(residuals):
        return base
    width = min(memory_rank, *residuals.shape)
    extra = _top_right(residuals, width)
    extra = np.linalg.qr(extra - base @ (base.T @ extra))[0][:, :width]
    return np.hstack([base, extra])


def _residual_memory(data: _Data, languages, targets, group: str, r: int, k: int, s: int, model: str, m: int):
    """``subspace_logistic_residual_memory``: one readout for every target, on the gate's basis widened by the
    targets' k-shot directions (:func:`residual_memory_basis`), fitted on the source plus every target's shots.
    Returns (basis width, shots per target, the scorer)."""
    src = source_languages(group, languages, targets[0])
    shots = {lang: data.shots(lang, k, stable_seed(0, s, model, lang, k, group, r, "subspace_logistic_residual_memory"))
             for lang in targets}
    basis = residual_memory_basis(_top_right(data.bank(src), r), np.stack([_unit(_dom(*x)) for x in shots.values()]),
                                  m)
    sx, sy = data.stack(src)
    fx = np.concatenate([sx, *(x for x, _ in shots.values())]) @ basis
    probe = _logistic(fx, np.concatenate([sy, *(y for _, y in shots.values())]),
                      stable_seed(0, s, model, k, group, r, m, "subspace_logistic_residual_memory"))
    return basis.shape[1], shots, lambda x: probe(x @ basis)
