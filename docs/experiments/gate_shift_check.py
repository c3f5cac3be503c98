"""Why the recalibrated gate fails on some languages: are its calibration and scored prompts alike?

    python docs/experiments/gate_shift_check.py --data ../shared/data/Multilingual-Refusal [--languages th,pl,ar]

Fits the released-code gate at the organism's L* on high-resource **train** prompts (32 per
class), then per language prints the readout's and v̂'s AUROC and class means on the
calibration pool (train) and on the scored prompts (test, 16 per class), and the balanced
accuracy on test after recalibrating with 4 + 4 train examples, over 10 draws, both ways
(``paper``: refit then search; ``threshold``: search only), and, to test whether the
split is what fails, the same with the 4 + 4 drawn from 16 + 16 *other* test prompts
(same source ids in no two halves) and from 16 + 16 **val** prompts (``steer --calibrate-on
val``: a split no organism recipe trains on). The README's figures on Thai, Polish and
Arabic come from it.
"""

import argparse

import numpy as np

import lowres_safety as ls
from lowres_safety.data import tier
from lowres_safety.gate import Gate
from lowres_safety.organisms.ground_truth import GroundTruth
from lowres_safety.probing import auroc
from lowres_safety.shipped import adapter_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--languages", default="th,pl,ar")
    p.add_argument("--draws", type=int, default=10)
    a = p.parse_args()
    targets = a.languages.split(",")
    layer = GroundTruth.load(adapter_dir("organism")).layer
    model = ls.load_model("organism")
    fit = ls.data.load_polyrefuse(a.data, list(tier("high")) + targets, split="train", n_per_class=32, seed=0)
    test = ls.data.load_polyrefuse(a.data, targets, split="test", n_per_class=32, seed=0)
    ids = sorted(set(test.frame["source_id"]))
    pool = test.where(id=test.frame[test.frame["source_id"].isin(ids[::2])]["id"].tolist())  # calibration half
    test = test.where(id=test.frame[~test.frame["source_id"].isin(ids[::2])]["id"].tolist())  # scored half
    fa = ls.extract(model, fit, [layer], ("t_post_inst",), progress=False)
    ta = ls.extract(model, test, [layer], ("t_post_inst",), progress=False)
    pa = ls.extract(model, pool, [layer], ("t_post_inst",), progress=False)
    val = ls.data.load_polyrefuse(a.data, targets, split="val", n_per_class=16, seed=1)
    va = ls.extract(model, val, [layer], ("t_post_inst",), progress=False)
    source = [lang for lang in tier("high") if lang in fa.prompts.languages]
    gate = Gate(seed=0).fit(fa, layer, "t_post_inst", source)
    v = ls.directions.unit(ls.directions.pooled(fa.where(language=source))[0, 0])
    for lang in targets:
        print(lang)
        for split, acts in (("train", fa.where(language=lang)), ("val", va.where(language=lang)),
                            ("test", ta.where(language=lang))):
            y = acts.prompts.labels.astype(bool)
            logit, proj = gate.raw_logits(acts).numpy(), (acts.at(layer, "t_post_inst") @ v).numpy()
            print(f"  {split}: readout AUROC {auroc(logit, y):.2f}, means {logit[y].mean():.2f} / {logit[~y].mean():.2f};"
                  f" v AUROC {auroc(proj, y):.2f}, means {proj[y].mean():.1f} / {proj[~y].mean():.1f}")
        for calib, acts in (("train", fa), ("val", va), ("other test", pa)):
            for method in ("paper", "threshold"):
                bas = [gate.recalibrate(acts.where(language=lang), 4, seed=s, method=method).balanced_accuracy(
                    ta.where(language=lang)) for s in range(a.draws)]
                print(f"  k=4 from {calib}, {method}: test balanced accuracy {np.round(bas, 2).tolist()}, "
                      f"mean {np.mean(bas):.2f}")


if __name__ == "__main__":
    main()
