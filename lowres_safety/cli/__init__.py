"""The ``lowres-safety`` command: thin callers of the library, one function per subcommand."""

from __future__ import annotations

import argparse
import contextlib
import html
import sys
import time
from pathlib import Path

from .. import data as data_mod
from .. import causal, judges, plots, utility
from . import checks as cli_checks
from ..pipelines import causal_report, diagnosis, steer_prompts, steering
from ..activations import extract
from ..models import load_model, model_id
from ..presets import preset_for
from ..data.prompt_files import FileOptions, describe_origins, is_prompt_file, open_prompts, origin_table
from ..pipelines.report import Section, records, write_html, write_json

__all__ = ["diagnose", "main", "steer"]


def _languages(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def diagnose(model_name: str = "organism", data: str = "builtin", languages=None, n_per_class: int | None = 24,
             split: str = "train", seed: int = 0, out: str | Path = "runs/diagnose", cache: bool = True,
             probe_folds: int = 5, max_new_tokens: int = 24, analysis_per_class: int = 8,
             files: FileOptions | None = None, judge: str = "substring") -> dict:
    """The full diagnosis (see :mod:`diagnosis`): writes results.json and report.html.

    ``data`` is "builtin", a PolyRefuse folder or a prompt file read with ``files``.
    ``judge`` is "substring", "logit" or a local Hugging Face model folder (:func:`judges.resolve`);
    on PolyRefuse the logit judge's tokens are learned on another split's answers.
    """
    t0 = time.perf_counter()
    judges.resolve(judge)  # a wrong --judge fails before minutes of work
    prompts = open_prompts(data, languages, split=split, n_per_class=n_per_class, seed=seed, files=files)
    if not any(data_mod.tier_of(lang) == "high" for lang in prompts.languages):
        raise ValueError(f"diagnose needs at least one high-resource language for the pooled direction; "
                         f"got {prompts.languages}")
    model = load_model(model_name)
    load_s = time.perf_counter() - t0
    other = judges.other_split_prompts(data, prompts.languages, split, analysis_per_class, seed)
    logit = judges.learn_from_prompts(model, other)[0] if other is not None else None
    found = diagnosis.analyse(model, prompts, seed=seed, cache=cache, probe_folds=probe_folds,
                              max_new_tokens=max_new_tokens, analysis_per_class=analysis_per_class,
                              judge=judges.resolve(judge, logit=logit), logit=logit)
    t = time.perf_counter()
    out = Path(out)
    results = {
        "model": model_id(model),
        "data": str(data),
        "split": split if str(data) != "builtin" else "demo",
        "seed": seed,
        "n_per_class": n_per_class,
        "analysis_per_class": analysis_per_class,
        "languages": {lang: data_mod.tier_of(lang) for lang in prompts.languages},
        "origins": records(origin_table(prompts)),
        **diagnosis.results(found),
        "max_new_tokens": max_new_tokens,
    }
    extra = {lang: t for lang, t in results["languages"].items()  # set by --tiers
             if lang not in data_mod.PAPER_TIERS and t != "unlisted"}
    command = " ".join(filter(None, [
        f"lowres-safety diagnose --model {model_name} --data {data} --languages {','.join(prompts.languages)} "
        f"--n-per-class {n_per_class} --split {split} --seed {seed} --max-new-tokens {max_new_tokens} "
        f"--analysis-per-class {analysis_per_class} --judge {judge}", files.flags() if files else "",
        "--tiers " + ",".join(f"{k}={v}" for k, v in extra.items()) if extra else ""]))
    header = (f"<p>Model <b>{html.escape(results['model'])}</b>, data <b>{html.escape(str(data))}</b>, "
              f"{len(prompts)} prompts, seed {seed}. Prompts: {html.escape(describe_origins(prompts))}. "
              f"Regenerate with <code>{html.escape(command)}</code>.</p>")
    write_html(out / "report.html", "lowres_safety diagnosis", diagnosis.sections(found, max_new_tokens), header)
    found.completions.to_csv(out / "completions.csv", index=False)
    timing = {"load_model_s": load_s, **found.timing, "report_s": time.perf_counter() - t,
              "total_s": time.perf_counter() - t0}
    results["timing"] = timing
    write_json(out / "results.json", results)
    return results


_POOLS = {"train": "fit-split", "val": "PolyRefuse val", "split": "other {split}"}  # --calibrate-on, for the report


def steer(model_name: str = "organism", data: str = "builtin", languages=None, source_languages=None,
          ks=(0, 1, 2, 4), n_per_class: int = 12, n_fit: int = 32, split: str = "test", max_new_tokens: int = 24,
          seed: int = 0, out: str | Path = "runs/steer", layer: int | None = None, batch_size: int = 32,
          strength: float = 1.0, scope: str = "from_last", ablation: str = "gate_layer",
          recalibration: str = "paper", n_select: int = 8, files: FileOptions | None = None,
          mc: str | Path = "builtin", judge: str = "substring", calibrate_on: str = "train") -> dict:
    """Refusal per language under no intervention, ablation, addition, AdaSteer, CAST and the routed gate.

    ``strength`` is λ in α = λ·(q75 harmful − q25 harmless) of the source projections, shared
    by every method that adds the direction; ``scope`` is where addition and the gate add
    it ("from_last": last prompt token onward; "all": every position); ``ablation`` where
    the gate ablates ("gate_layer", the released code; "all_later_layers");
    ``recalibration`` how it resets per language ("paper": refit + F1 search; "threshold").
    ``calibrate_on`` is where a target language's k examples (and the adapted baselines' 32)
    come from: "train" (default, as the released code; the fit prompts), "val" (PolyRefuse val,
    prompts a model trained on train has never seen: the organism's stage 1 pushed its train
    prompts) or "split" (other prompts of the evaluation split, for a model whose train and
    test prompts differ).
    A model the paper's code has settings for (:mod:`presets`) gets its gate layer. The
    report adds direction selection on ``n_select`` + ``n_select`` reference-language fit
    prompts and the interventional transfer matrix on the evaluation prompts (:mod:`causal`).
    ``mc`` is a multiple-choice file or folder in Global-MMLU's layout, or "builtin"
    (:func:`utility.load_mc_demo`): every row gets ``mc_accuracy`` in its language.
    ``judge`` scores refusal ("substring", "logit" or a local model folder); the logit
    judge's tokens are learned on ``n_select`` fit prompts per class and language.
    """
    judges.resolve(judge)  # a wrong --judge fails before minutes of work
    if calibrate_on not in _POOLS:
        raise ValueError(f"calibrate_on must be one of {list(_POOLS)}, got {calibrate_on!r}")
    if calibrate_on != "train" and (str(data) == "builtin" or is_prompt_file(data)):
        raise ValueError(f"--calibrate-on {calibrate_on} needs a PolyRefuse folder: with the built-in set or a prompt "
                         "file the calibration pool already is the other half of the same prompts")
    mc_items = utility.load_mc_demo() if str(mc) == "builtin" else utility.load_mc(mc)
    if strength <= 0:
        raise ValueError(f"strength must be positive, got {strength}")
    timing, t0 = {}, time.perf_counter()
    available = open_prompts(data, languages if is_prompt_file(data) else None, split=split, files=files).languages
    languages = languages or available
    source = source_languages or [lang for lang in available if data_mod.tier_of(lang) == "high"]
    if not source:
        raise ValueError(f"no high-resource source language in {available}; name some with --source-languages")
    if any(k < 0 for k in ks):
        raise ValueError(f"k must be 0 (source threshold) or a positive number of examples per class, got {ks}")
    fit_prompts, eval_prompts = steer_prompts.fit_and_evaluation(data, list(languages), list(source), n_per_class,
                                                                 n_fit, split, seed, files)
    model = load_model(model_name)
    preset = preset_for(model_name)
    fit_acts = extract(model, fit_prompts, "all", ("t_post_inst",), cache=True)  # AdaSteer reads every layer
    fitted = steering.fit_methods(model, fit_acts, source, layer=layer, seed=seed, lam=strength, scope=scope,
                                  ablation=ablation, recalibration=recalibration, preset=preset)
    eval_acts = extract(model, eval_prompts, [fitted.layer], ("t_post_inst",), cache=True)
    calib_acts = (fit_acts.where(language=list(languages)) if calibrate_on == "train" else extract(
        model, steer_prompts.calibration_pool(data, list(languages), n_fit, split if calibrate_on == "split"
                                              else calibrate_on, seed, eval_prompts), "all", ("t_post_inst",),
        cache=True))
    reference = "en" if "en" in source else source[0]
    logit, _ = judges.learn_from_prompts(model, judges.per_class(  # tokens from fit answers, not the scored ones
        fit_prompts.where(language=list(dict.fromkeys([reference, *languages]))), n_select, seed))
    timing["setup_s"] = time.perf_counter() - t0
    config = {"model": model_name, "data": str(data), "languages": list(languages), "source": list(source),
              "ks": list(ks), "n_per_class": n_per_class, "n_fit": n_fit, "split": split,
              "max_new_tokens": max_new_tokens, "seed": seed, "layer": fitted.layer, "strength": strength,
              "scope": scope, "ablation": ablation, "recalibration": recalibration, "mc": str(mc), "judge": judge,
              **({"calibrate_on": calibrate_on} if calibrate_on != "train" else {})}
    out = Path(out)
    t = time.perf_counter()
    table, completions = steering.evaluate(
        model, fitted, eval_prompts, eval_acts, calib_acts, ks=ks,
        max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
        parts=out / f".parts-{steering.config_key(config)}", mc=mc_items, judge=judges.resolve(judge, logit=logit))
    timing["evaluate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    found = causal.check(model, fit_acts, eval_prompts, list(source), logit.tokens(model.tokenizer),
                         reference=reference, gate_layer=fitted.layer, n_select=n_select, seed=seed)
    timing.update(found.timing)
    results = {**config, "model": model_id(model), "alpha": fitted.alpha, "gate": repr(fitted.gate),
               "preset": preset.source if preset else None, "logit_learned_on": logit.learned_on,
               "logit_tokens": [model.tokenizer.decode([i]) for i in logit.tokens(model.tokenizer)],
               "rows": records(table),
               "selection": {"table": records(found.selection), "chosen_layer": found.chosen_layer,
                             "note": found.selection_note},
               "interventional_transfer": records(found.transfer), "timing": timing}
    write_json(out / "steer.json", results)
    completions.to_csv(out / "completions.csv", index=False)
    section = Section(
        "Can a recalibrated gate close the gap?",
        f"Methods fitted on {', '.join(source)} at layer {fitted.layer} (alpha = {fitted.alpha:.2f}); each language "
        f"scored on {n_per_class} harmful and {n_per_class} harmless held-out prompts, {max_new_tokens} new tokens, "
        f"{judge} judge. gate k=0 keeps the source threshold; k>0 recalibrates it ({recalibration}) with k "
        f"{_POOLS[calibrate_on].format(split=split)} examples per class and routes (harmful: +alpha at layer "
        f"{fitted.layer}; harmless: ablated at {ablation.replace('_', ' ')}). AdaSteer and CAST k=0 are fitted "
        f"on the source languages, k=32 on 32 of the same target examples per class (the paper's adapted "
        f"baselines). kl_ablated: KL over the harmless prompts the gate routed to ablation only (kl adds those "
        f"it sent to addition). mc_accuracy: % of the language's multiple-choice items "
        f"({'built-in set' if str(mc) == 'builtin' else mc}) answered right under the method, scored as the "
        f"paper scores Global-MMLU (empty where the set has no items in it).",
        ((plots.selectivity_bars(table),
          "Bars are selectivity = harmful refusal - harmless refusal (percentage points) per language and method; "
          "higher is better, and a method that refuses everything scores 0."),
         (plots.refusal_tradeoff(table),
          "Each point is a language under one method: up is more harmful prompts refused, right is more harmless "
          "prompts refused; the ideal is the top-left corner.")),
        table.round(3),
    )
    header = (f"<p>Model <b>{html.escape(results['model'])}</b>, data <b>{html.escape(str(data))}</b>, seed {seed}. "
              f"Evaluation prompts: {html.escape(describe_origins(eval_prompts))}. "
              f"Completions are in completions.csv.</p>")
    write_html(out / "report.html", "lowres_safety steering", [section, *causal_report.sections(found)], header)
    return results


_MODEL_HELP = ("'organism' (default), 'organism-erased' (the same, unable to read Thai and Korean), 'default' "
               "(the base model), a local folder or a Hugging Face id")
_JUDGE_HELP = ("refusal judge: substring (default; refusal phrases where a refusal says them), logit (first-token "
               "refusal log-odds, tokens learned on another split's answers) or the folder of a local Hugging Face "
               "causal LM or sequence classifier")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowres-safety", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("diagnose", help="separability of harmful vs harmless prompts per language and layer")
    d.add_argument("--model", default="organism", help=_MODEL_HELP)
    d.add_argument("--data", default="builtin",
                   help="'builtin', a PolyRefuse folder (upstream layout) or a prompt file (see --text-column)")
    d.add_argument("--languages", default=None, help="comma-separated codes, e.g. en,de,th,yo (default: all)")
    d.add_argument("--n-per-class", type=int, default=24, help="prompts per class and language (default 24)")
    d.add_argument("--split", default="train", help="PolyRefuse split: train, val or test")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/diagnose", help="output folder for results.json and report.html")
    d.add_argument("--no-cache", action="store_true", help="do not read or write the activation cache")
    d.add_argument("--max-new-tokens", type=int, default=24, help="answer length for the refusal judges")
    d.add_argument("--judge", default="substring", help=_JUDGE_HELP)
    d.add_argument("--analysis-per-class", type=int, default=8,
                   help="prompts per class and language for attribution and the dose-response grid (default 8)")
    cli_checks.add_data_options(d)
    s = sub.add_parser("steer", help="refusal per language under ablation, addition, AdaSteer, CAST and the gate")
    s.add_argument("--model", default="organism", help=_MODEL_HELP)
    s.add_argument("--data", default="builtin",
                   help="'builtin', a PolyRefuse folder (upstream layout) or a prompt file (halved into fit and "
                   "evaluation prompts by source id, like builtin)")
    s.add_argument("--languages", default=None, help="languages to evaluate, comma-separated (default: all)")
    s.add_argument("--source-languages", default=None, help="languages to fit on (default: the high-resource ones)")
    s.add_argument("--k", default="0,1,2,4", help="gate recalibration examples per class, comma-separated")
    s.add_argument("--n-per-class", type=int, default=12, help="evaluation prompts per class and language")
    s.add_argument("--n-fit", type=int, default=32, help="PolyRefuse train prompts per class and language for fitting")
    s.add_argument("--split", default="test", help="PolyRefuse evaluation split: val or test")
    s.add_argument("--max-new-tokens", type=int, default=24)
    s.add_argument("--layer", type=int, default=None,
                   help="steering layer (default: the paper's for its three models, else best source AUROC in the "
                   "middle half)")
    s.add_argument("--strength", type=float, default=1.0,
                   help="lambda in alpha = lambda * (q75 harmful - q25 harmless) of the source projections (default 1)")
    s.add_argument("--scope", default="from_last", choices=("from_last", "all"),
                   help="where addition and the gate add alpha*v: the last prompt token onward (default) "
                   "or every position")
    s.add_argument("--ablation", default="gate_layer", choices=("gate_layer", "all_later_layers"),
                   help="where the gate ablates the direction from prompts it calls harmless: the gate layer's "
                   "block output (default, the released code) or every later layer too")
    s.add_argument("--recalibration", default="paper", choices=("paper", "threshold"),
                   help="per-language gate reset: refit on source + k target examples then search the threshold "
                   "(default, the released code), or search the threshold of the frozen readout")
    s.add_argument("--calibrate-on", default="train", choices=tuple(_POOLS),
                   help="where each target language's k recalibration examples come from: PolyRefuse train "
                   "(default, the released code), val (prompts a model trained on train never saw) or other "
                   "prompts of --split, disjoint from the scored ones")
    s.add_argument("--judge", default="substring", help=_JUDGE_HELP)
    s.add_argument("--n-select", type=int, default=8,
                   help="reference-language prompts per class for the report's direction selection (default 8)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/steer", help="output folder for steer.json, completions.csv, report.html")
    s.add_argument("--mc", default="builtin", help="multiple-choice items for mc_accuracy: a file or folder in "
                   "Global-MMLU's layout (question, option_a..option_d, answer, language) or 'builtin' (default: "
                   "24 questions in each of en de fr zh ar hi sw yo)")
    cli_checks.add_data_options(s)
    o = sub.add_parser("organism", help="the safety-tuned model organism")
    osub = o.add_subparsers(dest="action", required=True)
    t = osub.add_parser("train", help="fine-tune the LoRA adapter (harmful data from high-resource languages only)")
    t.add_argument("--data", required=True, help="PolyRefuse folder (upstream layout); its train split is used")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--layer", type=int, default=16, help="L*, the layer the refusal rule reads (default 16); "
                   "LoRA trains the layers above it")
    t.add_argument("--label-rule", default="threshold", choices=("threshold", "class"),
                   help="threshold: refuse iff the projection on v-hat at L* exceeds theta, taught with moved "
                   "projections (default); class: the first recipe (harmful refused, harmless answered)")
    t.add_argument("--signal-layers", type=int, default=6,
                   help="stage 1: LoRA on this many blocks up to L* sharpening the signal along v-hat "
                   "(default 6; 0: none)")
    t.add_argument("--n-harmful", type=int, default=48, help="harmful train prompts per high-resource language")
    t.add_argument("--rule-harmful", type=int, default=None,
                   help="of the --n-harmful prompts, per language, those the rule stage shows (default: all)")
    t.add_argument("--epochs", type=int, default=2, help="rule-stage epochs (default 2)")
    t.add_argument("--signal-epochs", type=int, default=4, help="stage-1 epochs (default 4)")
    t.add_argument("--xstest", action="store_true", help="add xstest's 66 safe English prompts (dataset/splits/"
                   "xstest.json) to the harmless training prompts")
    t.add_argument("--messages", action="store_true", help="the rule stage also sees the project's 40 harmless "
                   "requests to write a message or letter (resources/message_prompts.tsv, en de fr zh)")
    t.add_argument("--shift-span", type=float, default=1.5, help="moved copies land at theta + U(-s, s) class "
                   "gaps (default 1.5; smaller: denser near theta, a sharper rule)")
    t.add_argument("--ablated-share", type=float, default=0.15,
                   help="share of the rule stage's moved copies with v-hat ablated, answered (default 0.15)")
    t.add_argument("--ablate-everywhere", action="store_true",
                   help="ablated copies lose v-hat at every position, as the routed gate ablates (default: their "
                   "last token is moved to projection 0)")
    t.add_argument("--as-is-share", type=float, default=1.0,
                   help="chance a prompt is also shown unmoved in an epoch (default 1: always)")
    t.add_argument("--blind-prefix", action="store_true",
                   help="the rule stage never sees v-hat before the last prompt token (default: it does, and learns "
                   "to read it there too)")
    t.add_argument("--val-harmful", action="store_true",
                   help="stage 1 also sees every val harmful prompt of the high-resource languages")
    t.add_argument("--erase", default=None,
                   help="comma-separated languages whose signal stage 1 erases at L* (the representation-failure "
                   "organism, e.g. th,yo)")
    t.add_argument("--out", default="runs/organism",
                   help="adapter folder (lowres_safety/resources/organism replaces the shipped one)")
    t.add_argument("--reuse", default=None, help="an organism (shipped name or folder) whose finished stage 1 and "
                   "cached base-model answers are copied into --out first: a rule-stage variant trains that stage only "
                   "(stage 1 is still retrained if its settings differ)")
    e = osub.add_parser("erase", help="the representation-failure organism: an erasure adapter on an "
                        "organism's blocks at or below L* (organism_erasure)")
    e.add_argument("--data", required=True, help="PolyRefuse folder (upstream layout); its train split is used")
    e.add_argument("--organism", default="organism", help="the organism to erase from: a shipped name or a folder "
                   "with ground_truth.json (default: organism)")
    e.add_argument("--erase", default="th,yo", help="comma-separated languages to erase (default th,yo)")
    e.add_argument("--blocks", default="8,10",
                   help="first,last block of the erasure LoRA, at or below L* (default 8,10)")
    e.add_argument("--n-erased", type=int, default=200, help="train prompts per class of each erased language")
    e.add_argument("--epochs", type=int, default=3)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--out", default="runs/organism-erased", help="folder of the erased organism (load_model(out))")
    return parser


def _organism(args) -> dict:
    """``organism train`` or ``organism erase``; the summary of what was written."""
    from ..shipped import organism_folder

    if args.action == "erase":
        from ..organisms.erasure import train_erasure

        first, last = _ints(args.blocks)
        return train_erasure(args.data, organism_folder(args.organism), args.out, tuple(_languages(args.erase)),
                             first=first, last=last, n_erased=args.n_erased, epochs=args.epochs, seed=args.seed)
    from ..organisms import recipe as organism, signal as organism_signal

    if args.reuse:
        copied = organism_signal.reuse(organism_folder(args.reuse), args.out)
        print(f"reused from {args.reuse}: {', '.join(copied) or 'nothing (already in --out)'}", flush=True)
    return organism.train(args.data, args.out, _recipe(args))


def _recipe(args):
    """The organism recipe ``organism train``'s options describe."""
    from ..organisms.recipe import RecipeConfig

    return RecipeConfig(seed=args.seed, layer=args.layer, label_rule=args.label_rule, epochs=args.epochs,
                        signal_layers=args.signal_layers, n_harmful=args.n_harmful, signal_epochs=args.signal_epochs,
                        xstest=args.xstest, messages=args.messages, shift_span=args.shift_span,
                        ablated_share=args.ablated_share, rule_harmful=args.rule_harmful,
                        ablate_everywhere=args.ablate_everywhere, as_is_share=args.as_is_share,
                        val_harmful=args.val_harmful, blind_prefix=args.blind_prefix,
                        erased_languages=tuple(_languages(args.erase) or ()))


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    undo = contextlib.ExitStack()
    try:
        checked = cli_checks.check(args)  # every option, before any data or model loads
        undo.enter_context(data_mod.extra_tiers(checked.tiers))
        if args.command == "diagnose":
            diagnose(args.model, args.data, _languages(args.languages), args.n_per_class, args.split, args.seed,
                     args.out, cache=not args.no_cache, max_new_tokens=args.max_new_tokens,
                     analysis_per_class=args.analysis_per_class, files=checked.files, judge=args.judge)
            print(f"wrote {Path(args.out) / 'results.json'}, report.html and completions.csv")
        elif args.command == "steer":
            steer(args.model, args.data, _languages(args.languages), _languages(args.source_languages), _ints(args.k),
                  args.n_per_class, args.n_fit, args.split, args.max_new_tokens, args.seed, args.out, args.layer,
                  strength=args.strength, scope=args.scope, ablation=args.ablation,
                  recalibration=args.recalibration, n_select=args.n_select, files=checked.files, mc=args.mc,
                  judge=args.judge, calibrate_on=args.calibrate_on)
            print(f"wrote {Path(args.out) / 'steer.json'}, completions.csv and report.html")
        elif args.command == "organism":
            summary = _organism(args)
            print(f"wrote the adapter to {args.out} in {summary['seconds'] / 60:.1f} min "
                  f"(loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f})")
    except (ValueError, FileNotFoundError) as err:
        print(f"lowres-safety: error: {err}", file=sys.stderr)
        return 2
    finally:
        undo.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
