"""The full diagnosis behind ``lowres-safety diagnose``: every analysis, then the report sections.

:func:`analyse` runs the research question in order — is the harmfulness representation
there, is it acted on, how big is the gap and of which type, where does it break, can a
few examples fix it — and returns tidy tables; :func:`sections` turns them into the
report. Both are usable from a notebook on their own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .. import attribution as attr_mod
from .. import calibration, causal, dose_response, evaluation, form, judges, probing, recoverability
from .. import directions as dirs
from ..activations import extract
from ..data import PromptSet, in_tier, sample_sources
from ..gate import Gate
from ..generation import generate_scored
from ..hooks import default_alpha
from ..models import model_id
from ..organisms.ground_truth import GroundTruth
from ..presets import preset_for

__all__ = ["Diagnosis", "analyse", "reference_language", "results"]


@dataclass
class Diagnosis:
    """Everything one diagnosis computed (tables are tidy DataFrames; see each producer's docstring)."""

    source: list[str]
    best_layer: int
    gate_layer: int
    separability: pd.DataFrame
    cosine: pd.DataFrame
    transfer: pd.DataFrame
    projections: pd.DataFrame
    completions: pd.DataFrame
    refusal: pd.DataFrame
    gap: pd.DataFrame
    loophole: pd.DataFrame | None
    threshold_shift: pd.DataFrame | None
    dose: pd.DataFrame | None  # None: where it breaks was not run (``full=False``), as for the four below
    alpha_half: pd.DataFrame | None
    alpha: dict[int, float]  # per dose-response layer: the source harmful–harmless spread there
    attribution: attr_mod.Attribution | None
    refusal_tokens: list[str]
    compliance_tokens: list[str]
    divergence: pd.DataFrame | None
    divergence_pair: tuple[str, str] | None
    recoverability: pd.DataFrame
    gate: str
    causal: causal.CausalCheck | None
    notes: dict[str, str] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    judge: str = "substring"  # the judge behind the gap table, loophole and threshold shift
    logit_learned_on: str = "the scored completions"  # where the logit judge's token set came from
    form: pd.DataFrame | None = None  # form.form_controls at the gate layer
    gap_raw: pd.DataFrame | None = None  # the gap table on raw held-out projections
    gap_controlled: pd.DataFrame | None = None  # ... on projections less what form predicts of them
    form_control: bool = False  # whether ``gap`` is the controlled one
    twins: pd.DataFrame | None = None  # form.form_controls on the phrase-matched twins (the form-free check)
    predicted: pd.DataFrame | None = None  # the construction's gap table, for a model organism


def _analysis_subset(prompts: PromptSet, n_per_class: int, seed: int) -> PromptSet:
    """``n_per_class`` source ids per class, the same in every language (pairs stay parallel), or all there are."""
    have = int(prompts.frame.groupby(["language", "subset"]).size().min())
    frame = sample_sources(prompts.frame, min(n_per_class, have), seed, prompts.origin)
    return PromptSet(frame, prompts.origin + f" ({n_per_class} per class for analysis)")


def reference_language(languages: list[str], source: list[str]) -> str:
    """English where it is evaluated, else the first source language: what loophole and attribution compare to."""
    return "en" if "en" in languages else source[0]


def analyse(model, prompts: PromptSet, *, seed: int = 0, cache: bool = True, probe_folds: int = 5,
            max_new_tokens: int = 24, analysis_per_class: int = 8, dose_layers: int = 3,
            dose_scales=(0.0, 0.5, 1.0, 2.0), budgets=(1, 2, 4, 8, 16, 32, 64), seeds=(0, 1, 2),
            progress: bool = True, judge=None, logit: judges.LogitJudge | None = None, form_control: bool = False,
            controls: PromptSet | None = None, truth: GroundTruth | None = None, full: bool = False) -> Diagnosis:
    """Run the analyses of the report on ``model`` and ``prompts``.

    Separability, refusal and recoverability use every prompt; the per-forward-pass
    analyses (dose-response grid, attribution) use ``analysis_per_class`` source ids per
    class so a diagnosis stays minutes, not hours, on a CPU. ``judge`` (any judge of
    :mod:`judges`; substring by default) decides refusal for the gap table, loophole and
    threshold shift; ``logit`` is the logit judge with a token set learned on another split
    (:func:`judges.learn_from_prompts`), else it is learned from the generated answers.
    The gap table's AUROC is also computed on projections less what the prompts' form
    predicts of them (:mod:`form`); ``form_control`` makes that one decide the failure type.
    ``controls`` (the built-in twins) are scored on the same direction: the form-matched
    check. ``truth`` (a model organism's rule) adds the failure types its construction predicts.
    ``full`` adds where it breaks: dose-response, logit attribution, direction selection and the
    interventional transfer (many forward passes per prompt: most of a full run's time).
    """
    timing, notes = {}, {}
    source = in_tier(prompts.languages, "high")
    if not source:
        raise ValueError(f"the diagnosis needs at least one high-resource language for the pooled direction; "
                         f"got {prompts.languages}")
    t = time.perf_counter()
    acts = extract(model, prompts, "all", ("t_inst", "t_post_inst"), cache=cache, progress=progress)
    timing["extract_s"] = time.perf_counter() - t

    t = time.perf_counter()
    v = dirs.pooled(acts, source)
    sep = probing.separability(acts, v, direction_name="pooled_high", own=True, folds=probe_folds, seed=seed)
    pooled_rows = sep[(sep["direction"] == "pooled_high") & (sep["position"] == "t_post_inst")]
    best_layer = int(pooled_rows.groupby("layer")["auroc"].mean().idxmax())
    preset = preset_for(model_id(model))
    gate_layer = preset.gate_layer if preset else probing.choose_layer(acts, source, n_layers=model.cfg.n_layers)
    cos = dirs.cosine_matrix(dirs.per_language(acts), acts.layers, acts.positions)
    transfer = probing.transfer_matrix(acts, gate_layer)
    proj = probing.projections(acts, v, gate_layer, "t_post_inst")
    timing["representation_s"] = time.perf_counter() - t

    t = time.perf_counter()
    completions, first = generate_scored(model, prompts, max_new_tokens=max_new_tokens, batch_size=32,
                                         progress=progress)
    by_logit = isinstance(judge, judges.LogitJudge)  # the report shows a text judge beside the logit judge
    text = judges.Memo(judges.as_batch(None if by_logit else judge))  # each answer judged once, however often asked
    logit = logit or (judge if by_logit and judge.refusal_tokens is not None else judges.LogitJudge.learn(
        completions, model.tokenizer, text, learned_on="the scored completions"))
    chosen = judges.Memo(logit.bind(model)) if by_logit else text
    refusal = evaluation.measure_refusal(model, prompts, completions, judge=text, logit=logit, first_logprobs=first)
    del first
    timing["generation_s"] = time.perf_counter() - t

    t = time.perf_counter()
    held = probing.heldout_projections(acts, source, gate_layer, folds=probe_folds, seed=seed)
    gaps = {name: calibration.gap_table(calibration.with_refusal(p, completions, chosen), seed=seed)
            for name, p in (("raw", held), ("controlled", form.residualised_projections(held, prompts, model.tokenizer)))}
    gap = gaps["controlled" if form_control else "raw"]
    forms = form.form_controls(acts, v, gate_layer, model.tokenizer, folds=probe_folds, seed=seed)
    twins = _twins_control(model, v, acts, gate_layer, controls, cache, probe_folds, seed, progress)
    predicted = truth.predicted_gap(acts, seed) if truth is not None and truth.layer in acts.layers else None
    reference = reference_language(prompts.languages, source)
    loophole = (calibration.loophole_rates(completions, chosen, reference=reference)
                if len(prompts.languages) > 1 and "harmful" in set(completions["subset"]) else None)
    proj = calibration.with_refusal(proj, completions, chosen)
    try:
        shift = calibration.threshold_shift(proj, source)
    except ValueError as err:
        shift, notes["threshold_shift"] = None, str(err)
    refusal_ids = list(logit.tokens(model.tokenizer))
    compliance_ids = judges.compliance_tokens_from(completions, model.tokenizer, chosen, exclude=refusal_ids)
    timing["calibration_s"] = time.perf_counter() - t

    dose = alpha_half = attribution = divergence = pair = found = None
    alpha = {}
    if full:
        t = time.perf_counter()
        small = _analysis_subset(prompts, analysis_per_class, seed)
        src_acts = acts.where(language=source)
        middle = probing.middle_layers(model.cfg.n_layers)
        layers = sorted({int(x) for x in np.linspace(middle[0], middle[-1], dose_layers).round()} | {gate_layer})
        v_at = {l: acts.vector(v, l) for l in layers}
        alpha = {l: default_alpha(src_acts, v_at[l], l) for l in layers}  # each layer's own unit
        dose = dose_response.dose_response(model, small, v_at, layers, {l: [s * alpha[l] for s in dose_scales]
                                                                      for l in layers}, refusal_ids,
                                           progress=progress)
        alpha_half = dose_response.alpha_at_half(dose)
        timing["dose_response_s"] = time.perf_counter() - t

        t = time.perf_counter()
        attribution = attr_mod.attribute(model, small, refusal_ids, compliance_ids, progress=progress)
        worst = gap[gap["language"] != reference].sort_values("action_gap", ascending=False)["language"]
        pair = (reference, worst.iloc[0]) if len(worst) else None
        try:
            divergence = attr_mod.compare_languages(attribution, *pair) if pair else None
        except ValueError as err:
            divergence, pair, notes["divergence"] = None, None, str(err)
        timing["attribution_s"] = time.perf_counter() - t

        found = causal.check(model, acts, small, source, refusal_ids, reference=reference, gate_layer=gate_layer,
                             n_select=analysis_per_class, seed=seed, progress=progress)
        timing.update(found.timing)

    t = time.perf_counter()
    gate = Gate(seed=seed).fit(acts, gate_layer, "t_post_inst", source)
    targets = [lang for lang in prompts.languages if lang not in source]
    rec = (recoverability.recoverability(acts.where(language=targets), v, gate, budgets=budgets, seeds=seeds)
           if targets else pd.DataFrame())
    timing["recoverability_s"] = time.perf_counter() - t
    tok = model.tokenizer
    return Diagnosis(
        source=source, best_layer=best_layer, gate_layer=gate_layer, separability=sep, cosine=cos, transfer=transfer,
        projections=proj, completions=completions, refusal=refusal, gap=gap, loophole=loophole, threshold_shift=shift,
        dose=dose, alpha_half=alpha_half, alpha=alpha, attribution=attribution,
        refusal_tokens=[tok.decode([i]) for i in refusal_ids], compliance_tokens=[tok.decode([i]) for i in compliance_ids],
        divergence=divergence, divergence_pair=pair, recoverability=rec, gate=repr(gate), causal=found, notes=notes,
        timing=timing, judge=chosen.name, logit_learned_on=logit.learned_on, form=forms, gap_raw=gaps["raw"],
        gap_controlled=gaps["controlled"], form_control=form_control, twins=twins, predicted=predicted)


def _twins_control(model, v, acts, layer: int, controls: PromptSet | None, cache: bool, folds: int, seed: int,
                   progress: bool) -> pd.DataFrame | None:
    """The pooled direction scored on the twins of the languages both sets have (:func:`form.form_controls`)."""
    if controls is None:
        return None
    shared = [lang for lang in controls.languages if lang in acts.prompts.languages]
    if not shared:
        return None
    twin_acts = extract(model, controls.where(language=shared), [layer], acts.positions, cache=cache,
                        progress=progress)
    li = acts.layer_index(layer)
    return form.form_controls(twin_acts, v[li:li + 1], layer, model.tokenizer, folds=folds, seed=seed)


def results(d: Diagnosis) -> dict:
    """The JSON-able sections of a diagnosis (``results.json``)."""
    from .report import records

    return {
        "source_languages": d.source,
        "best_layer": d.best_layer,
        "gate_layer": d.gate_layer,
        "separability": records(d.separability[["language", "tier", "layer", "position", "direction", "auroc",
                                                 "probe_accuracy", "n_harmful", "n_harmless"]]),
        "cosine": records(d.cosine),
        "transfer": records(d.transfer),
        "refusal": records(d.refusal),
        "judge": {"name": d.judge, "logit_tokens": d.refusal_tokens, "logit_learned_on": d.logit_learned_on},
        "calibration": {
            "gap": records(d.gap),
            "loophole": records(d.loophole) if d.loophole is not None else None,
            "threshold_shift": records(d.threshold_shift) if d.threshold_shift is not None else None,
            "dose_response": records(d.dose) if d.dose is not None else None,
            "alpha_at_half": records(d.alpha_half) if d.alpha_half is not None else None,
            "alpha_unit": {str(k): a for k, a in d.alpha.items()},
            "notes": d.notes,
        },
        "full": d.dose is not None,
        "attribution": {
            "refusal_tokens": d.refusal_tokens,
            "compliance_tokens": d.compliance_tokens,
            "components": records(d.attribution.mean("components")),
            "lens": records(d.attribution.mean("lens")),
            "total": records(d.attribution.mean("total")),
            "divergence": records(d.divergence) if d.divergence is not None else None,
            "divergence_pair": list(d.divergence_pair) if d.divergence_pair else None,
        } if d.attribution is not None else None,
        "selection": {"table": records(d.causal.selection), "chosen_layer": d.causal.chosen_layer,
                      "note": d.causal.selection_note} if d.causal is not None else None,
        "interventional_transfer": records(d.causal.transfer) if d.causal is not None else None,
        "recoverability": records(d.recoverability),
        "gate": d.gate,
        "form_control": d.form_control,
        "form_controls": records(d.form) if d.form is not None else None,
        "gap_raw": records(d.gap_raw) if d.gap_raw is not None else None,
        "gap_form_controlled": records(d.gap_controlled) if d.gap_controlled is not None else None,
        "twins_control": records(d.twins) if d.twins is not None else None,
        "construction": records(d.predicted) if d.predicted is not None else None,
    }
