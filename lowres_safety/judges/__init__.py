"""Refusal judges: which answers are refusals, read from the text or from the model.

One file per judge, one shape for all that read answers (:class:`BatchJudge`,
``(prompts, completions, languages) -> list[bool]``):

- :mod:`.substring` — refusal phrases of each language where a refusal says them;
- :mod:`.logit` — the log-odds of the model's refusal-opening tokens at the first answer
  position (reads the model, so it is bound to a model and hooks per run);
- :mod:`.model` — any local Hugging Face causal LM or sequence classifier, batched and cached.

:data:`JUDGES` maps the names the ``--judge`` option takes to factories of one shape,
``make(logit) -> judge`` (``logit``: the :class:`LogitJudge` learned on another split, if
any); :func:`resolve` turns a name or a model folder into a judge. A new judge is a new
file and one line in :data:`JUDGES`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .base import BatchJudge, Judge, Memo, PairJudge, as_batch, for_run, judge_frame, judge_name
from .logit import (
    DEFAULT_COMPLIANT_OPENINGS,
    DEFAULT_OPENINGS,
    LogitJudge,
    compliance_tokens_from,
    first_token_ids,
    learn_from_prompts,
    other_split_prompts,
    per_class,
    refusal_log_odds,
    refusal_score,
    refusal_token_set,
    refusal_tokens_from,
)
from .model import ModelJudge
from .substring import REFUSAL_PHRASES, SubstringJudge, substring_judge

__all__ = ["DEFAULT_COMPLIANT_OPENINGS", "DEFAULT_OPENINGS", "JUDGES", "REFUSAL_PHRASES", "BatchJudge", "Judge",
           "LogitJudge", "Memo", "ModelJudge", "PairJudge", "SubstringJudge", "as_batch", "compliance_tokens_from",
           "first_token_ids", "for_run", "judge_frame", "judge_name", "learn_from_prompts", "other_split_prompts",
           "per_class", "refusal_log_odds", "refusal_score", "refusal_token_set", "refusal_tokens_from", "resolve",
           "substring_judge"]

#: ``--judge`` names → ``make(logit)``, ``logit`` being the logit judge learned on another split (or None).
JUDGES: dict[str, Callable[[LogitJudge | None], object]] = {
    "substring": lambda logit: SubstringJudge(),
    "logit": lambda logit: logit if logit is not None else LogitJudge(),
}


def resolve(spec, *, logit: LogitJudge | None = None):
    """A judge from ``spec``: a name in :data:`JUDGES`, a folder holding a Hugging Face model, or a judge as is.

    ``logit`` is the logit judge to use for ``"logit"`` (its token set learned on another split).
    """
    if spec is None or not isinstance(spec, (str, Path)):
        return spec
    if str(spec) in JUDGES:
        return JUDGES[str(spec)](logit)
    if Path(spec).is_dir():
        return ModelJudge(spec)
    raise ValueError(f"unknown judge {str(spec)!r}: give one of {sorted(JUDGES)} or the folder of a local "
                     "Hugging Face causal LM or sequence classifier")
