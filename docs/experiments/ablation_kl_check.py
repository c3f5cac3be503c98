"""What the routed gate's ablation costs an organism on prompts it should answer, without any routing error.

    python docs/experiments/ablation_kl_check.py --data ../shared/data/Multilingual-Refusal \
        [--organisms organism,runs/organism-v4] [--languages en,ar,ko,yo,pl,ja,fr] [--split val --n 16]

For each organism (a shipped name or a folder with ``ground_truth.json``): the mean
KL(p ‖ p_ablated) at the first response token over harmless prompts, with v̂ (the
organism's own, from ``ground_truth.json``) ablated at L*'s block output at every position
(what ``hooks.route`` does to a prompt it judges harmless) and only from the last prompt
token on. `steer`'s ``kl_ablated`` is the same quantity under the fitted gate's own v̂;
``kl`` adds the harmless prompts the gate sends to addition. Default split: val (no
organism trains on val harmless prompts), so this can choose between recipes.
"""

import argparse

import pandas as pd

import lowres_safety as ls
from lowres_safety import hooks as H
from lowres_safety.evaluation import kl_divergence
from lowres_safety.organisms.ground_truth import GroundTruth
from lowres_safety.shipped import organism_folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--organisms", default="organism")
    p.add_argument("--languages", default="en,ar,ko,yo,pl,ja,fr")
    p.add_argument("--split", default="val")
    p.add_argument("--n", type=int, default=16, help="harmless prompts per language")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    prompts = ls.data.load_polyrefuse(a.data, a.languages.split(","), split=a.split, n_per_class=a.n,
                                      seed=a.seed).where(subset="harmless")
    rows = []
    for name in a.organisms.split(","):
        model = ls.load_model(name)
        truth = GroundTruth.load(organism_folder(name))
        for scope in ("all", "from_last"):
            hooks = H.ablate(truth.direction, [truth.layer], sites=("hook_resid_post",), scope=scope)
            kl = kl_divergence(model, prompts, hooks).numpy()
            rows += [{"organism": name, "v̂ ablated at": scope, "language": lang,
                      "kl": kl[(prompts.frame["language"] == lang).to_numpy()].mean()} for lang in prompts.languages]
    table = pd.DataFrame(rows).pivot_table(index=["organism", "v̂ ablated at"], columns="language", values="kl",
                                           sort=False)
    print(f"KL at the first response token, {a.split} harmless prompts ({a.n} per language):")
    print(table.round(2).to_string())


if __name__ == "__main__":
    main()
