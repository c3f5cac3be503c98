"""English harmful refusal on the built-in demo set, unsteered and with v̂ ablated at L* at every position.

    python docs/experiments/demo_ablation_check.py organism runs/organism-v6 runs/organism-v7

The issue's ablation target ("ablating v̂ drops English harmful refusal to ≤ 20%") read on the
demo set (the main job's prompts, used for choosing recipes) instead of PolyRefuse test, so a
recipe can be chosen on it; PolyRefuse val does not tell v6 from the shipped organism (README).
Substring judge, 24 new tokens, 95% bootstrap intervals.
"""

import argparse

import lowres_safety as ls
from lowres_safety import calibration, judges
from lowres_safety import hooks as H
from lowres_safety.organisms.ground_truth import GroundTruth
from lowres_safety.shipped import organism_folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("organisms", nargs="+", help="shipped names or organism folders")
    a = p.parse_args()
    prompts = ls.data.load_builtin(["en"]).where(subset="harmful")
    for name in a.organisms:
        truth = GroundTruth.load(organism_folder(name))
        model = ls.load_model(name)
        ablated = H.ablate(truth.direction, [truth.layer], sites=("hook_resid_post",))
        for condition, hooks in (("none", []), ("v̂ ablated at every position", ablated)):
            out = judges.judge_frame(ls.generate(model, prompts, hooks, max_new_tokens=24, progress=False), None)
            rate, low, high = calibration.rate_interval(out["refused"].to_numpy(bool))
            print(f"{name}\t{condition}\t{rate:.0f} [{low:.0f}, {high:.0f}] of {len(out)}", flush=True)


if __name__ == "__main__":
    main()
