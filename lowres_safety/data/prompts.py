"""The prompt set: one row per prompt, parallel across languages by source id.

A :class:`PromptSet` is one row per prompt (``id, text, language, subset, split,
source_id``, and optionally ``origin``: which file or set a row came from). ``source_id``
is shared by the translations of one English original, so prompts are parallel across
languages and paired metrics (English refuses, Swahili complies) can be computed.
Sampling (:func:`sample_sources`) picks the same source ids in every language; a language
whose ids meet no other language's (an unpaired file, see :mod:`~lowres_safety.data.parallel`)
is sampled on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["COLUMNS", "OPTIONAL_COLUMNS", "SUBSETS", "PromptSet", "as_list", "check_languages", "finish", "sample_sources"]

SUBSETS = ("harmful", "harmless")
COLUMNS = ["id", "text", "language", "subset", "split", "source_id"]
OPTIONAL_COLUMNS = ["origin", "category"]  # kept by the loaders when present


def as_list(value) -> list | None:
    if value is None:
        return None
    return [value] if isinstance(value, str) else list(value)


@dataclass(frozen=True)
class PromptSet:
    """Prompts with their metadata; ``frame`` has the columns in :data:`COLUMNS`."""

    frame: pd.DataFrame
    origin: str = ""

    def __post_init__(self):
        missing = set(COLUMNS) - set(self.frame.columns)
        if missing:
            raise ValueError(f"PromptSet frame lacks columns {sorted(missing)}")
        bad = set(self.frame["subset"]) - set(SUBSETS)
        if bad:
            raise ValueError(f"unknown subset(s) {sorted(bad)}; use {SUBSETS}")

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def texts(self) -> list[str]:
        return self.frame["text"].tolist()

    @property
    def languages(self) -> list[str]:
        """Languages in order of first appearance."""
        return list(dict.fromkeys(self.frame["language"]))

    @property
    def labels(self) -> np.ndarray:
        """1 for harmful, 0 for harmless."""
        return (self.frame["subset"] == "harmful").to_numpy(dtype=np.int64)

    def mask(self, **filters) -> np.ndarray:
        """Boolean row mask for column filters (a value or a list of values per column)."""
        keep = np.ones(len(self), dtype=bool)
        for column, value in filters.items():
            if value is None:
                continue
            if column not in self.frame.columns:
                raise ValueError(f"cannot filter on {column!r}; columns are {list(self.frame.columns)}")
            keep &= self.frame[column].isin(as_list(value)).to_numpy()
        return keep

    def where(self, **filters) -> PromptSet:
        """Rows matching every filter, e.g. ``where(language=["sw", "yo"], subset="harmful")``."""
        rows = self.frame[self.mask(**filters)].reset_index(drop=True)
        return PromptSet(rows, self.origin)

    def require(self, **filters) -> PromptSet:
        """Like :meth:`where`, but an empty result is an error that says what exists."""
        out = self.where(**filters)
        if len(out) == 0:
            described = ", ".join(f"{k}={v!r}" for k, v in filters.items() if v is not None)
            raise ValueError(
                f"no prompts with {described} in {self.origin or 'this prompt set'}; "
                f"languages: {self.languages}, subsets: {sorted(set(self.frame['subset']))}, "
                f"splits: {sorted(set(self.frame['split']))}"
            )
        return out

    @classmethod
    def concat(cls, sets: Iterable[PromptSet]) -> PromptSet:
        sets = list(sets)
        frame = pd.concat([s.frame for s in sets], ignore_index=True)
        return cls(frame, " + ".join(dict.fromkeys(s.origin for s in sets)))


def language_seed(seed: int, language: str) -> int:
    """A draw seed of its own per language, as the released code draws each language's examples
    (``scripts/routing_refusal/compute_adapted_adasteer_vectors.py::sample_budget_prompts``: seed + Σ ord)."""
    return int(seed) + sum(map(ord, str(language)))


def sample_sources(frame: pd.DataFrame, n_per_class: int | None, seed: int, origin: str) -> pd.DataFrame:
    """Keep the same ``n_per_class`` source ids per subset in every language (parallel prompts)."""
    if n_per_class is None:
        return frame
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be at least 1, got {n_per_class}")
    rng = np.random.default_rng(seed)
    keep = []
    for subset in SUBSETS:
        part = frame[frame["subset"] == subset]
        if part.empty:
            continue
        per_lang = part.groupby("language")["source_id"].apply(set)
        paired = paired_languages(per_lang)
        common = sorted(set.intersection(*per_lang[paired]))
        if len(common) < n_per_class:
            raise ValueError(
                f"n_per_class={n_per_class} but only {len(common)} {subset} prompts are present in "
                f"every requested language of {origin}; ask for fewer"
            )
        keep += list(rng.choice(common, size=n_per_class, replace=False))
        for lang in [lang for lang in per_lang.index if lang not in paired]:  # unpaired: its own sample
            own = sorted(per_lang[lang])
            if len(own) < n_per_class:
                raise ValueError(f"n_per_class={n_per_class} but {lang!r} has only {len(own)} {subset} prompts "
                                 f"in {origin}; ask for fewer")
            keep += list(rng.choice(own, size=n_per_class, replace=False))
    order = {sid: i for i, sid in enumerate(keep)}
    out = frame[frame["source_id"].isin(order)].copy()
    out["_order"] = out["source_id"].map(order)
    return out.sort_values(["language", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)


def paired_languages(per_lang: pd.Series) -> list[str]:
    """Languages whose source ids meet another language's (or the first, if none do)."""
    counts = pd.Series([sid for ids in per_lang for sid in ids]).value_counts()
    shared = set(counts.index[counts > 1])
    paired = [lang for lang, ids in per_lang.items() if ids & shared]
    return paired or [per_lang.index[0]]


def check_languages(requested, available: list[str], origin: str) -> list[str]:
    if requested is None:
        return available
    requested = as_list(requested)
    unknown = [lang for lang in requested if lang not in available]
    if unknown:
        raise ValueError(f"language(s) {unknown} not in {origin}; available: {available}")
    if not requested:
        raise ValueError("languages is empty; name at least one language")
    return requested


def finish(frame: pd.DataFrame, languages: list[str], n_per_class, seed, origin) -> PromptSet:
    frame = frame[frame["language"].isin(languages)]
    frame = frame[frame["text"].str.strip().astype(bool)]
    for lang in languages:
        for subset in SUBSETS:
            if not ((frame["language"] == lang) & (frame["subset"] == subset)).any():
                raise ValueError(f"language {lang!r} has no {subset} prompts in {origin}")
    frame = sample_sources(frame, n_per_class, seed, origin)
    order = {lang: i for i, lang in enumerate(languages)}
    frame = frame.sort_values("language", key=lambda c: c.map(order), kind="stable").reset_index(drop=True)
    return PromptSet(frame[COLUMNS + [c for c in OPTIONAL_COLUMNS if c in frame.columns]], origin)


