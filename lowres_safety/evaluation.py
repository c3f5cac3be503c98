"""Refusal rates, selectivity Δ, and utility (KL, multiple choice); the judges live in :mod:`judges`.

A judge decides which answers are refusals (:mod:`lowres_safety.judges`): the phrase judge
(:func:`substring_judge`, :class:`judges.SubstringJudge`), the logit judge (the log-odds
of the model's refusal-opening tokens, :func:`refusal_score`), a local Hugging Face model
(:class:`judges.ModelJudge`), or any callable — ``(prompt, completion) -> bool`` or the
batch shape ``(prompts, completions, languages) -> list[bool]``. This module turns
verdicts into rates per language and subset. The judge functions it used to re-export
live in :mod:`lowres_safety.judges` (their old addresses here still work, and warn).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from jaxtyping import Float
from torch import Tensor

from ._runtime.deprecation import moved
from .data import PromptSet, tier_of
from .generation import next_token_logprobs
from .hooks import Hook
from .judges import LogitJudge, judge_frame, judge_name
from .judges.base import Judge

__all__ = ["kl_divergence", "measure_refusal", "refusal_rates", "selectivity"]

#: Names this module used to re-export, and where they live now (the old address warns once).
__getattr__ = moved(__name__, {
    **{name: "lowres_safety.judges" for name in (
        "DEFAULT_COMPLIANT_OPENINGS", "DEFAULT_OPENINGS", "REFUSAL_PHRASES", "Judge", "compliance_tokens_from",
        "first_token_ids", "refusal_log_odds", "refusal_score", "refusal_token_set", "refusal_tokens_from",
        "substring_judge")},
    **{name: "lowres_safety.utility" for name in ("load_mc", "load_mc_demo", "mc_accuracy")},
})


def _rates(frame: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Refusal rate (%) and count of the ``refused`` column per group, with the tier beside the language."""
    out = frame.groupby(list(by), sort=False)["refused"].agg(rate="mean", n="size").reset_index()
    out["rate"] *= 100
    if "language" in by:
        out.insert(list(by).index("language") + 1, "tier", out["language"].map(tier_of))
    return out


def refusal_rates(completions: pd.DataFrame, judge: Judge | None = None, *,
                  by: Sequence[str] = ("language", "subset")) -> pd.DataFrame:
    """Refusal rate (%) per group of a :func:`generation.generate` table.

    ``judge=None`` is the substring judge of each row's language; any judge of
    :mod:`judges` (per answer or batch) is accepted.
    """
    return _rates(judge_frame(completions, judge), by)


def selectivity(rates: pd.DataFrame, keys: Sequence[str] = ("language",)) -> pd.DataFrame:
    """Harmful refusal, harmless refusal and Δ = harmful − harmless (percentage points) per group."""
    wide = rates.pivot_table(index=list(keys), columns="subset", values="rate", aggfunc="first").reset_index()
    for subset in ("harmful", "harmless"):
        if subset not in wide:
            wide[subset] = np.nan
    wide = wide.rename(columns={"harmful": "harmful_refusal", "harmless": "harmless_refusal"})
    wide["selectivity"] = wide["harmful_refusal"] - wide["harmless_refusal"]
    if "language" in keys:
        wide.insert(1, "tier", wide["language"].map(tier_of))
    wide.columns.name = None
    return wide


# ---------------------------------------------------------------- utility


def kl_divergence(model, prompts: PromptSet | Sequence[str], hooks: Sequence[Hook], *, batch_size: int = 16,
                  system: str | None = None, base: Float[Tensor, "prompt vocab"] | None = None) -> Float[Tensor, " prompt"]:
    """KL(p_base ‖ p_hooked) of the next-token distribution at the first response position, per prompt.

    ``base`` reuses :func:`generation.next_token_logprobs` of the unhooked model.
    """
    if base is None:
        base = next_token_logprobs(model, prompts, (), batch_size=batch_size, system=system)
    hooked = next_token_logprobs(model, prompts, hooks, batch_size=batch_size, system=system)
    return (base.exp() * (base - hooked)).sum(-1).clamp_min(0)


def measure_refusal(model, prompts: PromptSet, completions: pd.DataFrame, *, batch_size: int = 16,
                    judge=None, logit=None, first_logprobs: Tensor | None = None) -> pd.DataFrame:
    """Refusal per language × subset by two judges: the text judge (``judge``, substring by default) and ``logit``.

    ``logit`` is a :class:`judges.LogitJudge` whose token set was learned on another split
    (:func:`judges.learn_from_prompts`); ``None`` learns it from ``completions`` themselves
    (the generated answers to ``prompts``), which fits the set to the answers it scores.
    ``first_logprobs`` (``[prompt, vocab]``, from :func:`generation.generate_scored` on
    ``prompts``) spares the logit judge its prefill pass.
    Columns: language, tier, subset, judge, rate (%), n.
    """
    text = refusal_rates(completions, judge).assign(judge=judge_name(judge))
    if logit is None:
        logit = LogitJudge.learn(completions, model.tokenizer, judge, learned_on="the scored completions",
                                 batch_size=batch_size)
    if first_logprobs is None:
        refused = logit(model, prompts, ())
    elif first_logprobs.shape[0] != len(prompts):
        raise ValueError(f"first_logprobs has {first_logprobs.shape[0]} rows for {len(prompts)} prompts")
    else:
        refused = logit.from_logprobs(first_logprobs, prompts, model.tokenizer)
    scores = _rates(prompts.frame.assign(refused=refused.astype(bool)), ("language", "subset"))
    columns = ["language", "tier", "subset", "judge", "rate", "n"]
    return pd.concat([text[columns], scores.assign(judge=logit.name)[columns]], ignore_index=True)
