"""The fix, end to end: fit every method on source languages, then score it per target language.

:func:`fit_methods` builds, from high-resource activations, the refusal direction at the
steering layer, the paper's default strength α, and every intervention method of
:mod:`lowres_safety.methods` (no intervention, ablation, addition, AdaSteer, CAST, the
routed gate), each an object that returns hooks for one target language.
:func:`evaluate` loops over methods and their variants (the gate's k, AdaSteer's and
CAST's zero-shot and adapted fits), generates, and returns one row per language ×
method × k with harmful and harmless refusal, selectivity Δ, KL and each method's extras.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from .. import directions as dirs
from .. import hooks as H
from .._runtime.files import atomic_write
from ..activations import ActivationSet, extract
from ..data import SUBSETS, PromptSet, tier_of
from ..gate import Gate
from ..generation import as_prompt_set
from ..judges import Judge
from ..methods import METHODS, Context, Method, Target
from ..methods.base import arms_of, digest
from ..presets import Preset
from ..probing import choose_layer
from ..utility import mc_prompt, mc_scores, mc_summary
from .memo import CompletionMemo, kl_mean

__all__ = ["FittedMethods", "category_column", "category_of", "config_key", "evaluate", "fit_methods"]


@dataclass(frozen=True)
class FittedMethods:
    """Every method fitted on the source languages at one layer, with the shared settings."""

    context: Context
    methods: dict[str, Method]  # name -> fitted method, in table order

    @property
    def layer(self) -> int:
        return self.context.layer

    @property
    def alpha(self) -> float:
        return self.context.alpha

    @property
    def direction(self) -> torch.Tensor:
        return self.context.direction

    @property
    def gate(self) -> Gate | None:
        routing = self.methods.get("gate")
        return getattr(routing, "gate", None)


def fit_methods(model, acts: ActivationSet, source_languages, *, layer: int | None = None,
                position: str = "t_post_inst", lam: float = 1.0, seed: int = 0, scope: str = "from_last",
                ablation: str = "gate_layer", recalibration: str = "paper", methods=None,
                preset: Preset | None = None, adaptation: ActivationSet | None = None,
                upstream: dict | None = None) -> FittedMethods:
    """Direction, α (λ·(q75 harmful − q25 harmless)) and every method, fitted on the source data.

    ``acts`` holds the source (and possibly other) languages at ``t_post_inst`` and every
    layer the methods read (AdaSteer reads all of them). ``layer=None`` takes the
    ``preset``'s gate layer where there is one, else :func:`choose_layer`. ``scope`` is
    where addition and the gate add α·v̂; ``ablation`` where the gate ablates
    (:data:`hooks.ABLATIONS`); ``methods`` are classes of the :mod:`methods` shape (default: every one).
    ``adaptation`` (every layer, ``t_post_inst``) holds the adapted baselines' examples, pooled
    over the low-resource languages as released (:func:`steer_prompts.adaptation_pool`); None
    builds each target's from its own pool. ``upstream`` maps a method's name to its authors'
    files where the user has them (``{"adasteer": "vectors/<model>"}``).
    """
    methods = tuple(METHODS.values()) if methods is None else methods
    H.check_scope(scope)
    n_layers = model.cfg.n_layers
    source_languages = [lang for lang in source_languages if lang in acts.prompts.languages]
    if not source_languages:
        raise ValueError(f"no source language in the activations ({acts.prompts.languages})")
    if layer is None:
        layer = preset.gate_layer if preset else choose_layer(acts, source_languages, position, n_layers=n_layers)
    src = acts.where(language=source_languages)
    li, pi = src.layer_index(layer), src.position_index(position)
    v = dirs.unit(dirs.pooled(src)[li, pi])
    ctx = Context(model=model, acts=src, layer=layer, direction=v, alpha=H.default_alpha(src, v, layer, position, lam),
                  n_layers=n_layers, strength=lam, scope=scope, ablation=ablation, recalibration=recalibration,
                  seed=seed, preset=preset, adaptation=adaptation, upstream=dict(upstream or {}))
    return FittedMethods(ctx, {m.name: m.fit(ctx) for m in methods})


def _part_path(folder: Path | None, language: str, method: str, k: int) -> Path | None:
    return None if folder is None else folder / f"{language}-{method}-k{k}.json"


def evaluate(model, fitted: FittedMethods, eval_prompts: PromptSet, eval_acts: ActivationSet,
             calib_acts: ActivationSet, *, ks=(0, 1, 2, 4), max_new_tokens: int = 24, batch_size: int = 32,
             seed: int = 0, judge: Judge | None = None, parts: str | Path | None = None,
             mc: pd.DataFrame | None = None, tune: PromptSet | None = None,
             memo: CompletionMemo | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Generate under every fitted method and variant for every language of ``eval_prompts``.

    ``calib_acts`` holds the target languages' calibration pool (disjoint from the
    evaluation prompts): the gate at ``k > 0`` recalibrates on ``k`` of them per class,
    adapted AdaSteer and CAST rebuild their vectors from 32. ``parts`` is a folder where
    each finished language × method × k is stored, so an interrupted run resumes.
    ``judge`` is any judge of :mod:`judges` (substring by default); the logit judge scores
    each prompt under the method's hooks.
    ``mc`` are multiple-choice items (:func:`utility.load_mc`): each row then also has
    ``mc_accuracy``, the % of that language's items answered right under the method's
    hooks (NaN where ``mc`` has none in that language), ``mc_margin`` and ``mc_entropy``
    (:func:`utility.mc_summary`), for the gate ``mc_gate_fire_rate``, and where the items carry a
    ``subject_category`` (Global-MMLU's), ``mc_accuracy[<category>]`` per category.
    ``tune`` are prompts a method may tune on per target (adapted CAST: the targets' val split).
    ``memo`` keeps each prompt's answer per intervention (:class:`CompletionMemo`; one is
    made here when None): the gate's budgets share its two arms with each other and with
    addition, and a memo passed to several calls (seeds) shares what their fits have in common.
    Rows: language, tier, method, k, harmful_refusal, harmless_refusal, selectivity, kl, (kl_ablated,)
    (mc_accuracy,) plus each method's extras (e.g. ``gate_balanced_accuracy``).
    """
    folder = Path(parts) if parts else None
    memo = memo or CompletionMemo(model, max_new_tokens, batch_size, seed, judge)
    if (memo.max_new_tokens, memo.judge) != (max_new_tokens, judge):
        raise ValueError("the memo was made for another max_new_tokens or judge than this evaluation's")
    run = digest(fitted.direction, float(fitted.alpha), seed)  # names the arms of methods without their own
    plan = [(lang, name, k) for lang in eval_prompts.languages for name, m in fitted.methods.items()
            for k in m.variants(tuple(ks))]
    rows, texts = [], []
    bar = tqdm(plan, desc="steer", unit="run")
    for lang, name, k in bar:
        bar.set_postfix_str(f"{lang} {name} k={k}")
        path = _part_path(folder, lang, name, k)
        if path is not None and path.exists():
            stored = json.loads(path.read_text(encoding="utf-8"))
            rows.append(stored["row"])
            texts.append(pd.DataFrame(stored["completions"]))
            continue
        prompts = eval_prompts.where(language=lang)
        own = tune.where(language=lang) if tune is not None and lang in tune.languages else None
        target = Target(lang, calib_acts.where(language=lang), eval_acts.where(language=lang), own)
        method = fitted.methods[name]
        arms = arms_of(method, target, k, run)
        out = memo.answers(prompts, arms)
        if arms.columns is not None:
            out = out.join(arms.columns, on="id")
        utility = {} if mc is None else _mc_columns(model, mc, lang, method, target, k, batch_size)
        harmful, harmless = (100 * float(out.loc[out["subset"] == s, "refused"].mean()) for s in SUBSETS)
        row = {"language": lang, "tier": tier_of(lang), "method": name, "k": k, "harmful_refusal": harmful,
               "harmless_refusal": harmless, "selectivity": harmful - harmless, "kl": kl_mean(out),
               **_kl_ablated(out), **utility, **method.extras(target, k)}
        out = out.assign(method=name, k=k)
        keep = [c for c in ("id", "language", "subset", "source_id", "method", "k", "completion", "n_new_tokens",
                            "refused", "gate_score", "alpha", "ablated") if c in out]
        if path is not None:
            payload = {"row": row, "completions": out[keep].to_dict(orient="list")}
            atomic_write(path, lambda tmp, payload=payload: Path(tmp).write_text(json.dumps(payload, ensure_ascii=False),
                                                                             "utf-8"))
        rows.append(row)
        texts.append(out[keep])
    return pd.DataFrame(rows), pd.concat(texts, ignore_index=True)


def _kl_ablated(out: pd.DataFrame) -> dict:
    """For routed methods, ``kl_ablated``: the KL over harmless prompts routed to ablation only, the cost of the
    intervention itself; ``kl`` also counts harmless prompts misrouted to refusal, the gate's errors."""
    if "ablated" not in out:
        return {}
    routed = out[(out["subset"] == "harmless") & out["ablated"].astype(bool)]
    return {"kl_ablated": float(routed["kl"].mean()) if len(routed) else float("nan")}


def _mc_columns(model, items: pd.DataFrame, language: str, method, target: Target, k: int, batch_size: int) -> dict:
    """The row's utility on ``language``'s items under the method's hooks: accuracy (%), mean margin and entropy,
    and for a method that routes by a gate, the share (%) of items it sends to refusal; NaN where there are none."""
    own = items[items["language"] == language]
    if not len(own):
        return {"mc_accuracy": float("nan")}
    scores = mc_scores(model, own, method.hooks(target, k), batch_size=batch_size)
    fired = None
    if hasattr(method, "gate_for"):  # the released evaluation's gate_fire_rate: the gate on the unsteered pass
        gate = method.gate_for(target, k)
        prompts = as_prompt_set([mc_prompt(row) for row in own.to_dict("records")])
        at = extract(model, prompts, [gate.layer_], (gate.position_,), progress=False)
        fired = gate.predict(at).numpy()
    summary = mc_summary(scores, fired)
    every = summary.iloc[0]
    return {"mc_accuracy": float(every["accuracy"]), "mc_margin": float(every["mean_margin"]),
            "mc_entropy": float(every["mean_entropy"]),
            **({"mc_gate_fire_rate": float(every["gate_fire_rate"])} if fired is not None else {}),
            **{category_column(c): float(a) for c, a in zip(summary["subject_category"][1:], summary["accuracy"][1:],
                                                            strict=True)}}


def category_column(category: str) -> str:
    """The steer table's column of one subject category's accuracy: ``mc_accuracy[STEM]``."""
    return f"mc_accuracy[{category}]"


def category_of(column: str) -> str | None:
    """The subject category a :func:`category_column` holds (``STEM``), or None for any other column."""
    return column.removeprefix("mc_accuracy[").removesuffix("]") if re.fullmatch(r"mc_accuracy\[.*\]", column) \
        else None


def config_key(config: dict) -> str:
    """Short hash of a run's settings, naming its folder of finished parts."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
