"""The gate at each rank of its subspace: the released rank sweep.

Source: github rashadaziz/low-resource-safety ``scripts/probe_method_comparison/compute_probe_method_comparison.py``
(``append_subspace_logistic_methods``, source group ``hrl``), the rows behind the paper's
``rank_sweep_*`` figures (the plotting script is not released).

For each rank r, the subspace is the top r right singular vectors of the stacked unit
per-language source directions (nested: rank r is a prefix of rank r + 1), and the gate
(:class:`~lowres_safety.gate.Gate`, the released AdamW readout) is fitted on the source
languages' train prompts. Budget 0 scores it as fitted, its threshold the best F1 on the
source train logits; budget k refits the standardiser and readout on the source prompts
plus k + k train prompts of the target (drawn with ``stable_seed(0, s, model, target, k,
"hrl", r, "subspace_logistic")``, which also seeds the readout) and sets the threshold on
those 2k logits. ``threshold_scope="global"`` (released default) takes one threshold for
every target, the best mean F1 over their 2k logits; ``"language"`` one per target (the
released "oracle" rows; what ``steer``'s gate does).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..activations import ActivationSet
from ..data import tier_of
from ..gate import Gate
from .metrics import binary_metrics, global_threshold, language_thresholds, macro_rows, stable_seed
from .recoverability import draw_shots

__all__ = ["RANKS", "THRESHOLD_SCOPES", "rank_sweep"]

#: The released ranks (4, 6, 7 and 9 were never computed there).
RANKS = (1, 2, 3, 5, 8, 10)
#: Threshold rules by name: fit scores per language -> threshold per language.
THRESHOLD_SCOPES = {"global": lambda fit: dict.fromkeys(fit, global_threshold(fit)), "language": language_thresholds}


def rank_sweep(acts: ActivationSet, layer: int, *, source_languages: Sequence[str],
               languages: Sequence[str] | None = None, ranks: Sequence[int] = RANKS,
               budgets: Sequence[int] = (0, 1, 2, 4, 8, 16, 32, 64), seeds: Sequence[int] = range(10),
               position: str = "t_post_inst", threshold_scope: str = "global", fit_split: str = "train",
               eval_split: str = "test", model: str = "", progress: bool = True) -> pd.DataFrame:
    """One row per rank × budget × seed × target language (test metrics at the chosen threshold), plus macro rows.

    Ranks above the number of source languages are skipped, as budgets above a target's
    smaller train class. Budget 0 has one row per rank (seed 0): nothing is drawn.
    """
    if threshold_scope not in THRESHOLD_SCOPES:
        raise ValueError(f"threshold_scope must be one of {sorted(THRESHOLD_SCOPES)}, got {threshold_scope!r}")
    choose = THRESHOLD_SCOPES[threshold_scope]
    fit = acts.where(split=fit_split)
    source = fit.where(language=list(source_languages))
    targets = [lang for lang in (languages or acts.prompts.languages) if lang not in source_languages]
    tests = {lang: acts.where(language=lang, split=eval_split) for lang in targets}
    rows = []
    plan = [(r, k, s) for r in ranks if r <= len(source_languages) for k in budgets for s in (seeds if k else [0])]
    bases = {}  # rank -> the gate fitted on the source languages alone
    for r, k, s in tqdm(plan, desc="rank sweep", unit="fit", disable=not progress):
        if r not in bases:
            seed = stable_seed(0, model, "all", "hrl", r, "subspace_logistic", "zero_shot")
            bases[r] = Gate(rank=r, seed=seed).fit(source, layer, position, list(source_languages))
        base = bases[r]
        gates, fit_scores = {}, {}
        for lang in targets:
            pool = fit.where(language=lang)
            if k > min(np.bincount(pool.prompts.labels, minlength=2)):
                continue
            if k == 0:
                gates[lang] = base
                fit_scores[lang] = (base.raw_logits(source).numpy(), source.prompts.labels)
                continue
            draw = stable_seed(0, s, model, lang, k, "hrl", r, "subspace_logistic")
            shots = draw_shots(pool, k, draw)
            reseeded = copy.copy(base)
            reseeded.seed = draw
            gates[lang] = reseeded.recalibrate(shots, k, seed=draw)
            fit_scores[lang] = (gates[lang].raw_logits(shots).numpy(), shots.prompts.labels)
        thresholds = choose(fit_scores) if fit_scores else {}
        for lang, gate in gates.items():
            with torch.no_grad():
                scores = gate.raw_logits(tests[lang]).numpy()
            rows.append({"language": lang, "tier": tier_of(lang), "rank": r, "budget": k, "seed": s,
                         "threshold": thresholds[lang], "threshold_scope": threshold_scope, "layer": layer,
                         **binary_metrics(scores, tests[lang].prompts.labels, thresholds[lang])})
    frame = pd.DataFrame(rows)
    return macro_rows(frame, ["rank", "budget", "seed", "threshold_scope"]) if len(frame) else frame
