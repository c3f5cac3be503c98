"""The ``steer`` command's prompts: methods fit on one set, are scored on another, recalibrate on a third.

Disjoint by source id wherever two come from the same split, so no scored prompt is ever a fit
or calibration example.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .. import data as data_mod
from ..data.loaders import polyrefuse_files
from ..data.prompt_files import FileOptions, is_prompt_file, open_prompts

__all__ = ["adaptation_pool", "calibration_pool", "fit_and_evaluation", "split_sizes", "tuning_prompts"]


def fit_and_evaluation(data: str, languages, source, n_per_class: int | None, n_fit: int | None, split: str,
                       seed: int, files: FileOptions | None = None):
    """(fit prompts, evaluation prompts): disjoint source ids; builtin or a file is split in halves by source id.

    ``n_fit`` / ``n_per_class`` None: every prompt of the train / evaluation split (of its half).
    """
    if str(data) == "natural":  # its own halves: fit on train, score test
        fit = data_mod.load_builtin(list(dict.fromkeys(source + languages)), name="natural", split="train")
        return fit, data_mod.load_builtin(languages, name="natural", split="test", n_per_class=n_per_class, seed=seed)
    if data_mod.is_builtin(data) or is_prompt_file(data):
        every = open_prompts(data, sorted(set(languages) | set(source), key=(languages + source).index), split=split,
                             files=files)
        rng = np.random.default_rng(seed)
        fit_ids = set()
        for subset in data_mod.SUBSETS:
            own = sorted(set(every.frame[every.frame["subset"] == subset]["source_id"]))
            fit_ids |= set(rng.choice(own, size=len(own) // 2, replace=False))
        fit = data_mod.PromptSet(every.frame[every.frame["source_id"].isin(fit_ids)].reset_index(drop=True),
                                 every.origin + " (fit half)")
        rest = every.frame[~every.frame["source_id"].isin(fit_ids) & every.frame["language"].isin(languages)]
        evaluation = data_mod.PromptSet(rest.reset_index(drop=True), every.origin + " (evaluation half)")
        n_have = int(min(evaluation.frame.groupby(["language", "subset"]).size()))
        if n_per_class is None:
            return fit, evaluation
        if n_per_class > n_have:
            raise ValueError(f"{every.origin} leaves {n_have} evaluation prompts per class; ask for at most that")
        keep = evaluation.frame.groupby(["language", "subset"], sort=False).head(n_per_class)
        return fit, data_mod.PromptSet(keep.reset_index(drop=True), evaluation.origin)
    if split == "train":
        raise ValueError("evaluate on 'val' or 'test': the train split fits the methods")
    fit = data_mod.load_polyrefuse(data, list(dict.fromkeys(source + languages)), split="train",
                                   n_per_class=n_fit, seed=seed)
    return fit, data_mod.load_polyrefuse(data, languages, split=split, n_per_class=n_per_class, seed=seed)


def calibration_pool(data: str, languages, n_fit: int, pool_split: str, seed: int,
                     evaluation: data_mod.PromptSet) -> data_mod.PromptSet:
    """``--calibrate-on val|split``: the targets' calibration pool, ``n_fit`` source ids per class from
    PolyRefuse's ``pool_split``; from the evaluation split itself only ids that are not evaluated."""
    every = data_mod.load_polyrefuse(data, languages, split=pool_split, seed=seed)
    rest = every.frame
    if pool_split in set(evaluation.frame["split"]):
        rest = rest[~rest["source_id"].isin(set(evaluation.frame["source_id"]))]
    pool = data_mod.sample_sources(rest.reset_index(drop=True), n_fit, seed + 1, every.origin)
    return data_mod.PromptSet(pool.reset_index(drop=True), every.origin + f" (calibration pool, {pool_split})")


def adaptation_pool(data: str, fit: data_mod.PromptSet, k: int, seed: int) -> data_mod.PromptSet | None:
    """Adapted AdaSteer's and CAST's examples: ``k`` per class from each low-resource language, pooled.

    As the released code (``compute_adapted_adasteer_vectors.py::sample_budget_prompts``,
    ``run_cast_steering.py``): PolyRefuse's train split in every low-resource language the
    folder has, each language drawn with its own seed (:func:`data.language_seed`), one set
    for every target; with the built-in set or a file, the fit half's low-resource languages.
    None where the data have no low-resource language (the methods then use each target's pool).
    """
    if data_mod.is_builtin(data) or is_prompt_file(data):
        low = data_mod.in_tier(fit.languages, "low")
        return fit.where(language=low) if low else None
    have = sorted({lang for lang, _ in polyrefuse_files(Path(data), "train")})
    low = data_mod.in_tier(have, "low")
    if not low:
        return None
    each = [data_mod.load_polyrefuse(data, [lang], split="train", n_per_class=k, seed=data_mod.language_seed(seed, lang))
            for lang in low]
    frame = pd.concat([p.frame for p in each], ignore_index=True)
    return data_mod.PromptSet(frame, each[0].origin + f" ({k} per class of each of {', '.join(low)})")


def tuning_prompts(data: str, languages, evaluation: data_mod.PromptSet) -> data_mod.PromptSet | None:
    """Each target's val split, where adapted CAST tunes its condition (``tune_split: val``); None off PolyRefuse.

    Prompts that are also evaluated (``--split val``) are left out.
    """
    if data_mod.is_builtin(data) or is_prompt_file(data):
        return None
    val = data_mod.load_polyrefuse(data, languages, split="val")
    keep = val.frame[~val.frame["id"].isin(set(evaluation.frame["id"]))]
    return data_mod.PromptSet(keep.reset_index(drop=True), val.origin + " (CAST tuning)")


def split_sizes(data: str, languages, source, split: str, files: FileOptions | None = None) -> tuple[int, tuple[int, int]]:
    """(evaluation prompts per language, (fit prompts, of them in the source languages)) at full splits."""
    fit, evaluation = fit_and_evaluation(data, list(languages), list(source), None, None, split, 0, files)
    per_language = len(evaluation) // max(len(evaluation.languages), 1)
    return per_language, (len(fit), len(fit.where(language=[lang for lang in source if lang in fit.languages])))
