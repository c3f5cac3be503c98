"""How much of the separability the toolkit reports on PolyRefuse is the prompts' form?

    python docs/experiments/form_polyrefuse.py --data ../shared/data/Multilingual-Refusal --split test \
        --n-per-class 16 --models organism,default --out runs/form-polyrefuse

Per model and language: the AUROC of the token count alone, of a cross-validated form-only
probe, of the pooled high-resource direction's held-out projection (as the gap table
scores it) and of that projection with form partialled out (``form.residualised_projections``),
each with a 95% class-stratified bootstrap interval, at the organism's rule layer L*
(the same layer for the base model). Writes ``form.csv`` and ``table.md``.
"""

import argparse
import time
from pathlib import Path

import pandas as pd

import lowres_safety as ls
from lowres_safety import form, probing
from lowres_safety.pipelines.report import interval_cell
from lowres_safety.presets import preset_for


def measure(model_name: str, prompts, layer: int, seed: int) -> pd.DataFrame:
    model = ls.load_model(model_name)
    source = ls.in_tier(prompts.languages, "high")
    acts = ls.extract(model, prompts, [layer], ["t_post_inst"], cache=True)
    held = probing.heldout_projections(acts, source, layer, folds=5, seed=seed)
    controls = form.form_controls(acts, ls.directions.pooled(acts, source), layer, model.tokenizer, seed=seed)
    rows = []
    for name, proj in (("held_out", held), ("held_out_residualised",
                                            form.residualised_projections(held, prompts, model.tokenizer))):
        for lang, part in proj.groupby("language", sort=False):
            y = (part["subset"] == "harmful").to_numpy()
            point, lo, hi = probing.auroc_interval(part["projection"].to_numpy(), y, seed=seed)
            rows.append({"language": lang, "tier": ls.data.tier_of(lang), "control": name, "auroc": point,
                         "auroc_low": lo, "auroc_high": hi})
    out = pd.concat([controls[["language", "tier", "control", "auroc", "auroc_low", "auroc_high"]], pd.DataFrame(rows)])
    return out.assign(model=model_name)


def table(frame: pd.DataFrame) -> str:
    cells = frame.assign(cell=list(map(interval_cell, frame["auroc"], frame["auroc_low"], frame["auroc_high"])))
    wide = cells.pivot_table(index=["model", "language", "tier"], columns="control", values="cell", aggfunc="first",
                             sort=False)
    order = ["length", "form_probe", "held_out", "held_out_residualised", "direction", "residualised"]
    wide = wide[[c for c in order if c in wide]].reset_index()
    head = "| " + " | ".join(wide.columns) + " |"
    return "\n".join([head, "|" + "---|" * len(wide.columns)] +
                     ["| " + " | ".join(str(v) for v in row) + " |" for row in wide.itertuples(index=False)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--n-per-class", type=int, default=16)
    ap.add_argument("--models", default="organism,default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/form-polyrefuse")
    args = ap.parse_args()
    t = time.perf_counter()
    prompts = ls.data.load_polyrefuse(args.data, split=args.split, n_per_class=args.n_per_class, seed=args.seed)
    layer = preset_for("organism").gate_layer
    frame = pd.concat([measure(m, prompts, layer, args.seed) for m in args.models.split(",")], ignore_index=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "form.csv", index=False)
    (out / "table.md").write_text(table(frame) + "\n", encoding="utf-8")
    print(table(frame))
    print(f"{time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
