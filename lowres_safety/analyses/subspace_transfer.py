"""Does the gate's subspace transfer across tiers? The released cross-lingual subspace transfer.

Source: github rashadaziz/low-resource-safety ``scripts/ood_transfer/compute_crosslingual_subspace_transfer.py``
(``build_source_plans``, ``score_targets_once``) with its config (rank 10, global threshold).

Three conditions, each a set of zero-shot gates (no target example is used):

- ``hrl_to_target``: the high-resource languages as source; every mid- and low-resource language a target;
- ``hrl_plus_lrl_full``: high-resource plus **one** low-resource language (its whole train
  split), one gate per added language; the other low-resource languages are the targets;
- ``hrl_plus_mrl_full``: high-resource plus one mid-resource language; every low-resource
  language a target.

Each gate (:class:`~lowres_safety.gate.Gate`, rank 10: with 11 sources the top 10 of their
directions) is fitted on its sources' train prompts, seeded ``stable_seed(0, model,
condition, added)``; its threshold is the best plain F1 on those train logits, shared by
every target; each target's val and test prompts are scored.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from tqdm.auto import tqdm

from ..activations import ActivationSet
from ..data import in_tier, tier_of
from ..gate import Gate
from .metrics import binary_metrics, global_threshold, macro_rows, stable_seed

__all__ = ["CONDITIONS", "source_plans", "subspace_transfer"]

CONDITIONS = ("hrl_to_target", "hrl_plus_lrl_full", "hrl_plus_mrl_full")


def source_plans(languages: Sequence[str]) -> list[tuple[str, str, list[str], list[str]]]:
    """(condition, added language or "", source languages, targets) for the languages at hand, as released."""
    high, mid, low = (in_tier(languages, t) for t in ("high", "mid", "low"))
    plans = [("hrl_to_target", "", high, mid + low)]
    plans += [("hrl_plus_lrl_full", a, high + [a], [t for t in low if t != a]) for a in low]
    plans += [("hrl_plus_mrl_full", m, high + [m], low) for m in mid]
    return [p for p in plans if p[3]]


def subspace_transfer(acts: ActivationSet, layer: int, *, rank: int = 10, position: str = "t_post_inst",
                      fit_split: str = "train", splits: Sequence[str] = ("val", "test"), model: str = "",
                      progress: bool = True) -> pd.DataFrame:
    """One row per condition × added language × split × target (metrics at the source threshold), plus macro rows.

    A plan whose sources number fewer than ``rank`` is skipped, as in the released code.
    """
    fit = acts.where(split=fit_split)
    rows = []
    plans = [p for p in source_plans(acts.prompts.languages) if len(p[2]) >= rank]
    for condition, added, sources, targets in tqdm(plans, desc="subspace transfer", unit="gate",
                                                  disable=not progress):
        src = fit.where(language=sources)
        gate = Gate(rank=rank, seed=stable_seed(0, model, condition, added)).fit(src, layer, position, sources)
        threshold = global_threshold({"source": (gate.raw_logits(src).numpy(), src.prompts.labels)})
        for split in splits:
            for target in targets:
                scored = acts.where(language=target, split=split)
                if len(scored) == 0:
                    continue
                rows.append({"condition": condition, "added": added, "split": split, "language": target,
                             "tier": tier_of(target), "rank": rank, "threshold": threshold, "layer": layer,
                             **binary_metrics(gate.raw_logits(scored).detach().numpy(), scored.prompts.labels,
                                              threshold)})
    frame = pd.DataFrame(rows)
    return macro_rows(frame, ["condition", "added", "split"]) if len(frame) else frame
