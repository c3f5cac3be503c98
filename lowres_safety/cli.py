"""The ``lowres-safety`` command: thin callers of the library, one function per subcommand."""

from __future__ import annotations

import argparse
import html
import sys
import time
from pathlib import Path

from . import data as data_mod
from . import directions as dirs
from . import plots, probing
from .activations import extract
from .models import load_model, model_id
from .report import Section, records, write_html, write_json

__all__ = ["diagnose", "main"]


def _languages(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def diagnose(model_name: str = "default", data: str = "builtin", languages=None, n_per_class: int | None = 24,
             split: str = "train", seed: int = 0, out: str | Path = "runs/diagnose", cache: bool = True,
             probe_folds: int = 5) -> dict:
    """Is the harmfulness representation there, per language and layer? Writes results.json and report.html."""
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lowres-safety", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("diagnose", help="separability of harmful vs harmless prompts per language and layer")
    d.add_argument("--model", default="default", help="'default', a local folder or a Hugging Face id")
    d.add_argument("--data", default="builtin", help="'builtin' or a PolyRefuse folder (upstream layout)")
    d.add_argument("--languages", default=None, help="comma-separated codes, e.g. en,de,th,yo (default: all)")
    d.add_argument("--n-per-class", type=int, default=24, help="prompts per class and language (default 24)")
    d.add_argument("--split", default="train", help="PolyRefuse split: train, val or test")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default="runs/diagnose", help="output folder for results.json and report.html")
    d.add_argument("--no-cache", action="store_true", help="do not read or write the activation cache")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "diagnose":
            diagnose(args.model, args.data, _languages(args.languages), args.n_per_class, args.split, args.seed,
                     args.out, cache=not args.no_cache)
            print(f"wrote {Path(args.out) / 'results.json'} and {Path(args.out) / 'report.html'}")
    except (ValueError, FileNotFoundError) as err:
        print(f"lowres-safety: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
