"""Harm or form? How much of a separability AUROC the prompts' form alone explains.

A harmfulness direction is scored by how well its projection separates harmful from
harmless prompts. When the two classes also differ in form (PolyRefuse's harmful prompts
are longer in every language), a direction that reads length separates them too. This
module gives, per language, the AUROC of

- ``length``: the prompt's token count alone (the model's tokenizer, no chat template);
- ``form_probe``: a cross-validated logistic readout of form features only
  (:data:`FORM_FEATURES`: token, character and word counts, a closing question mark,
  digits and punctuation marks);
- ``direction``: the direction's projection, as :func:`probing.separability` scores it;
- ``residualised``: the projection less its least-squares fit on the form features
  (fitted without the labels, within the language), so what is left cannot be form.

each with a class-stratified bootstrap interval. ``survives`` is True where the
residualised AUROC's interval lies above 0.5: the direction reads something form does not.
"""

from __future__ import annotations

import string

import numpy as np
import pandas as pd
from jaxtyping import Float
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import Tensor

from .activations import ActivationSet
from .data import PromptSet, tier_of
from .probing import auroc_interval, project

__all__ = ["FORM_FEATURES", "form_controls", "form_features", "residualise", "residualised_projections"]

#: The form features, per prompt.
FORM_FEATURES = ("n_tokens", "n_chars", "n_words", "question_mark", "n_digits", "n_punctuation")
_PUNCTUATION = set(string.punctuation) | set("。、！？，；：「」『』（）《》¿¡،؟")


def form_features(prompts: PromptSet, tokenizer) -> pd.DataFrame:
    """One row per prompt (in order): :data:`FORM_FEATURES`, read from the text alone."""
    texts = prompts.texts
    return pd.DataFrame({
        "n_tokens": [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts],
        "n_chars": [len(t) for t in texts],
        "n_words": [len(t.split()) for t in texts],
        "question_mark": [float(t.rstrip().endswith(("?", "？", "؟"))) for t in texts],
        "n_digits": [sum(c.isdigit() for c in t) for t in texts],
        "n_punctuation": [sum(c in _PUNCTUATION for c in t) for t in texts],
    }, dtype=float)


def residualise(score: np.ndarray, features: np.ndarray) -> np.ndarray:
    """``score`` less its least-squares fit (with an intercept) on ``features``; the labels are not used."""
    x = np.column_stack([np.ones(len(score)), features])
    coef, *_ = np.linalg.lstsq(x, score, rcond=None)
    return score - x @ coef


def residualised_projections(proj: pd.DataFrame, prompts: PromptSet, tokenizer) -> pd.DataFrame:
    """``proj`` (one row per prompt: ``id``, ``language``, ``projection``) with each language's projections
    residualised on the prompts' form features (:func:`residualise`): what the gap table then scores is
    the part of the projection form does not explain."""
    features = form_features(prompts, tokenizer).set_index(prompts.frame["id"].to_numpy())
    out = proj.copy()
    for rows in out.groupby("language", sort=False).groups.values():
        part = out.loc[rows]
        out.loc[rows, "projection"] = residualise(part["projection"].to_numpy(float),
                                                  features.loc[part["id"]].to_numpy())
    return out


def _form_probe_scores(features: np.ndarray, y: np.ndarray, folds: int, seed: int) -> np.ndarray:
    folds = int(min(folds, np.bincount(y).min()))
    if folds < 2:
        return np.full(len(y), 0.5)  # one prompt of a class: no held-out readout, chance by definition
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(probe, features, y, cv=cv, method="decision_function")


def form_controls(acts: ActivationSet, direction: Float[Tensor, "layer position d_model"], layer: int,
                  tokenizer, *, position: str = "t_post_inst", folds: int = 5, n_boot: int = 1000,
                  level: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Per language: the direction's AUROC beside what form alone explains (module docstring), with intervals.

    Rows: language, tier, layer, control (``length``, ``form_probe``, ``direction``,
    ``residualised``), auroc, auroc_low, auroc_high, n_harmful, n_harmless, and per
    language ``survives``.
    """
    features = form_features(acts.prompts, tokenizer).to_numpy()
    proj = project(acts, direction)[:, acts.layer_index(layer), acts.position_index(position)].numpy()
    languages = acts.prompts.frame["language"].to_numpy()
    rows = []
    for lang in acts.prompts.languages:
        own = languages == lang
        y = acts.prompts.labels[own].astype(bool)
        if y.all() or not y.any():
            raise ValueError(f"language {lang!r} needs harmful and harmless prompts for the form controls")
        f = features[own]
        scores = {"length": f[:, 0], "form_probe": _form_probe_scores(f, y.astype(int), folds, seed), "direction": proj[own],
                  "residualised": residualise(proj[own], f)}
        for control, score in scores.items():
            point, lo, hi = auroc_interval(score, y, n_boot=n_boot, level=level, seed=seed)
            rows.append({"language": lang, "tier": tier_of(lang), "layer": layer, "control": control, "auroc": point,
                         "auroc_low": lo, "auroc_high": hi, "n_harmful": int(y.sum()), "n_harmless": int((~y).sum())})
    table = pd.DataFrame(rows)
    survives = table[table["control"] == "residualised"].set_index("language")["auroc_low"] > 0.5
    return table.assign(survives=table["language"].map(survives))
