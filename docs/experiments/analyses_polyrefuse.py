"""The paper's analyses (``ls.analyses``) on the organism and PolyRefuse: the figures issue 29's note reports.

    python docs/experiments/analyses_polyrefuse.py --data ../shared/data/Multilingual-Refusal \
        --model organism --seeds 10 --budgets 1,4,16,64 --n-train 100 --n-eval 64 --out runs/analyses-polyrefuse

Activations at the organism's rule layer (the gate layer), PolyRefuse train, val and test
prompts of the languages present (all of them, or ``--n-train`` / ``--n-eval`` per class,
seeded). Writes ``recoverability.csv``, ``rank_sweep.csv``,
``readouts.csv`` and ``tables.md`` (with each analysis's wall time), and prints the tables.
"""

import argparse
import time
from pathlib import Path

import pandas as pd

import lowres_safety as ls
from lowres_safety import analyses
from lowres_safety.presets import preset_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default="organism")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", default="1,4,16,64")
    parser.add_argument("--n-train", type=int, default=None, help="train prompts per class and language (all)")
    parser.add_argument("--n-eval", type=int, default=None, help="val and test prompts per class and language (all)")
    parser.add_argument("--out", default="runs/analyses-polyrefuse")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budgets = [int(b) for b in args.budgets.split(",")]
    seeds = range(args.seeds)
    t = time.perf_counter()
    model = ls.load_model(args.model)
    layer = preset_for(ls.models.model_id(model)).gate_layer
    sizes = {"train": args.n_train, "val": args.n_eval, "test": args.n_eval}
    prompts = ls.PromptSet(pd.concat([ls.data.load_polyrefuse(args.data, split=s, n_per_class=n, seed=0).frame
                                      for s, n in sizes.items()], ignore_index=True), "PolyRefuse train + val + test")
    acts = ls.extract(model, prompts, [layer], ("t_post_inst",), cache=True)
    high = ls.in_tier(prompts.languages, "high")
    lines = [f"model {ls.models.model_id(model)}, layer {layer}, {len(prompts)} prompts "
             f"({prompts.frame.groupby(['split', 'subset']).size().to_dict()}); extraction {time.perf_counter() - t:.0f} s", ""]

    t = time.perf_counter()
    rec = analyses.recoverability(acts, layer, source_languages=high, budgets=budgets, seeds=seeds,
                                  model=ls.models.model_id(model))
    rec.to_csv(out / "recoverability.csv", index=False)
    table = (rec[~rec.language.str.startswith("__")].groupby(["language", "readout", "budget"])["auc"].mean()
             .unstack("budget").round(3))
    lines += [f"## Recoverability (test AUC, mean over {args.seeds} seeds; {time.perf_counter() - t:.0f} s)", "",
              table.to_string(), ""]

    t = time.perf_counter()
    ranks = analyses.rank_sweep(acts, layer, source_languages=high, budgets=[0, *budgets], seeds=seeds,
                                model=ls.models.model_id(model))
    ranks.to_csv(out / "rank_sweep.csv", index=False)
    table = (ranks[ranks.language == "__macro__"].groupby(["rank", "budget"])[["balanced_accuracy", "f1"]].mean()
             .unstack("budget").round(3))
    lines += [f"## Rank sweep (macro over targets, test, global threshold; {time.perf_counter() - t:.0f} s)", "",
              table.to_string(), ""]

    t = time.perf_counter()
    targets = [lang for lang in prompts.languages if lang not in high]
    readouts = analyses.compare_readouts(acts, layer, targets=targets, budgets=budgets, seeds=range(min(args.seeds, 3)),
                                         ranks=(1, 3, 5, 10), direction_groups=("hrl",), subspace_groups=("hrl",),
                                         random_subspaces=True, threshold_source="target_budget",
                                         model=ls.models.model_id(model))
    readouts.to_csv(out / "readouts.csv", index=False)
    same = readouts[(readouts.language == "__macro__") & (readouts.split == "test") & readouts.method.isin(
        ["subspace_logistic", "pca_subspace_logistic", "random_subspace_logistic", "full_space_logistic",
         "source_direction_budget_threshold", "target_only_direction"])]
    table = (same.groupby(["method", "rank", "budget"], dropna=False)[["auc", "balanced_accuracy"]].mean()
             .unstack("budget").round(3))
    lines += [f"## Readout comparison (macro over {targets}, test, k-shot thresholds, "
              f"{min(args.seeds, 3)} seeds; {time.perf_counter() - t:.0f} s)", "", table.to_string(), ""]
    (out / "tables.md").write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
