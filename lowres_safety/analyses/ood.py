"""Does the gate work on another data set? The released out-of-distribution transfer of the gate.

Source: github rashadaziz/low-resource-safety ``scripts/ood_transfer/compute_ood_latent_gate_transfer.py``
(``run_ood_latent_gate_transfer``, ``sample_ood_pair``, ``append_indosafety_category_rows``) with its
config (rank 10, budget 1, 10 seeds, ``threshold_selection: global_balanced``).

The targets are a harmful-only data set per language with a harmless counterpart (the
released run: MultiJail and IndoSafety, harmless from PolyRefuse); here any set the prompt
loader reads, e.g. a wide CSV with one column per language, an id and a category
(:func:`~lowres_safety.data.load_prompts` with ``harmless_from=`` and ``category=``). Four gates,
all fitted on the source languages' train prompts:

- ``v_hrl`` 0-shot: the pooled difference of means of the sources, threshold the best
  class-balanced F1 on the source projections;
- ``v_hrl`` 1-shot: the same direction, threshold re-set from one harmful and one harmless
  example per target (``stable_seed(0, seed, model, target, "v_hrl")``);
- ``hrl_subspace`` 0-shot: the gate (:class:`~lowres_safety.gate.Gate`, rank 10) as fitted;
- ``hrl_subspace`` 1-shot: readout and standardiser refitted on the sources plus the two
  examples (``stable_seed(0, seed, model, target, "subspace_one_shot")``).

A 1-shot threshold is **one for every target**: the best mean balanced F1 over all targets'
two-example logits, as released. The examples come from ``shots`` (the released code
draws the harmful one from the target's train split where it has one, else from the
scored test set itself; ``exclude_shots=True`` keeps the drawn prompts out of the scores).
Where prompts carry a ``category``, each category's harmful prompts are also scored against
all of the language's harmless ones at the same threshold (``evaluation_group="category"``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import directions as dirs
from ..activations import ActivationSet
from ..gate import Gate, balanced_f1_threshold
from .metrics import COUNTS, RATES, binary_metrics, global_threshold, stable_seed
from .recoverability import draw_shots

__all__ = ["ood_transfer"]


def _rows(scores: np.ndarray, target: ActivationSet, threshold: float, meta: dict) -> list[dict]:
    """The target's row, then one per category of its harmful prompts (against all its harmless ones)."""
    y = target.prompts.labels
    rows = [{**meta, "evaluation_group": "language", "category": None, **binary_metrics(scores, y, threshold)}]
    frame = target.prompts.frame
    if "category" in frame:
        for category, part in frame[y == 1].groupby(frame.loc[y == 1, "category"].fillna("__missing__")):
            keep = np.isin(np.arange(len(y)), frame.index.get_indexer(part.index)) | (y == 0)
            rows.append({**meta, "evaluation_group": "category", "category": category,
                         **binary_metrics(scores[keep], y[keep], threshold)})
    return rows


def ood_transfer(source: ActivationSet, targets: ActivationSet, layer: int, *, rank: int = 10,
                 seeds: Sequence[int] = range(10), shots: ActivationSet | None = None, exclude_shots: bool = False,
                 position: str = "t_post_inst", model: str = "", progress: bool = True) -> pd.DataFrame:
    """One row per gate × shot × seed × target language (and category), with a ``__macro__`` row per gate × shot × seed.

    ``source``: the source languages' train prompts (all of them are sources). ``targets``: the
    data set to score, harmful and harmless per language. ``shots``: where the 1-shot
    examples are drawn from (default: ``targets`` itself, as the released run for sets without
    a train split). Columns: gate, shot, seed, language, evaluation_group, category, threshold
    and the metrics (balanced accuracy is the released headline).
    """
    li, pi = source.layer_index(layer), source.position_index(position)
    shots = targets if shots is None else shots
    languages = targets.prompts.languages
    v = dirs.unit(dirs.diff_of_means(source)[li, pi].float())
    base = Gate(rank=min(rank, len(source.prompts.languages)), seed=stable_seed(0, model, "subspace_zero_shot")).fit(
        source, layer, position, source.prompts.languages)
    rows = []

    def score(lang: str, fn, drawn: ActivationSet | None) -> tuple[np.ndarray, ActivationSet]:
        scored = targets.where(language=lang)
        if exclude_shots and drawn is not None:
            used = set(drawn.prompts.frame["id"])
            scored = scored.where(id=[i for i in scored.prompts.frame["id"] if i not in used])
        with torch.no_grad():
            return np.asarray(fn(scored)), scored

    project = lambda acts: (acts.at(layer, position).float() @ v).numpy()  # noqa: E731
    zero = {"v_hrl": (project, balanced_f1_threshold(project(source), source.prompts.labels)),
            "hrl_subspace": (lambda acts: base.raw_logits(acts).numpy(), base.threshold_)}
    for gate, (fn, threshold) in zero.items():
        part = []
        for lang in languages:
            scores, scored = score(lang, fn, None)
            part += _rows(scores, scored, threshold, {"gate": gate, "shot": 0, "seed": None, "language": lang,
                                                      "threshold": threshold})
        rows += part + [_macro(part, {"gate": gate, "shot": 0, "seed": None})]
    def refit(drawn: ActivationSet, draw: int):
        reseeded = copy.copy(base)
        reseeded.seed = draw  # the released refit is seeded with the draw's seed
        g = reseeded.recalibrate(drawn, 1, seed=draw)
        return lambda acts: g.raw_logits(acts).numpy()

    # 1-shot gates: name -> (the draw's seed tag, (drawn examples, seed) -> scorer)
    one_shot = {"v_hrl": ("v_hrl", lambda drawn, draw: project), "hrl_subspace": ("subspace_one_shot", refit)}
    for s in tqdm(list(seeds), desc="ood transfer", unit="seed", disable=not progress):
        for gate, (tag, fit) in one_shot.items():
            fitted, fit_scores, drawn = {}, {}, {}
            for lang in languages:
                draw = stable_seed(0, s, model, lang, tag)
                drawn[lang] = draw_shots(shots.where(language=lang), 1, draw)
                fitted[lang] = fit(drawn[lang], draw)
                fit_scores[lang] = (np.asarray(fitted[lang](drawn[lang])), drawn[lang].prompts.labels)
            threshold = global_threshold(fit_scores)  # 1 + 1 examples: balanced F1 is plain F1
            part = []
            for lang in languages:
                scores, scored = score(lang, fitted[lang], drawn[lang])
                part += _rows(scores, scored, threshold, {"gate": gate, "shot": 1, "seed": s, "language": lang,
                                                          "threshold": threshold})
            rows += part + [_macro(part, {"gate": gate, "shot": 1, "seed": s})]
    return pd.DataFrame(rows)


def _macro(rows: list[dict], meta: dict) -> dict:
    """The unweighted mean over the languages' rows (categories left out), counts summed."""
    frame = pd.DataFrame([r for r in rows if r["evaluation_group"] == "language"])
    return {**meta, "language": "__macro__", "evaluation_group": "language", "category": None,
            "threshold": frame["threshold"].iloc[0], **frame[list(RATES)].mean().to_dict(),
            **frame[list(COUNTS)].sum().astype(int).to_dict()}
