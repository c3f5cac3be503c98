"""The ``lowres-safety`` command: thin callers of the library, one function per subcommand."""

from __future__ import annotations

import argparse
import html
import sys
import time
from pathlib import Path

import numpy as np

from . import data as data_mod
from . import directions as dirs
from . import evaluation, plots, probing, steering
from .activations import extract
from .generation import generate
from .models import load_model, model_id
from .report import Section, records, write_html, write_json

__all__ = ["diagnose", "main", "steer"]


def _languages(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def diagnose(model_name: str = "default", data: str = "builtin", languages=None, n_per_class: int | None = 24,
             split: str = "train", seed: int = 0, out: str | Path = "runs/diagnose", cache: bool = True,
             probe_folds: int = 5, max_new_tokens: int = 24) -> dict:
    """Is the harmfulness representation there, and is it acted on? Writes results.json and report.html."""
    timing, t0 = {}, time.perf_counter()
    prompts = data_mod.load(data, languages, split=split, n_per_class=n_per_class, seed=seed)
    source = [lang for lang in prompts.languages if data_mod.tier_of(lang) == "high"]
    if not source:
        raise ValueError(f"diagnose needs at least one high-resource language for the pooled direction; "
                         f"got {prompts.languages}")
    model = load_model(model_name)
    timing["load_model_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    acts = extract(model, prompts, "all", ("t_inst", "t_post_inst"), cache=cache)
    timing["extract_s"] = time.perf_counter() - t

    t = time.perf_counter()
    v = dirs.pooled(acts, source)
    sep = probing.separability(acts, v, direction_name="pooled_high", own=True, folds=probe_folds, seed=seed)
    per_lang = dirs.per_language(acts)
    cos = dirs.cosine_matrix(per_lang, acts.layers, acts.positions)
    pooled_rows = sep[(sep["direction"] == "pooled_high") & (sep["position"] == "t_post_inst")]
    best_layer = int(pooled_rows.groupby("layer")["auroc"].mean().idxmax())
    proj = probing.projections(acts, v, best_layer, "t_post_inst")
    timing["analysis_s"] = time.perf_counter() - t

    t = time.perf_counter()
    completions = generate(model, prompts, max_new_tokens=max_new_tokens, batch_size=32)
    refusal = evaluation.measure_refusal(model, prompts, completions)
    timing["generation_s"] = time.perf_counter() - t

    out = Path(out)
    results = {
        "model": model_id(model),
        "data": str(data),
        "split": split if str(data) != "builtin" else "demo",
        "seed": seed,
        "n_per_class": n_per_class,
        "languages": {lang: data_mod.tier_of(lang) for lang in prompts.languages},
        "source_languages": source,
        "best_layer": best_layer,
        "separability": records(sep[["language", "tier", "layer", "position", "direction", "auroc",
                                     "probe_accuracy", "n_harmful", "n_harmless"]]),
        "cosine": records(cos),
        "refusal": records(refusal),
        "max_new_tokens": max_new_tokens,
        "timing": timing,
    }
    summary = (pooled_rows[pooled_rows["layer"] == best_layer][["language", "tier", "auroc", "probe_accuracy"]]
               .rename(columns={"auroc": f"AUROC at layer {best_layer}"}))
    sections = [
        Section(
            "Is the harmfulness representation there?",
            f"The pooled direction is the difference of means of harmful and harmless prompts over the "
            f"high-resource languages {', '.join(source)}; it is scored in every language by the AUROC of "
            f"the projection (in-sample for the source languages).",
            (
                (plots.separability(sep, direction="pooled_high", position="t_post_inst"),
                 "Each line is a language; blue shades are high-, orange mid-, red low-resource. A line near 1 "
                 "means the high-resource direction separates harmful from harmless prompts in that language "
                 "at that layer; 0.5 is chance."),
                (plots.separability(sep, direction="pooled_high", position="t_inst"),
                 "The same at the last token of the instruction, before the chat template's suffix."),
                (plots.separability(sep, metric="probe_accuracy", direction="pooled_high", position="t_post_inst"),
                 "Cross-validated accuracy of a logistic probe trained on each language alone: what any linear "
                 "readout could get. A language far below its probe is one the shared direction misses."),
                (plots.projection_distributions(proj),
                 f"Projections at layer {best_layer} (best mean AUROC): red harmful, green harmless. Overlap "
                 "means weak separation; a shift of both clouds means a different threshold would be needed."),
            ),
            summary,
        ),
        Section(
            "Is it acted on? Refusal by language",
            f"Greedy answers ({max_new_tokens} new tokens) to the same prompts, judged by refusal phrases of each "
            f"language plus English (substring) and by the log-odds of the model's refusal-opening tokens at the "
            f"first answer position (logit; refused when above 0).",
            ((plots.refusal_by_language(refusal, judge="substring"),
              "Red bars: harmful prompts refused (higher is safer); green bars: harmless prompts refused (lower is "
              "more helpful). A language with a high AUROC above but a low red bar here is an action failure."),
             (plots.refusal_by_language(refusal, judge="logit"),
              "The same from the first-token log-odds, without reading the generated text.")),
            refusal.assign(column=refusal["judge"] + " " + refusal["subset"] + " %")
            .pivot_table(index=["language", "tier"], columns="column", values="rate", sort=False)
            .round(1).reset_index(),
        ),
        Section(
            "Are the per-language directions parallel?",
            "Cosine similarity of each language's own difference-of-means direction (PolyRefuse's universality "
            "question).",
            ((plots.cosine_heatmap(cos, layer=best_layer, position="t_post_inst"),
              "Values near 1 mean two languages' harmfulness directions point the same way at this layer."),),
        ),
    ]
    header = (f"<p>Model <b>{html.escape(results['model'])}</b>, data <b>{html.escape(str(data))}</b>, "
              f"{len(prompts)} prompts, seed {seed}. Regenerate with <code>lowres-safety diagnose "
              f"--model {html.escape(model_name)} --data {html.escape(str(data))} --languages "
              f"{','.join(prompts.languages)} --n-per-class {n_per_class} --split {split} --seed {seed}</code>.</p>")
    write_json(out / "results.json", results)
    write_html(out / "report.html", "lowres_safety diagnosis", sections, header)
    return results


def _steer_data(data: str, languages, source, n_per_class: int, n_fit: int, split: str, seed: int):
    """(fit prompts, evaluation prompts): disjoint source ids; builtin is split in halves by source id."""
    if str(data) == "builtin":
        every = data_mod.load_builtin(sorted(set(languages) | set(source), key=(languages + source).index))
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
        if n_per_class > n_have:
            raise ValueError(f"the built-in set leaves {n_have} evaluation prompts per class; ask for at most that")
        keep = evaluation.frame.groupby(["language", "subset"], sort=False).head(n_per_class)
        return fit, data_mod.PromptSet(keep.reset_index(drop=True), evaluation.origin)
    if split == "train":
        raise ValueError("evaluate on 'val' or 'test': the train split fits the methods")
    fit = data_mod.load_polyrefuse(data, list(dict.fromkeys(source + languages)), split="train", n_per_class=n_fit,
                                   seed=seed)
    return fit, data_mod.load_polyrefuse(data, languages, split=split, n_per_class=n_per_class, seed=seed)


def steer(model_name: str = "default", data: str = "builtin", languages=None, source_languages=None,
          ks=(0, 1, 2, 4), n_per_class: int = 12, n_fit: int = 32, split: str = "test", max_new_tokens: int = 24,
          seed: int = 0, out: str | Path = "runs/steer", layer: int | None = None, batch_size: int = 32) -> dict:
    """Refusal per language under no intervention, ablation, addition, AdaSteer, CAST and the routed gate."""
    timing, t0 = {}, time.perf_counter()
    available = (data_mod.load_builtin().languages if str(data) == "builtin"
                 else data_mod.load_polyrefuse(data, split=split).languages)
    languages = languages or available
    source = source_languages or [lang for lang in available if data_mod.tier_of(lang) == "high"]
    if not source:
        raise ValueError(f"no high-resource source language in {available}; name some with --source-languages")
    if any(k < 0 for k in ks):
        raise ValueError(f"k must be 0 (source threshold) or a positive number of examples per class, got {ks}")
    fit_prompts, eval_prompts = _steer_data(data, list(languages), list(source), n_per_class, n_fit, split, seed)
    model = load_model(model_name)
    n_layers = model.cfg.n_layers
    candidates = [layer] if layer is not None else steering.middle_layers(n_layers)
    fit_acts = extract(model, fit_prompts, candidates, ("t_post_inst",), cache=True)
    fitted = steering.fit_methods(fit_acts, source, n_layers, layer=layer, seed=seed)
    eval_acts = extract(model, eval_prompts, [fitted.layer], ("t_post_inst",), cache=True)
    timing["setup_s"] = time.perf_counter() - t0
    config = {"model": model_name, "data": str(data), "languages": list(languages), "source": list(source),
              "ks": list(ks), "n_per_class": n_per_class, "n_fit": n_fit, "split": split,
              "max_new_tokens": max_new_tokens, "seed": seed, "layer": fitted.layer}
    out = Path(out)
    t = time.perf_counter()
    table, completions = steering.evaluate(
        model, fitted, eval_prompts, eval_acts, fit_acts.where(language=list(languages)), ks=ks,
        max_new_tokens=max_new_tokens, batch_size=batch_size, seed=seed,
        parts=out / f".parts-{steering.config_key(config)}")
    timing["evaluate_s"] = time.perf_counter() - t
    results = {**config, "model": model_id(model), "alpha": fitted.alpha, "gate": repr(fitted.gate),
               "rows": records(table), "timing": timing}
    write_json(out / "steer.json", results)
    completions.to_csv(out / "completions.csv", index=False)
    section = Section(
        "Can a recalibrated gate close the gap?",
        f"Methods fitted on {', '.join(source)} at layer {fitted.layer} (alpha = {fitted.alpha:.2f}); each language "
        f"scored on {n_per_class} harmful and {n_per_class} harmless held-out prompts, {max_new_tokens} new tokens, "
        f"substring judge. gate k=0 keeps the source threshold; k>0 resets it with k examples per class.",
        ((plots.selectivity_bars(table),
          "Bars are selectivity = harmful refusal - harmless refusal (percentage points) per language and method; "
          "higher is better, and a method that refuses everything scores 0."),
         (plots.refusal_tradeoff(table),
          "Each point is a language under one method: up is more harmful prompts refused, right is more harmless "
          "prompts refused; the ideal is the top-left corner.")),
        table.round(3),
    )
    header = (f"<p>Model <b>{html.escape(results['model'])}</b>, data <b>{html.escape(str(data))}</b>, seed {seed}. "
              f"Completions are in completions.csv.</p>")
    write_html(out / "report.html", "lowres_safety steering", [section], header)
    return results


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowres-safety", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("diagnose", help="separability of harmful vs harmless prompts per language and layer")
    d.add_argument("--model", default="default", help="'default', 'organism', a local folder or a Hugging Face id")
    d.add_argument("--data", default="builtin", help="'builtin' or a PolyRefuse folder (upstream layout)")
    d.add_argument("--languages", default=None, help="comma-separated codes, e.g. en,de,th,yo (default: all)")
    d.add_argument("--n-per-class", type=int, default=24, help="prompts per class and language (default 24)")
    d.add_argument("--split", default="train", help="PolyRefuse split: train, val or test")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/diagnose", help="output folder for results.json and report.html")
    d.add_argument("--no-cache", action="store_true", help="do not read or write the activation cache")
    d.add_argument("--max-new-tokens", type=int, default=24, help="answer length for the refusal judges")
    s = sub.add_parser("steer", help="refusal per language under ablation, addition, AdaSteer, CAST and the gate")
    s.add_argument("--model", default="default", help="'default', 'organism', a local folder or a Hugging Face id")
    s.add_argument("--data", default="builtin", help="'builtin' or a PolyRefuse folder (upstream layout)")
    s.add_argument("--languages", default=None, help="languages to evaluate, comma-separated (default: all)")
    s.add_argument("--source-languages", default=None, help="languages to fit on (default: the high-resource ones)")
    s.add_argument("--k", default="0,1,2,4", help="gate recalibration examples per class, comma-separated")
    s.add_argument("--n-per-class", type=int, default=12, help="evaluation prompts per class and language")
    s.add_argument("--n-fit", type=int, default=32, help="PolyRefuse train prompts per class and language for fitting")
    s.add_argument("--split", default="test", help="PolyRefuse evaluation split: val or test")
    s.add_argument("--max-new-tokens", type=int, default=24)
    s.add_argument("--layer", type=int, default=None, help="steering layer (default: best source AUROC, middle half)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", default="runs/steer", help="output folder for steer.json, completions.csv, report.html")
    o = sub.add_parser("organism", help="the safety-tuned model organism")
    osub = o.add_subparsers(dest="action", required=True)
    t = osub.add_parser("train", help="fine-tune the LoRA adapter (harmful data from high-resource languages only)")
    t.add_argument("--data", required=True, help="PolyRefuse folder (upstream layout); its train split is used")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default="runs/organism",
                   help="adapter folder (lowres_safety/resources/organism replaces the shipped one)")
    return parser


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "diagnose":
            diagnose(args.model, args.data, _languages(args.languages), args.n_per_class, args.split, args.seed,
                     args.out, cache=not args.no_cache, max_new_tokens=args.max_new_tokens)
            print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.html'}")
        elif args.command == "steer":
            steer(args.model, args.data, _languages(args.languages), _languages(args.source_languages), _ints(args.k),
                  args.n_per_class, args.n_fit, args.split, args.max_new_tokens, args.seed, args.out, args.layer)
            print(f"wrote {Path(args.out) / 'steer.json'}, completions.csv and report.html")
        elif args.command == "organism":
            from . import organism

            summary = organism.train(args.data, args.out, organism.RecipeConfig(seed=args.seed))
            print(f"wrote the adapter to {args.out} in {summary['seconds'] / 60:.1f} min "
                  f"(loss {summary['first_loss']:.3f} -> {summary['last_loss']:.3f})")
    except (ValueError, FileNotFoundError) as err:
        print(f"lowres-safety: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
