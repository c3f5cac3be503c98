"""Each prompt's answer under one intervention, generated once for every method, k and seed that asks.

A steer table asks for the same intervention many times: the gate at eight budgets routes
each prompt to one of two arms (addition or ablation), addition is also a method of its
own, and a second seed refits the same direction on the same full train split. Generation
is nearly all of a run's time, so :class:`CompletionMemo` keeps, per language and arm key
(:class:`~lowres_safety.methods.base.Arms`), each prompt's completion, its refusal verdict
and, for harmless prompts, the KL of its first answer token; a method's row is assembled
from those. With ``folder`` the memo is also on disk, so an interrupted run keeps what it
generated.

A memo serves one model, one set of method settings and one evaluation set: the keys of
methods without their own :meth:`arms` name the fit by its direction, α and seed only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._runtime.files import atomic_write_text
from ..data import PromptSet
from ..evaluation import kl_divergence
from ..generation import generate, next_token_logprobs
from ..judges import for_run, judge_frame
from ..methods.base import Arms

__all__ = ["CompletionMemo", "kl_mean"]

_FIELDS = ("completion", "n_new_tokens", "refused", "kl")


@dataclass
class CompletionMemo:
    """Completions, verdicts and KL per (language, arm key, prompt id); generated on first request."""

    model: object
    max_new_tokens: int = 24
    batch_size: int = 32
    seed: int = 0
    judge: object = None  # any judge of :mod:`judges`; a logit judge is bound to each arm's hooks
    folder: Path | None = None
    generated: int = 0  # prompts generated (not read from the memo): the cost this memo did not save
    _store: dict = field(default_factory=dict, repr=False)  # (language, key) -> {id: record}
    _base: dict = field(default_factory=dict, repr=False)  # language -> {id: unhooked first-token log-probs}

    def answers(self, prompts: PromptSet, arms: Arms) -> pd.DataFrame:
        """``prompts`` (one language) with completion, n_new_tokens, refused and kl (NaN for harmful) under ``arms``."""
        languages = prompts.languages
        if len(languages) != 1:
            raise ValueError(f"answers() takes one language at a time, got {languages}")
        lang = languages[0]
        frame = prompts.frame
        missing = sorted(set(frame["id"]) - set(arms.keys.index))
        if missing:
            raise ValueError(f"the arms do not cover prompts {missing[:3]}")
        keys = arms.keys.reindex(frame["id"]).to_numpy()
        for key in dict.fromkeys(keys):
            self._fill(prompts, lang, key, arms.hooks[key], frame["id"][keys == key].tolist())
        records = [self._records(lang, key)[i] for i, key in zip(frame["id"], keys)]
        out = frame.reset_index(drop=True).assign(**{f: [r[f] for r in records] for f in _FIELDS})
        out["refused"] = out["refused"].astype(bool)
        return out

    def _fill(self, prompts: PromptSet, lang: str, key: str, hooks, ids: list[str]) -> None:
        have = self._records(lang, key)
        todo = [i for i in ids if i not in have]
        if not todo:
            return
        part = prompts.where(id=todo)
        out = generate(self.model, part, hooks, max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                       seed=self.seed, progress=False)
        refused = judge_frame(out, for_run(self.judge, self.model, hooks))["refused"].to_numpy(bool)
        kl = dict.fromkeys(todo, float("nan"))
        harmless = part.where(subset="harmless") if "harmless" in set(part.frame["subset"]) else None
        if harmless is not None:
            base = torch.stack([self._base_logprobs(prompts, lang)[i] for i in harmless.frame["id"]])
            each = kl_divergence(self.model, harmless, hooks, base=base, batch_size=self.batch_size).numpy()
            kl.update(zip(harmless.frame["id"], map(float, each)))
        for row, r in zip(out.itertuples(index=False), refused):
            have[row.id] = {"completion": row.completion, "n_new_tokens": int(row.n_new_tokens), "refused": bool(r),
                            "kl": kl[row.id]}
        self.generated += len(todo)
        if self.folder is not None:
            atomic_write_text(self._path(lang, key), json.dumps({"key": key, "records": have}, ensure_ascii=False))

    def _records(self, lang: str, key: str) -> dict:
        if (lang, key) not in self._store:
            path = self._path(lang, key) if self.folder is not None else None
            stored = json.loads(path.read_text(encoding="utf-8")) if path is not None and path.exists() else None
            self._store[lang, key] = stored["records"] if stored and stored["key"] == key else {}
        return self._store[lang, key]

    def _base_logprobs(self, prompts: PromptSet, lang: str) -> dict:
        """The unhooked model's first-token log-probs of the language's harmless prompts (KL's reference)."""
        if lang not in self._base:
            harmless = prompts.where(subset="harmless")
            logp = next_token_logprobs(self.model, harmless, batch_size=self.batch_size)
            self._base[lang] = dict(zip(harmless.frame["id"], logp))
        return self._base[lang]

    def _path(self, lang: str, key: str) -> Path:
        return Path(self.folder) / f"{lang}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def kl_mean(answers: pd.DataFrame) -> float:
    """Mean KL over the harmless prompts of an :meth:`CompletionMemo.answers` table."""
    values = answers.loc[answers["subset"] == "harmless", "kl"].to_numpy(float)
    return float(np.mean(values)) if len(values) else float("nan")
