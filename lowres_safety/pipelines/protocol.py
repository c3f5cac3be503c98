"""A steer run's settings beside the released run's (rashadaziz/low-resource-safety), row by row.

Every ``steer`` report carries this table, so a reader sees at once where a run is the
paper's experiment and where it is not, and why (what cannot be matched offline: the
GPT-4o-mini judge, the full-size models, upstream's and IBM's files unless given).
"""

from __future__ import annotations

import pandas as pd

from .config import PAPER, SteerConfig

__all__ = ["RELEASED", "settings_table"]

#: setting -> (the released run's value, where it is set)
RELEASED = {
    "source fit prompts": ("every train prompt of en de fr es it nl pl ru zh ja (10 × (260 + 200))",
                           "configs/intervention/conditional_vhrl.yaml: source_languages, train_split"),
    "evaluation prompts": ("every test prompt (samples_per_subset: null)",
                           "conditional_vhrl.py::sample_eval_items"),
    "gate budgets k": ("64 per class (budget: 64); the paper's figures sweep 1–64",
                       "configs/intervention/conditional_vhrl.yaml: budget"),
    "k-shot draws": ("each language its own draw", "conditional_vhrl.py: stable_seed(seed, model, language, …)"),
    "new tokens": ("128, greedy", "configs/generation/greedy.yaml"),
    "judge": ("GPT-4o-mini with the refusal rules", "src/multilingual_latent_safety/judges/refusal.py"),
    "utility": ("Global-MMLU test, every item", "configs/routing_refusal/evaluate_global_mmlu_utility.yaml"),
    "seeds": ("0", "configs/intervention/conditional_vhrl.yaml: seed"),
    "AdaSteer k = 0 vectors": ("upstream AdaSteer's vector files", "scripts/routing_refusal/download_adasteer_vectors.py"),
    "CAST k = 0 data": ("IBM activation-steering demo data", "configs/routing_refusal/run_cast_steering.yaml: "
                        "official_data_root"),
    "adapted baselines": ("32 + 32 train prompts of each low-resource language, pooled; CAST tuned on target val",
                          "compute_adapted_adasteer_vectors.py, run_cast_steering.py::polyrefuse_budget_pairs"),
}


def _count(n) -> str:
    return "every prompt of the split" if n is None else f"{n} per class and language"


def settings_table(c: SteerConfig, source: list[str]) -> pd.DataFrame:
    """One row per setting: this run's value, the released run's, where the released one is set, and whether
    they agree (``same``; None where only the names can be compared, e.g. data paths)."""
    judge = {"substring": "substring (refusal phrases)", "logit": "first-token log-odds"}.get(c.judge,
                                                                                              f"local model {c.judge}")
    mine = {
        "source fit prompts": (f"{_count(c.n_fit)} of {' '.join(source)}", c.n_fit is None),
        "evaluation prompts": (_count(c.n_per_class), c.n_per_class is None),
        "gate budgets k": (", ".join(map(str, c.ks)), 64 in c.ks),
        "k-shot draws": ("each language its own draw (data.language_seed)", True),
        "new tokens": (f"{c.max_new_tokens}, greedy", c.max_new_tokens == PAPER["max_new_tokens"]),
        "judge": (judge, False),
        "utility": ("built-in 24 questions per language" if c.mc == "builtin" else c.mc, None if c.mc != "builtin"
                    else False),
        "seeds": (", ".join(map(str, c.run_seeds)), 0 in c.run_seeds),
        "AdaSteer k = 0 vectors": (c.adasteer_vectors or "built from the source prompts, upstream's meaning",
                                   c.adasteer_vectors is not None or None),
        "CAST k = 0 data": (c.cast_data or "the source prompts", c.cast_data is not None),
        "adapted baselines": ("pooled low-resource, CAST tuned on target val" if c.adapted_from == "pooled"
                              else "each target's own pool", c.adapted_from == "pooled"),
    }
    rows = [{"setting": name, "this run": value, "released": RELEASED[name][0], "same": same,
             "released in": RELEASED[name][1]} for name, (value, same) in mine.items()]
    return pd.DataFrame(rows)
