"""Interventional cross-lingual transfer: does language A's direction move language B's refusal?

Separability (``probing.transfer_matrix``) says whether A's direction *reads* harmfulness
in B; this matrix says whether the model *acts* through it in B. For each source A
(its direction r_A) and target B it measures, on B's prompts:

- harmful refusal with r̂_A ablated at every layer (block input, attention output and
  MLP output, every position including generated tokens: :func:`hooks.ablate` over
  ``range(n_layers)``), beside B's unhooked harmful refusal (``drop`` = baseline − ablated);
- harmless refusal with r_A added at A's layer at every position (α = ‖r_A‖ by default,
  i.e. the raw direction with coefficient 1), beside B's unhooked harmless refusal.

This matrix is this toolkit's **analogue** of PolyRefuse's experiment, not the released
one: it ablates alone on harmful prompts and adds alone on harmless prompts, so the two
effects are read apart. :func:`released_transfer` is the experiment as released (Wang et
al. 2025, mainlp/Multilingual-Refusal ``scripts/multi_test.py``): on each target's
*harmful* prompts, r̂_A ablated at every layer (block inputs, attention and MLP outputs,
every position) **and** the raw r_A (``cfg.addact_coeff`` = 1) added at the input of A's
block, every position; the generated text judged. One study found that ablating the
English direction had no effect on refusal in some low-resource languages while each
language's own direction did: the diagonal of this matrix moves and the English row
does not. Another world is one shared direction, where every row moves every column.
The matrix tells which world a model is in.

Our addition goes to ``blocks.{layer}.hook_resid_post`` (``site=``), the output of block
``layer`` = the input of block layer + 1, where ``activations.extract`` reads the
direction. Judges differ from PolyRefuse's (WildGuard and substring matching on
Google-translated responses): here a :class:`LogitJudge` (refusal-token log-odds > 0 at
the first response position, one prefill pass; the cheap default; defined in
:mod:`judges.logit`) or a :class:`GenerationJudge` (greedy generation, then the
substring judge in the prompt's language plus English, or any judge of :mod:`judges`).
Any callable ``measure(model, prompts, hooks) -> per-prompt refusal in [0, 1]`` can be
passed instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from . import hooks as H
from .data import PromptSet, tier_of
from .generation import generate
from .judges import for_run, judge_frame
from .judges.logit import LogitJudge  # re-exported: it was defined here first

__all__ = ["GenerationJudge", "LogitJudge", "Measure", "interventional_transfer", "released_transfer"]

#: ``measure(model, prompts, hooks)`` → refusal of each prompt in [0, 1] (1 = refused).
Measure = Callable[..., np.ndarray]


@dataclass(frozen=True)
class GenerationJudge:
    """Refused when the greedy completion is judged a refusal (``judge=None``: substring judge of the prompt's language).

    ``judge`` is any judge of :mod:`judges` (per answer or batch; the logit judge is bound to the hooks).
    """

    judge: object = None
    max_new_tokens: int = 64
    batch_size: int = 16
    name: str = "generation"

    def __call__(self, model, prompts: PromptSet, hooks: Sequence[H.Hook]) -> np.ndarray:
        completions = generate(model, prompts, hooks, max_new_tokens=self.max_new_tokens,
                               batch_size=self.batch_size, progress=False)
        return judge_frame(completions, for_run(self.judge, model, hooks))["refused"].to_numpy(float)


# ---------------------------------------------------------------- checks


def _directions(directions: Mapping[str, Tensor], d_model: int) -> dict[str, Tensor]:
    if not directions:
        raise ValueError("no source directions given; pass {language: [d_model] direction}")
    out = {}
    for lang, r in directions.items():
        r = torch.as_tensor(r).detach().float().cpu()
        if r.ndim != 1 or r.shape[0] != d_model:
            raise ValueError(f"direction of source {lang!r} has shape {tuple(r.shape)}; this model has "
                             f"d_model={d_model}, so it must be [{d_model}] (index one layer and position)")
        if not (torch.isfinite(r).all() and r.norm() > 0):
            raise ValueError(f"direction of source {lang!r} is zero or not finite")
        out[lang] = r
    return out


def _layers(layer: int | Mapping[str, int], sources: Sequence[str], n_layers: int) -> dict[str, int]:
    per = {s: layer for s in sources} if isinstance(layer, (int, np.integer)) else dict(layer)
    missing = [s for s in sources if s not in per]
    if missing:
        raise ValueError(f"no addition layer for source(s) {missing}; give layer as an int or a dict for every source")
    bad = {s: per[s] for s in sources if not 0 <= int(per[s]) < n_layers}
    if bad:
        raise ValueError(f"addition layer(s) {bad} outside this model's 0..{n_layers - 1}")
    return {s: int(per[s]) for s in sources}


def _targets(prompts: PromptSet, targets: Sequence[str] | None) -> list[str]:
    targets = list(targets) if targets is not None else prompts.languages
    if not targets:
        raise ValueError("no target languages: the prompt set is empty")
    for lang in targets:
        for subset in ("harmful", "harmless"):
            if not prompts.mask(language=lang, subset=subset).any():
                raise ValueError(f"target language {lang!r} has no {subset} prompts in "
                                 f"{prompts.origin or 'the prompt set'}; languages there: {prompts.languages}")
    return targets


# ---------------------------------------------------------------- the matrix


def _rates(measure: Measure, model, prompts: PromptSet, points: list[list[H.Hook]], progress: bool
           ) -> list[dict[str, float]]:
    """Refusal rate (%) per language of ``prompts`` under each point's hooks.

    A measure with a ``grid(model, prompts, points, position_wise=, progress=)`` method
    (:class:`LogitJudge`) scores all points at once, sharing what they share
    (:func:`grid.next_token_grid`: the prompts' common opening runs once per point, an
    addition at layer L reuses the blocks below L); any other measure is called once per point.
    """
    grid = getattr(measure, "grid", None)
    refused = (np.asarray(grid(model, prompts, points, position_wise=True, progress=progress), dtype=float)
               if grid is not None
               else np.stack([np.asarray(measure(model, prompts, point), dtype=float)
                              for point in tqdm(points, desc="transfer", unit="point", disable=not progress)]))
    if refused.shape != (len(points), len(prompts)):
        raise ValueError(f"the measure returned shape {refused.shape[1:]} per point; it must give one value per "
                         f"prompt ({len(prompts)})")
    language = prompts.frame["language"].to_numpy()
    return [pd.Series(r * 100, index=language).groupby(level=0).mean().to_dict() for r in refused]


def interventional_transfer(
    model,
    prompts: PromptSet,
    directions: Mapping[str, Float[Tensor, " d_model"]],
    layer: int | Mapping[str, int],
    *,
    measure: Measure | None = None,
    alpha: float | None = None,
    targets: Sequence[str] | None = None,
    site: str = "hook_resid_post",
    progress: bool = True,
) -> pd.DataFrame:
    """Source × target refusal under ablation of / addition along each source's direction.

    ``directions``: source language → raw direction ``[d_model]`` (e.g. a
    :class:`selection.Selection`'s ``direction``); ``layer``: where each source's direction
    is added (one int, or source → layer). ``alpha=None`` adds the raw direction (α =
    ‖r_A‖ along r̂_A, PolyRefuse's coefficient 1), a float adds α r̂_A. ``measure``
    defaults to :class:`LogitJudge`. ``targets`` defaults to every language of ``prompts``;
    each needs harmful and harmless prompts.

    One row per source × target: source, target, tier_source, tier_target, layer, alpha,
    judge, baseline_harmful_refusal, ablated_harmful_refusal, drop,
    baseline_harmless_refusal, added_harmless_refusal, n_harmful, n_harmless (rates in %).
    """
    if alpha is not None and not math.isfinite(alpha):
        raise ValueError(f"alpha must be finite or None (the raw norm), got {alpha}")
    measure = measure if measure is not None else LogitJudge()
    dirs = _directions(directions, model.cfg.d_model)
    n_layers = model.cfg.n_layers
    layers = _layers(layer, list(dirs), n_layers)
    targets = _targets(prompts, targets)
    harmful = prompts.where(language=targets, subset="harmful")
    harmless = prompts.where(language=targets, subset="harmless")
    alphas = {source: float(r.norm()) if alpha is None else float(alpha) for source, r in dirs.items()}
    base_harmful, *ablated_by = _rates(measure, model, harmful,
                                       [[], *(H.ablate(r, range(n_layers)) for r in dirs.values())], progress)
    base_harmless, *added_by = _rates(measure, model, harmless, [[], *(
        H.add(r, alphas[source], layers[source], site=site, scope="all") for source, r in dirs.items())], progress)
    counts = prompts.where(language=targets).frame.groupby(["language", "subset"]).size()
    rows = []
    for source, ablated, added in zip(dirs, ablated_by, added_by):
        a = alphas[source]
        for target in targets:
            rows.append({
                "source": source, "target": target, "tier_source": tier_of(source), "tier_target": tier_of(target),
                "layer": layers[source], "alpha": a, "judge": getattr(measure, "name", "custom"),
                "baseline_harmful_refusal": base_harmful[target], "ablated_harmful_refusal": ablated[target],
                "drop": base_harmful[target] - ablated[target],
                "baseline_harmless_refusal": base_harmless[target], "added_harmless_refusal": added[target],
                "n_harmful": int(counts[(target, "harmful")]), "n_harmless": int(counts[(target, "harmless")]),
            })
    return pd.DataFrame(rows)


def released_transfer(
    model,
    prompts: PromptSet,
    directions: Mapping[str, Float[Tensor, " d_model"]],
    layer: int | Mapping[str, int],
    *,
    measure: Measure | None = None,
    targets: Sequence[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """PolyRefuse's transfer experiment as released (``multi_test.py``), on each target's harmful prompts.

    Per source A: r̂_A ablated at every layer plus the raw r_A added at the input of block
    ``layer`` (``blocks.{layer}.hook_resid_pre``, every position, after that block's
    ablation, so the added part survives block ``layer`` and is ablated again at the next
    block's input: the released hook order); and the addition alone (its
    ``_addition`` run). ``measure`` defaults to :class:`GenerationJudge` (greedy text, the
    substring judge; the released one translates to English and asks WildGuard, not
    offline). Rows: source, target, tiers, layer, judge, baseline_harmful_refusal,
    ablated_and_added_harmful_refusal, added_harmful_refusal, n_harmful (rates in %).
    """
    measure = measure if measure is not None else GenerationJudge()
    dirs = _directions(directions, model.cfg.d_model)
    n_layers = model.cfg.n_layers
    layers = _layers(layer, list(dirs), n_layers)
    targets = list(targets) if targets is not None else prompts.languages
    harmful = prompts.where(language=targets, subset="harmful")
    missing = [lang for lang in targets if lang not in harmful.languages]
    if missing:
        raise ValueError(f"target language(s) {missing} have no harmful prompts in {prompts.origin or 'the prompts'}")
    points: list[list[H.Hook]] = [[]]
    for source, r in dirs.items():
        added = H.add(r, float(r.norm()), layers[source], site="hook_resid_pre", scope="all")
        points += [H.ablate(r, range(n_layers)) + added, added]
    base, *by_source = _rates(measure, model, harmful, points, progress)
    counts = harmful.frame.groupby("language").size()
    rows = []
    for i, source in enumerate(dirs):
        both, added = by_source[2 * i], by_source[2 * i + 1]
        rows += [{"source": source, "target": target, "tier_source": tier_of(source), "tier_target": tier_of(target),
                  "layer": layers[source], "judge": getattr(measure, "name", "custom"),
                  "baseline_harmful_refusal": base[target], "ablated_and_added_harmful_refusal": both[target],
                  "added_harmful_refusal": added[target], "n_harmful": int(counts[target])} for target in targets]
    return pd.DataFrame(rows)
