"""Train, val and test prompts in one set: what the paper's analyses fit, threshold and score on.

The released analyses fit on each language's train split, set thresholds on val and score on
test. PolyRefuse has the three; the natural set has train and test halves, so a quarter of
its train half becomes val (every fourth prompt of each language and class).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from .loaders import is_polyrefuse, load_builtin, load_polyrefuse, polyrefuse_files
from .prompts import PromptSet, sample_sources

__all__ = ["analysis_splits", "has_analysis_splits"]


def has_analysis_splits(data) -> bool:
    """Whether ``data`` has train and test prompts: a PolyRefuse folder or the natural set."""
    return str(data) == "natural" or is_polyrefuse(str(data))


def analysis_splits(data, languages: Sequence[str] | None = None, *, n_per_class: int | None = None,
                    seed: int = 0) -> PromptSet:
    """``data``'s train, val and test prompts: ``n_per_class`` per class, language and split (the same source ids
    in every language; all of a split that has fewer), or all.

    A PolyRefuse folder keeps its splits (a split a language lacks either class of is left out for
    it); the natural set's train half gives up every fourth prompt per language and class to val.
    """
    if not has_analysis_splits(data):
        raise ValueError(f"the paper's analyses need train and test prompts: a PolyRefuse folder or 'natural', "
                         f"not {data!r}")
    if str(data) == "natural":
        train = load_builtin(languages, name="natural", split="train")
        frame = train.frame.copy()
        frame.loc[frame.groupby(["language", "subset"]).cumcount() % 4 == 0, "split"] = "val"
        parts = [PromptSet(frame, train.origin + " (a quarter as val)"),
                 load_builtin(languages, name="natural", split="test")]
    else:
        parts = []
        for split in ("train", "val", "test"):
            files = polyrefuse_files(Path(data), split)
            have = {lang for lang, _ in files if {(lang, "harmful"), (lang, "harmless")} <= set(files)}
            keep = [lang for lang in (languages or sorted(have)) if lang in have]
            if keep:
                parts.append(load_polyrefuse(data, keep, split=split))
    origin = " + ".join(dict.fromkeys(p.origin for p in parts))
    frame = pd.concat([p.frame for p in parts], ignore_index=True)
    groups = frame.groupby(["split", "subset"], sort=False)
    kept = pd.concat([_at_most(part, n_per_class, seed, origin) for _, part in groups])
    rank = {lang: i for i, lang in enumerate(dict.fromkeys(frame["language"]))}  # the languages as asked for
    kept = kept.assign(_order=kept["language"].map(rank)).sort_values("_order", kind="stable")
    return PromptSet(kept.drop(columns="_order").reset_index(drop=True), origin)


def _at_most(frame: pd.DataFrame, n_per_class: int | None, seed: int, origin: str) -> pd.DataFrame:
    """The same ``n_per_class`` source ids in every language of one split and class, or all where it has fewer
    (PolyRefuse's val has 39 harmful prompts a language)."""
    if n_per_class is None:
        return frame
    return sample_sources(frame, min(n_per_class, int(frame.groupby("language").size().min())), seed, origin)
