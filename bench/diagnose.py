"""Where a full ``lowres-safety diagnose`` spends its time; prints one JSON object.

Runs the diagnosis on the organism (or ``--model``) twice: on the built-in demo data, and
on PolyRefuse (test split, 32 per class, 6 languages). For each it reports wall time per
stage (load, extraction, representation analysis, generation + refusal judging,
calibration, dose-response, attribution, recoverability, report) and
``generation_fraction`` = generation / total. The issue's expectation is that generation
dominates; the fraction says by how much.

    python bench/diagnose.py                 # both runs (~25-35 min on 2 CPU cores)
    python bench/diagnose.py --only builtin  # one of the two runs
    python bench/diagnose.py --quick         # built-in data only, 8 per class, 3 languages
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

from lowres_safety.pipelines import DiagnoseConfig, diagnose  # noqa: E402

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "Multilingual-Refusal"


def _run(model: str, data: str, languages, n: int, split: str) -> dict:
    config = DiagnoseConfig(model=model, data=data, languages=languages, n_per_class=n, split=split, cache=False)
    timing = diagnose(config).timing
    total = timing["total_s"]
    return {"data": data if data == "builtin" else "polyrefuse", "split": split, "languages": languages,
            "n_per_class": n, "seconds": {k: round(v, 1) for k, v in timing.items()},
            "generation_fraction": round(timing["generation_s"] / total, 3),
            "extraction_fraction": round(timing["extract_s"] / total, 3),
            "analysis_fraction": round(sum(v for k, v in timing.items() if k not in
                                           ("generation_s", "extract_s", "load_model_s", "total_s")) / total, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="organism")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("builtin", "polyrefuse"), default=None)
    args = parser.parse_args()
    runs = []
    if args.quick:
        runs.append(_run(args.model, "builtin", ["en", "de", "sw"], 8, "train"))
    else:
        if args.only in (None, "builtin"):
            runs.append(_run(args.model, "builtin", None, 24, "train"))
        if args.only in (None, "polyrefuse"):
            runs.append(_run(args.model, str(ROOT), ["en", "de", "fr", "ar", "th", "yo"], 32, "test"))
    print(json.dumps({"benchmark": "diagnose", "model": args.model, "torch_threads": torch.get_num_threads(),
                      "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
