"""``steer(config)``: the fix, compared with every baseline, as one library call.

    import lowres_safety as ls
    result = ls.steer(ls.SteerConfig(languages=("ar", "ko", "yo"), ks=(0, 4)), workdir="runs/steer")
    result.table          # one row per language × method × k: refusal, selectivity Δ, KL, utility
    result.save("runs/steer")     # steer.json, completions.csv, report.html

Stages, in the order of the question: the prompts (fit, evaluation and calibration,
disjoint by source id), the methods fitted on the source languages
(:func:`~lowres_safety.pipelines.steering.fit_methods`), every method scored per target
language (:func:`~lowres_safety.pipelines.steering.evaluate`), and the causal check
(:func:`lowres_safety.causal.check`). ``workdir`` keeps each finished language × method ×
k, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import judges, plots, utility
from ..activations import extract
from ..causal import CausalCheck, check
from ..data import extra_tiers, in_tier
from ..data.prompt_files import describe_origins, is_prompt_file, open_prompts
from ..fix import Fix
from ..methods import Target
from ..methods.adasteer import ADAPTED_K
from ..models import load_model, model_id
from ..presets import preset_for
from . import analyses_report, causal_report, estimate, steer_prompts, steering
from .config import PAPER, SteerConfig
from .estimate import clock
from .memo import CompletionMemo
from .protocol import settings_table
from .report import Section, records, write_html, write_json

__all__ = ["SteerResult", "seed_summary", "steer"]

_TEMPLATE_TOKENS = 12  # the chat template's tokens around a prompt (SmolLM2's; a rough count for the estimate)

_POOLS = {"train": "fit-split", "val": "PolyRefuse val", "split": "other {split}"}  # calibrate_on, for the report
_ADAPTED = {"pooled": "from each low-resource language of the train split, pooled, one set for every target; CAST "
                      "tuned on each target's val split where there is one",
            "target": "from each target's own calibration pool"}


@dataclass
class SteerResult:
    """The steer table, the completions behind it, the causal check, and the JSON of ``steer.json``."""

    config: SteerConfig
    table: pd.DataFrame  # one row per language × method × k
    completions: pd.DataFrame
    causal: CausalCheck
    results: dict
    header: str
    fix: Fix | None = None  # the gate routing as fitted: every target's recalibrated gates, portable
    paper: analyses_report.PaperAnalyses | None = None  # the released generation sweeps (``sweeps``)

    @property
    def summary(self) -> pd.DataFrame:
        """The table averaged over seeds (:func:`seed_summary`); the table itself for one seed."""
        return seed_summary(self.table) if len(self.config.run_seeds) > 1 else self.table

    def sections(self) -> list[Section]:
        """The report: the steer table, then this run's settings beside the released run's."""
        c, r = self.config, self.results
        costs = "; ".join(f"{what}: {clock(e['here'])} here, {clock(e['gpu_7b'])} for a 7B model on one H100"
                          for what, e in r.get("estimates_s", {}).items())
        settings = Section(
            "This run beside the released run",
            "Each setting of this run next to the one rashadaziz/low-resource-safety used for the paper's table, "
            "with the file that sets it; 'same' is empty where only a path could be compared. Estimated cost "
            f"before the run (pipelines/estimate.py): {costs}.",
            table=settings_table(c, r["source"]))
        return [self.section(), settings, *self._utility_section(),
                *(analyses_report.sections(self.paper) if self.paper is not None else [])]

    def _utility_section(self) -> list[Section]:
        """Accuracy per subject category, where the multiple-choice items carry one (Global-MMLU's do)."""
        columns = {c: steering.category_of(c) for c in self.summary.columns if steering.category_of(c)}
        if not columns:
            return []
        long = (self.summary.rename(columns=columns)
                .melt(id_vars=["language", "method", "k"], value_vars=list(columns.values()),
                      var_name="subject_category", value_name="accuracy").dropna(subset=["accuracy"]))
        return [Section("Utility by subject category",
                        "mc_accuracy per subject category of the multiple-choice items, as the released utility script "
                        "summarises Global-MMLU (subject_category_summaries); the steer table has one column each.",
                        ((plots.utility_by_category(long), "Mean over the languages with items."),),
                        long.pivot_table(index=["method", "k"], columns="subject_category", values="accuracy",
                                         sort=False).round(1).reset_index())]

    def section(self) -> Section:
        """The report section of the steer table (means over seeds, with their spread, when there are several)."""
        c, r = self.config, self.results
        n = "every" if c.n_per_class is None else str(c.n_per_class)
        seeds = (f" Mean of seeds {', '.join(map(str, c.run_seeds))}; the _sd columns are the standard deviation "
                 "over seeds." if len(c.run_seeds) > 1 else "")
        table = self.summary
        return Section(
            "Can a recalibrated gate close the gap?",
            f"Methods fitted on {', '.join(r['source'])} at layer {r['layer']} (alpha = {r['alpha']:.2f}); each "
            f"language scored on {n} harmful and {n} harmless held-out prompts, "
            f"{c.max_new_tokens} new tokens, {c.judge} judge. gate k=0 keeps the source threshold; k>0 recalibrates "
            f"it ({c.recalibration}) with k {_POOLS[c.calibrate_on].format(split=c.split)} examples per class and "
            f"routes (harmful: +alpha at layer {r['layer']}; harmless: ablated at {c.ablation.replace('_', ' ')}). "
            f"AdaSteer and CAST k=0 are fitted on the source languages (AdaSteer's vectors pointing toward "
            f"compliance, as upstream's), k=32 on 32 examples per class "
            f"({_ADAPTED[r.get('adapted_from', 'target')]}; the paper's adapted baselines, vectors toward harmful as "
            f"released). kl_ablated: KL over the harmless prompts the gate routed to "
            f"ablation only (kl adds those it sent to addition). mc_accuracy: % of the language's multiple-choice "
            f"items ({'built-in set' if c.mc == 'builtin' else c.mc}) answered right under the method, scored as "
            f"the paper scores Global-MMLU (empty where the set has no items in it); mc_margin: the right letter's "
            f"score minus the best wrong one's, mc_entropy: of the four letters' softmax (nats), "
            f"mc_gate_fire_rate: % of the items the gate sends to refusal, as the released utility script.{seeds}",
            ((plots.selectivity_bars(table),
              "Bars are selectivity = harmful refusal - harmless refusal (percentage points) per language and "
              "method; higher is better, and a method that refuses everything scores 0."),
             (plots.refusal_tradeoff(table),
              "Each point is a language under one method: up is more harmful prompts refused, right is more "
              "harmless prompts refused; the ideal is the top-left corner.")),
            table.round(3),
        )

    def save(self, folder: str | Path) -> Path:
        """Write ``steer.json``, ``completions.csv``, ``report.html``, the fitted fix (``fix/``) and the sweeps' tables
        (``analyses/<name>.csv``) into ``folder``."""
        folder = Path(folder)
        if self.fix is not None:
            self.fix.save(folder / "fix")  # ls.load_fix(folder / "fix").hooks(model, language)
        write_json(folder / "steer.json", self.results)
        self.completions.to_csv(folder / "completions.csv", index=False)
        if self.paper is not None:
            self.paper.save(folder)  # analyses/<name>.csv
        write_html(folder / "report.html", "lowres_safety steering",
                   [*self.sections(), *causal_report.sections(self.causal)], self.header)
        return folder


def steer(config: SteerConfig | None = None, *, workdir: str | Path | None = None) -> SteerResult:
    """Fit every method on the source languages and score it per target language, as ``config`` says.

    ``workdir`` is a folder where each finished language × method × k is kept (under a
    name hashed from the config), so a rerun of the same config resumes; None keeps nothing.
    """
    config = config or SteerConfig()
    with extra_tiers(config.tiers):
        return _steer(config, workdir)


def _steer(c: SteerConfig, workdir: str | Path | None) -> SteerResult:
    judges.resolve(c.judge)  # a wrong judge fails before minutes of work
    mc_items = utility.load_mc_demo() if c.mc == "builtin" else utility.load_mc(c.mc)
    timing, t0 = {}, time.perf_counter()
    seeds = c.run_seeds
    available = open_prompts(c.data, c.languages if is_prompt_file(c.data) else None, split=c.split,
                             files=c.files).languages
    languages = list(c.languages or available)
    source = list(c.source_languages or in_tier(available, "high"))
    if not source:
        raise ValueError(f"no high-resource source language in {available}; name some with source_languages")
    fit_prompts, eval_prompts = steer_prompts.fit_and_evaluation(c.data, languages, source, c.n_per_class, c.n_fit,
                                                                 c.split, seeds[0], c.files)
    model = load_model(c.model)
    preset = preset_for(c.model)
    estimates = _estimates(model, c, fit_prompts, eval_prompts, languages, source, mc_items)
    print("\n".join(e.describe(what) for what, e in estimates.items()), flush=True)
    settings = _settings(c, languages, source)
    shared: dict = {}  # the memo of answers and the logit judge, made by the first seed, used by every seed
    tables, texts, first = [], [], None
    for seed in seeds:
        redraw = seed != seeds[0] and c.n_fit is not None and Path(c.data).is_dir()  # PolyRefuse: train ≠ test
        one = _one_seed(model, c, seed, None if redraw else fit_prompts, eval_prompts, languages, source,
                        preset, mc_items, workdir, shared, settings)
        tables.append(one["table"].assign(seed=seed))
        texts.append(one["completions"].assign(seed=seed))
        first = first or one
    timing["setup_s"], timing["evaluate_s"] = first["setup_s"], time.perf_counter() - t0 - first["setup_s"]
    table, completions = pd.concat(tables, ignore_index=True), pd.concat(texts, ignore_index=True)
    fitted, fit_acts, logit = first["fitted"], first["fit_acts"], first["logit"]
    fix = _fix(model, fitted, languages, c.ks, first["calib_acts"], first["eval_acts"])
    reference = _reference(source)
    found = check(model, fit_acts, eval_prompts, source, logit.tokens(model.tokenizer), reference=reference,
                  gate_layer=fitted.layer, n_select=c.n_select, seed=seeds[0])
    timing.update(found.timing)
    timing["generated_answers"] = shared["memo"].generated
    t = time.perf_counter()
    paper = (analyses_report.steering_sweeps(model, eval_prompts.where(subset="harmful"), fit_acts.where(language=source),
                                             source, fitted.layer, judge=shared["memo"].judge,
                                             max_new_tokens=c.max_new_tokens, batch_size=c.batch_size,
                                             store=_sweeps_folder(workdir, settings, fitted.layer))
             if c.sweeps else None)
    timing["sweeps_s"] = time.perf_counter() - t
    results = {**settings, "layer": fitted.layer, "seeds": list(seeds), "config": c.to_dict(),
               "model": model_id(model), "alpha": fitted.alpha, "gate": repr(fitted.gate),
               "preset": preset.source if preset else None, "logit_learned_on": logit.learned_on,
               "logit_tokens": [model.tokenizer.decode([i]) for i in logit.tokens(model.tokenizer)],
               "rows": records(table), **({"summary": records(seed_summary(table))} if len(seeds) > 1 else {}),
               "settings_vs_released": records(settings_table(c, source)),
               "estimates_s": {what: {"here": e.here_s, "gpu_7b": e.gpu_7b_s, **e.work.detail}
                               for what, e in estimates.items()},
               "selection": {"table": records(found.selection), "chosen_layer": found.chosen_layer,
                             "note": found.selection_note},
               "interventional_transfer": records(found.transfer), "timing": timing,
               **({"paper_analyses": paper.summary()} if paper is not None else {})}
    header = (f"<p>Model <b>{html.escape(results['model'])}</b>, data <b>{html.escape(c.data)}</b>, "
              f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}. "
              f"Evaluation prompts: {html.escape(describe_origins(eval_prompts))}. "
              "Completions are in completions.csv; regenerate with <code>lowres-safety steer --config steer.json"
              "</code>.</p>")
    return SteerResult(c, table, completions, found, results, header, fix, paper)


def _one_seed(model, c: SteerConfig, seed: int, fit_prompts, eval_prompts, languages, source, preset, mc_items,
              workdir, shared: dict, settings: dict) -> dict:
    """Fit every method with ``seed``'s draws and score it; ``shared["memo"]`` has the answers earlier seeds made."""
    t0 = time.perf_counter()
    if fit_prompts is None:  # a later seed's own draw of n_fit train prompts (a halved set keeps the first's half)
        fit_prompts = steer_prompts.fit_and_evaluation(c.data, languages, source, c.n_per_class, c.n_fit, c.split,
                                                       seed, c.files)[0]
    fit_acts = extract(model, fit_prompts, "all", ("t_post_inst",), cache=True)  # AdaSteer reads every layer
    pooled = (steer_prompts.adaptation_pool(c.data, fit_prompts, ADAPTED_K, seed) if c.adapted_from == "pooled"
              else None)
    adaptation = extract(model, pooled, "all", ("t_post_inst",), cache=True) if pooled is not None else None
    fitted = steering.fit_methods(model, fit_acts, source, layer=c.layer, seed=seed, lam=c.strength, scope=c.scope,
                                  ablation=c.ablation, recalibration=c.recalibration, preset=preset,
                                  adaptation=adaptation,
                                  upstream=c.upstream_files)
    eval_acts = extract(model, eval_prompts, [fitted.layer], ("t_post_inst",), cache=True)
    if c.calibrate_on == "train":
        calib_acts = fit_acts.where(language=languages)
    else:
        pool = steer_prompts.calibration_pool(c.data, languages, c.n_fit,
                                              c.split if c.calibrate_on == "split" else c.calibrate_on, seed,
                                              eval_prompts)
        calib_acts = extract(model, pool, "all", ("t_post_inst",), cache=True)
    if not shared:  # the first seed learns the logit judge's tokens; every seed is judged alike
        logit, _ = judges.learn_from_prompts(model, judges.per_class(  # tokens from fit answers, not the scored ones
            fit_prompts.where(language=list(dict.fromkeys([_reference(source), *languages]))), c.n_select, seed))
        folder = Path(workdir) / f".memo-{steering.config_key(settings)}" if workdir is not None else None
        shared.update(logit=logit, memo=CompletionMemo(model, c.max_new_tokens, c.batch_size, seed,
                                                       judges.resolve(c.judge, logit=logit), folder=folder))
    memo = shared["memo"]
    setup_s = time.perf_counter() - t0
    parts = (Path(workdir) / f".parts-{steering.config_key({**settings, 'seed': seed, 'layer': fitted.layer})}"
             if workdir is not None else None)
    table, completions = steering.evaluate(
        model, fitted, eval_prompts, eval_acts, calib_acts, ks=c.ks, max_new_tokens=c.max_new_tokens,
        batch_size=c.batch_size, seed=seed, parts=parts, mc=mc_items, judge=memo.judge, memo=memo,
        tune=steer_prompts.tuning_prompts(c.data, languages, eval_prompts) if c.adapted_from == "pooled" else None)
    return {"table": table, "completions": completions, "fitted": fitted, "fit_acts": fit_acts, "eval_acts": eval_acts,
            "calib_acts": calib_acts, "logit": shared["logit"], "setup_s": setup_s}


def _sweeps_folder(workdir, settings: dict, layer: int) -> Path | None:
    """Where ``--sweeps`` keeps its finished steps: named by the settings, as the rows' parts are."""
    return Path(workdir) / f".sweeps-{steering.config_key({**settings, 'layer': layer})}" if workdir else None


def _reference(source: list[str]) -> str:
    """The language the logit judge and the causal check read first: English where it is a source."""
    return "en" if "en" in source else source[0]


def _settings(c: SteerConfig, languages, source) -> dict:
    """The settings every row depends on (the seed is added per seed): they name the run's stored parts."""
    return {"model": c.model, "data": c.data, "languages": languages, "source": source, "ks": list(c.ks),
            "n_per_class": c.n_per_class, "n_fit": c.n_fit, "split": c.split, "max_new_tokens": c.max_new_tokens,
            "seed": c.run_seeds[0], "strength": c.strength, "scope": c.scope,
            "ablation": c.ablation, "recalibration": c.recalibration, "mc": c.mc, "judge": c.judge,
            "adapted_from": c.adapted_from, "layer_option": c.layer,
            **({"adasteer_vectors": c.adasteer_vectors} if c.adasteer_vectors else {}),
            **({"cast_data": c.cast_data} if c.cast_data else {}),
            **({"calibrate_on": c.calibrate_on} if c.calibrate_on != "train" else {})}


def _estimates(model, c: SteerConfig, fit_prompts, eval_prompts, languages, source, mc_items) -> dict:
    """This run's cost, and the released protocol's on the same data (full splits), here and on a GPU."""
    tok = model.tokenizer

    def mean_tokens(prompts) -> float:
        texts = prompts.texts[:200]
        return float(np.mean([len(tok(t)["input_ids"]) for t in texts])) + _TEMPLATE_TOKENS

    n_lang = len(languages)
    n_eval = len(eval_prompts) // max(n_lang, 1)
    n_mc = int(len(mc_items) / max(mc_items["language"].nunique(), 1)) if mc_items is not None else 0
    base = {"eval_tokens": mean_tokens(eval_prompts), "fit_tokens": mean_tokens(fit_prompts), "n_languages": n_lang,
            "n_seeds": len(c.run_seeds), "new_tokens": c.max_new_tokens, "batch_size": c.batch_size, "mc_items": n_mc}
    here = estimate.steer_work(n_eval=n_eval, n_fit=len(fit_prompts),
                               n_source_fit=len(fit_prompts.where(language=source)),
                               shared_across_seeds=c.n_fit is None,
                               sweep_runs=analyses_report.sweep_runs(model.cfg.n_layers, source) if c.sweeps else 0,
                               **base)
    out = {"this run": here}
    full_eval, full_fit = steer_prompts.split_sizes(c.data, languages, source, c.split, c.files)
    if (full_eval, full_fit) != (n_eval, len(fit_prompts)) or c.max_new_tokens != PAPER["max_new_tokens"]:
        out["the released protocol on these languages"] = estimate.steer_work(
            n_eval=full_eval, n_fit=full_fit[0], n_source_fit=full_fit[1], shared_across_seeds=True,
            **{**base, "new_tokens": PAPER["max_new_tokens"], "n_seeds": 1})
    return {what: estimate.Estimate(estimate.price_here(model, w), estimate.price_gpu(w), w)
            for what, w in out.items()}


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of every number in a steer table, with the standard deviation of the refusal columns and Δ
    (``<column>_sd``) and ``n_seeds``; one row per language × method × k."""
    keys = ["language", "tier", "method", "k"]
    numbers = [c for c in table.select_dtypes("number").columns if c not in (*keys, "seed")]
    grouped = table.groupby(keys, sort=False, dropna=False)
    mean = grouped[numbers].mean()
    spread = grouped[["harmful_refusal", "harmless_refusal", "selectivity"]].std(ddof=1).add_suffix("_sd")
    return mean.join(spread).assign(n_seeds=grouped.size()).reset_index()


def _fix(model, fitted: steering.FittedMethods, languages, ks, calib_acts, eval_acts) -> Fix | None:
    """The gate routing as a portable :class:`Fix`, with a recalibrated gate per language and k > 0.

    A resumed run read some rows from disk without recalibrating; each gate is refitted
    here (seconds: the readout's 80 steps), as ``evaluate`` fitted it.
    """
    routing = fitted.methods.get("gate")
    if routing is None:
        return None
    for lang in languages:
        target = Target(lang, calib_acts.where(language=lang), eval_acts.where(language=lang))
        for k in (k for k in ks if k > 0):
            routing.gate_for(target, k)
    return Fix.from_routing(routing, model)
