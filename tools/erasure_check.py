"""How much harmfulness signal an organism's rule can read, per language: the check erasures are chosen by.

    python tools/erasure_check.py --organism runs/organism-erased-v3 --split val

Prints, per language, the AUROC of the last prompt token's projection on the organism's
v̂ at L* and the harmful and harmless mean projections
(:func:`organism_erasure.separation`), on PolyRefuse prompts of one split. Use val to
choose a recipe; test only to report the one chosen.
"""

import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import lowres_safety as ls  # noqa: E402
from lowres_safety.organisms.ground_truth import GroundTruth  # noqa: E402
from lowres_safety.organisms.erasure import separation  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--organism", required=True, help="a folder with ground_truth.json and the adapters")
    p.add_argument("--data", default="../shared/data/Multilingual-Refusal")
    p.add_argument("--split", default="val", choices=("train", "val", "test"))
    p.add_argument("--languages", default="th,yo,ar,ko,en,de")
    p.add_argument("--n-per-class", type=int, default=24)
    p.add_argument("--seed", type=int, default=3)
    a = p.parse_args()
    truth = GroundTruth.load(a.organism)
    prompts = ls.data.load_polyrefuse(a.data, a.languages.split(","), split=a.split, n_per_class=a.n_per_class,
                                      seed=a.seed)
    print(separation(ls.load_model(a.organism), truth, prompts).round(2).to_string(index=False))


if __name__ == "__main__":
    main()
