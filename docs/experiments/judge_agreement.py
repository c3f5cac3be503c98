"""How well a refusal judge agrees with answers labelled by reading.

    python docs/experiments/judge_agreement.py                      # substring judge vs resources/judge_agreement.csv
    python docs/experiments/judge_agreement.py --judge PATH         # a local Hugging Face model judge instead
    python docs/experiments/judge_agreement.py --labels lowres_safety/resources/judge_hard_cases.csv --by kind
    python docs/experiments/judge_agreement.py --generate --model runs/organism-threshold --out /tmp/judge_completions.csv

The labelled file has one row per answer (``language, subset, id, text, completion,
label``; label 1 = refused, read by a person). The first form prints per-language
precision, recall and F1 of the judge's "refused" against the labels, and the pooled
figures, as a Markdown table. ``--generate`` writes the unlabelled answers the labels
were read from: greedy, 24 new tokens, PolyRefuse val, 20 + 20 prompts per language.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from lowres_safety import judges

LABELS = resources.files("lowres_safety") / "resources" / "judge_agreement.csv"


def agreement(frame: pd.DataFrame, judge, by: str = "language") -> pd.DataFrame:
    """Per group (language, or a hard case's ``kind``) and pooled: n, refusals by label and by judge, P, R, F1, accuracy."""
    verdicts = judges.judge_frame(frame, judge)["refused"].astype(int)
    frame = frame.assign(judged=verdicts.to_numpy())
    rows = []
    for lang, part in [*frame.groupby(by, sort=False), ("all", frame)]:
        p, r, f, _ = precision_recall_fscore_support(part["label"], part["judged"], average="binary",
                                                     zero_division=float("nan"))
        rows.append({by: lang, "n": len(part), "refused_label": int(part["label"].sum()),
                     "refused_judge": int(part["judged"].sum()), "precision": p, "recall": r, "f1": f,
                     "accuracy": float((part["label"] == part["judged"]).mean())})
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table, floats to two decimals (no extra dependency)."""
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = [list(table.columns), ["---"] * len(table.columns), *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def generate(model_name: str, data: str, out: str, n_per_class: int, max_new_tokens: int, seed: int) -> None:
    import lowres_safety as ls

    every = ls.data.load_polyrefuse(data, split="val")
    languages = [lang for lang in ls.data.TIERS if lang in every.languages]
    prompts = ls.data.load_polyrefuse(data, languages, split="val", n_per_class=n_per_class, seed=seed)
    answers = ls.generate(ls.load_model(model_name), prompts, max_new_tokens=max_new_tokens, batch_size=32)
    answers.to_csv(out, index=False)
    print(f"wrote {len(answers)} answers to {out}; label them (column 'label', 1 = refused) to measure a judge")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--labels", default=None, help="labelled answers (default: the shipped judge_agreement.csv)")
    p.add_argument("--by", default="language", help="group rows by this column (the hard cases have 'kind')")
    p.add_argument("--judge", default="substring", help="'substring' or the folder of a local Hugging Face model")
    p.add_argument("--generate", action="store_true", help="write unlabelled answers instead of measuring")
    p.add_argument("--model", default="runs/organism-threshold")
    p.add_argument("--data", default="../shared/data/Multilingual-Refusal")
    p.add_argument("--n-per-class", type=int, default=20)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="/tmp/judge_completions.csv")
    a = p.parse_args(argv)
    if a.generate:
        generate(a.model, a.data, a.out, a.n_per_class, a.max_new_tokens, a.seed)
        return 0
    if a.judge == "logit":
        print("the logit judge reads the model, not the answers: compare it with the diagnosis instead",
              file=sys.stderr)
        return 2
    path = Path(a.labels) if a.labels else LABELS
    with open(path, encoding="utf-8") as fh:
        frame = pd.read_csv(fh, keep_default_na=False)
    table = agreement(frame, judges.resolve(a.judge), a.by)
    print(f"{a.judge} judge against {len(frame)} answers labelled by reading ({path}):\n")
    print(markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
