"""How much a routed fix could gain per language at a utility cost, whatever its calibration: the selectivity ceiling.

    python docs/experiments/fix_ceiling.py --steer runs/organism-v3-steer-val/steer.json [--organism organism]
        [--kl-budget 0.3] [--split val] [--n-per-class 100]

Reads a `steer` run on an organism (its ``steer.json``): the languages, split, seed and
prompt count (the same prompts are drawn again; ``--split`` and ``--n-per-class`` draw others,
and the run's measured Δs are then not shown), and per language the measured Δ of no intervention and of the gate at each k, the
KL of a harmless prompt steered to refuse (the addition row) and of one with v̂ ablated (the
k = 0 gate's ``kl_ablated``: it routes nearly every prompt to ablation). From the two KLs
the share of harmless prompts the fix may send to addition within the budget
(``calibration.misrouting_budget``); then, for two readouts — the organism's own rule,
v̂'s projection at L*, and the gate's source-fitted logit (k = 0, fitted as ``steer`` fits
it) — the best Δ any threshold reaches within that share, and with no limit
(``calibration.selectivity_ceiling``, 95% intervals). The organism refuses every prompt
routed to addition and none routed to ablation (the steer table's addition and ablation
rows), so a routed Δ is exactly TPR − FPR, and the ceiling minus the rule's own Δ (v̂'s projection
against θ, which the organism follows with no intervention) is the most a fix reading that score
can gain, with k examples or with an oracle threshold.
"""

import argparse
import json
from pathlib import Path

import pandas as pd

import lowres_safety as ls
from lowres_safety.calibration import misrouting_budget, selectivity_ceiling
from lowres_safety.gate import Gate
from lowres_safety.organisms.ground_truth import GroundTruth
from lowres_safety.shipped import organism_folder


def cell(triple: tuple[float, float, float]) -> str:
    return f"{triple[0]:.0f} [{triple[1]:.0f}, {triple[2]:.0f}]"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steer", required=True, help="a steer run's steer.json")
    p.add_argument("--organism", default="organism", help="the organism that run steered (a shipped name or folder)")
    p.add_argument("--kl-budget", type=float, default=0.3, help="mean KL allowed on harmless prompts")
    p.add_argument("--split", help="draw the prompts from this split instead of the run's (the run's KLs are kept)")
    p.add_argument("--n-per-class", type=int, help="prompts per class and language (default: the run's)")
    a = p.parse_args()
    run = json.loads(Path(a.steer).read_text(encoding="utf-8"))
    rows = pd.DataFrame(run["rows"])
    split, n = a.split or run["split"], a.n_per_class or run["n_per_class"]
    truth = GroundTruth.load(organism_folder(a.organism))
    model = ls.load_model(a.organism)
    languages, source = run["languages"], run["source"]
    prompts = ls.data.load_polyrefuse(run["data"], languages, split=split, n_per_class=n,
                                      seed=run["seed"])
    fit = ls.data.load_polyrefuse(run["data"], list(dict.fromkeys(source + languages)), split="train",
                                  n_per_class=run["n_fit"], seed=run["seed"])
    acts = ls.extract(model, prompts, [truth.layer], ("t_post_inst",))
    fit_acts = ls.extract(model, fit, [truth.layer], ("t_post_inst",)).where(language=source)
    gate = Gate(seed=run["seed"]).fit(fit_acts, truth.layer, "t_post_inst", source)
    rule = truth.predict(acts)  # per prompt: projection on v̂ at L* and the rule's refusal
    readouts = {"v̂ at L*": rule["projection"].to_numpy(), "gate (k = 0)": gate.raw_logits(acts).numpy()}
    frame = prompts.frame
    out = []
    for lang in languages:
        mine = rows[rows["language"] == lang].set_index(["method", "k"])
        kl_add, kl_abl = float(mine.loc[("addition", 0), "kl"]), float(mine.loc[("gate", 0), "kl_ablated"])
        share = misrouting_budget(a.kl_budget, kl_add, kl_abl)
        here = (frame["language"] == lang).to_numpy()
        harmful = (frame["subset"] == "harmful").to_numpy()[here]
        refused = rule["refused"].to_numpy()[here]
        rule_delta = 100 * (refused[harmful].mean() - refused[~harmful].mean())
        row = {"language": lang, "KL add / ablate": f"{kl_add:.1f} / {kl_abl:.2f}",
               "budget share": share if kl_abl <= a.kl_budget else "0: ablating alone > budget",
               "rule Δ (θ)": rule_delta}
        if (split, n) == (run["split"], run["n_per_class"]):  # the run's own prompts: its measured rows apply
            row |= {f"{m} k={k} Δ, measured": float(mine.loc[(m, k), "selectivity"])
                    for m, k in [("none", 0)] + [("gate", k) for k in run["ks"] if k]}
        for name, score in readouts.items():
            row[f"AUROC {name}"] = float(ls.probing.auroc(score[here], harmful))
            within = selectivity_ceiling(score[here], harmful, max_misrouted=share, seed=run["seed"])
            row[f"ceiling {name}"] = cell(within)
            row[f"max gain {name}"] = within[0] - rule_delta
            row[f"ceiling {name}, no budget"] = cell(selectivity_ceiling(score[here], harmful, max_misrouted=1.0,
                                                                         seed=run["seed"]))
        out.append(row)
    table = pd.DataFrame(out).set_index("language").T
    print(f"{a.organism}, {split} prompts ({n} per class, seed {run['seed']}); KLs from {a.steer}; "
          f"KL budget {a.kl_budget}\nrefitted {gate!r}\nthe run's  {run['gate']}")
    with pd.option_context("display.width", 200, "display.max_colwidth", 20):
        print(table.to_string(float_format=lambda x: f"{x:.2f}" if abs(x) < 1 else f"{x:.1f}"))


if __name__ == "__main__":
    main()
