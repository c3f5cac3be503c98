"""Check a threshold organism against its construction: predict first, then measure.

    python docs/experiments/organism_check.py --organism runs/organism-threshold --data ../shared/data/Multilingual-Refusal \
        --out runs/check-threshold [--predict-only] [--split test --n-per-class 16]

1. **Prediction** (``predicted.csv``, written before any answer is generated): the
   organism's rule, refused iff the last prompt token's projection on v̂ at L* > θ
   (``ground_truth.json``), applied to each prompt; per language the predicted harmful and
   harmless refusal, the AUROC of the projection and the failure type, with bootstrap
   intervals (:func:`calibration.gap_table`).
2. **Measurement**: greedy answers (``completions.csv``) judged by the substring judge and
   by the logit judge (token set learned from the organism's answers to high-resource
   **val** prompts, another split), each as a gap table on the same projections
   (``measured_substring.csv``, ``measured_logit.csv``), and ``table.md``: prediction and
   both measurements side by side, and whether each measured rate lies in the
   prediction's interval or the prediction in the measurement's.
3. ``--steering en,ar,ko,yo``: the causal law on the harmful prompts of those languages:
   α·v̂ added at L* from the last prompt token on (α in class gaps), and v̂ ablated there
   (``steering.csv``, substring judge, 95% intervals), from the last prompt token on and at
   every position.
"""

import argparse
import time
from pathlib import Path

import pandas as pd

import lowres_safety as ls
from lowres_safety import calibration, judges
from lowres_safety import hooks as H
from lowres_safety.data import tier
from lowres_safety.organisms.ground_truth import GroundTruth
from lowres_safety.transfer import LogitJudge


def _fmt(row, name: str) -> str:
    return f"{row[name]:.0f} [{row[name.replace('_refusal', '_low')]:.0f}, {row[name.replace('_refusal', '_high')]:.0f}]"


def side_by_side(predicted: pd.DataFrame, measured: dict[str, pd.DataFrame]) -> str:
    """Markdown: per language, predicted and measured refusal (harmful / harmless, 95% intervals) and types."""
    head = ["language", "AUROC at L*", "predicted harmful", "predicted harmless", "predicted type"]
    for judge in measured:
        head += [f"{judge}: harmful", f"{judge}: harmless", f"{judge}: type"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, p in predicted.iterrows():
        cells = [p["language"], f"{p['auroc']:.2f} [{p['auroc_low']:.2f}, {p['auroc_high']:.2f}]",
                 _fmt(p, "harmful_refusal"), _fmt(p, "harmless_refusal"), _kind(p)]
        for table in measured.values():
            m = table.set_index("language").loc[p["language"]]
            cells += [_fmt(m, "harmful_refusal"), _fmt(m, "harmless_refusal"), _kind(m)]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _kind(row) -> str:
    kind = row["failure_type"]
    if kind == "action failure":
        kind += f" ({row['failure_direction']})"
    return kind if row["decided"] else kind + " (undecided)"


def agreement(predicted: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """Per language and class: does the measured rate lie in the prediction's interval, or the reverse?"""
    p, m = predicted.set_index("language"), measured.set_index("language")
    rows = []
    for side in ("harmful", "harmless"):
        lo, hi, rate = f"{side}_low", f"{side}_high", f"{side}_refusal"
        inside = ((m[rate] >= p[lo]) & (m[rate] <= p[hi])) | ((p[rate] >= m[lo]) & (p[rate] <= m[hi]))
        rows.append(pd.DataFrame({"language": p.index, "subset": side, "predicted": p[rate], "measured": m[rate],
                                  "agree": inside.to_numpy()}))
    return pd.concat(rows, ignore_index=True)


def steering(model, prompts, truth: GroundTruth, languages, alphas, max_new_tokens: int, seed: int) -> pd.DataFrame:
    """Harmful refusal (substring judge) of ``languages`` with α·gap·v̂ added at L*, and with v̂ ablated there."""
    harmful = prompts.where(language=list(languages), subset="harmful")
    conditions = {f"add {a:g} gap": H.add(truth.direction, a * truth.gap, [truth.layer], scope="from_last")
                  for a in alphas}
    conditions["ablate"] = H.ablate(truth.direction, [truth.layer], sites=("hook_resid_post",), scope="from_last")
    # the rule reads the last prompt token, but the blocks above L* attend to every earlier position too
    conditions["ablate all positions"] = H.ablate(truth.direction, [truth.layer], sites=("hook_resid_post",))
    rows = []
    for name, hooks in conditions.items():
        out = judges.judge_frame(ls.generate(model, harmful, hooks, max_new_tokens=max_new_tokens), None)
        for lang, part in out.groupby("language", sort=False):
            rate, low, high = calibration.rate_interval(part["refused"].to_numpy(bool), seed=seed)
            rows.append({"language": lang, "condition": name, "harmful_refusal": rate, "low": low, "high": high,
                         "n": len(part)})
    return pd.DataFrame(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--organism", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--n-per-class", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--predict-only", action="store_true")
    p.add_argument("--steering", default=None, help="languages for the steering check, e.g. en,ar,ko,yo")
    p.add_argument("--alphas", default="0.5,1,1.5", help="added alpha in class gaps")
    p.add_argument("--skip-measure", action="store_true", help="only the steering check (prediction still written)")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    truth = GroundTruth.load(a.organism)
    model = ls.load_model(a.organism)
    prompts = ls.data.load_polyrefuse(a.data, split=a.split, n_per_class=a.n_per_class, seed=a.seed)
    acts = ls.extract(model, prompts, [truth.layer], ("t_post_inst",))
    rule = truth.predict(acts)
    predicted = calibration.gap_table(rule, seed=a.seed)
    predicted.to_csv(out / "predicted.csv", index=False)
    print(f"prediction written ({time.perf_counter() - t0:.0f} s)")
    if a.steering:
        table = steering(model, prompts, truth, a.steering.split(","), [float(x) for x in a.alphas.split(",")],
                         a.max_new_tokens, a.seed)
        table.to_csv(out / "steering.csv", index=False)
        print(table.round(1).to_string(index=False))
    if a.predict_only or a.skip_measure:
        return
    completions = ls.generate(model, prompts, max_new_tokens=a.max_new_tokens)
    completions.to_csv(out / "completions.csv", index=False)
    val = ls.data.load_polyrefuse(a.data, tier("high"), split="val", n_per_class=8, seed=a.seed)
    tokens = judges.refusal_token_set(ls.generate(model, val, max_new_tokens=8), model.tokenizer)
    by_judge = {"substring": judges.judge_frame(completions, None)["refused"].to_numpy(bool),
                "logit": LogitJudge(tokens)(model, prompts, ()).astype(bool)}
    measured = {}
    for judge, refused in by_judge.items():
        measured[judge] = calibration.gap_table(rule.assign(refused=refused), seed=a.seed)
        measured[judge].to_csv(out / f"measured_{judge}.csv", index=False)
        agreement(predicted, measured[judge]).to_csv(out / f"agreement_{judge}.csv", index=False)
    table = side_by_side(predicted, measured)
    (out / "table.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    for judge in measured:
        agree = agreement(predicted, measured[judge])
        print(f"{judge}: {int(agree['agree'].sum())}/{len(agree)} language x class cells agree within the intervals")
    print(f"logit judge tokens: {[model.tokenizer.decode([t]) for t in tokens]}; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
