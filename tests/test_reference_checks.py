"""Analyses checked cell by cell against an independent computation (sklearn, a hand formula, a direct pass).

Each test names the wrong implementation it catches.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lowres_safety import dose_response as D
from lowres_safety import hooks as H
from lowres_safety import judges, probing
from lowres_safety.activations import ActivationSet
from lowres_safety.data import PromptSet, load_builtin
from lowres_safety.generation import next_token_logprobs


def _own_axis_set(languages=("en", "de", "sw"), n=12, d=6, seed=0) -> ActivationSet:
    """Each language's harmful prompts shifted along its own axis (and a little along the next one)."""
    rng = np.random.default_rng(seed)
    rows, blocks = [], []
    for i, lang in enumerate(languages):
        shift = np.zeros(d)
        shift[i], shift[(i + 1) % d] = 3.0, 0.7
        for subset in ("harmful", "harmless"):
            x = rng.normal(size=(n, d)) + (shift if subset == "harmful" else 0)
            blocks.append(x)
            rows += [{"id": f"{lang}-{subset}-{j}", "text": "t", "language": lang, "subset": subset, "split": "x",
                      "source_id": f"{subset}-{j}"} for j in range(n)]
    x = torch.tensor(np.concatenate(blocks), dtype=torch.float32)[:, None, None]
    return ActivationSet(x, PromptSet(pd.DataFrame(rows), "planted"), (4,), ("t_post_inst",))


def test_transfer_matrix_scores_each_target_with_the_sources_direction():
    """Catches: every target scored with its own direction (off-diagonal cells near 1), source and target swapped
    (the planted directions are not symmetric), a direction left unnormalised or fitted on both languages."""
    acts = _own_axis_set()
    table = probing.transfer_matrix(acts, 4).set_index(["direction_language", "target_language"])["auroc"]
    frame, x = acts.prompts.frame, acts.acts[:, 0, 0].numpy()
    for source in ("en", "de", "sw"):
        own = (frame["language"] == source).to_numpy()
        harmful = (frame["subset"] == "harmful").to_numpy()
        v = x[own & harmful].mean(0) - x[own & ~harmful].mean(0)
        for target in ("en", "de", "sw"):
            there = (frame["language"] == target).to_numpy()
            expected = roc_auc_score(harmful[there], x[there] @ (v / np.linalg.norm(v)))
            assert table[source, target] == pytest.approx(expected, abs=1e-9)
    assert table["en", "en"] > 0.9 and table["en", "de"] < 0.85  # the planted structure is visible
    assert table["de", "en"] != pytest.approx(table["en", "de"], abs=1e-3)  # not symmetric: swapping shows


def test_dose_response_columns_are_the_log_odds_they_come_from(default_model):
    """Catches: the refusal columns from the wrong subset, ``>=`` for ``>``, a missing ×100, or KL on the harmful
    prompts: each column recomputed from a plain hooked pass and the refusal log-odds."""
    prompts = load_builtin(["en", "sw"], n_per_class=3)
    frame = prompts.frame
    base = next_token_logprobs(default_model, prompts, (), batch_size=3)
    # the "refusal" tokens: the base model's own first choices on the harmful prompts, so rates differ by subset
    tokens = sorted({int(i) for row in base[(frame["subset"] == "harmful").to_numpy()] for i in row.topk(10).indices})
    torch.manual_seed(1)
    v = torch.randn(default_model.cfg.d_model)
    layer, alphas = 4, [0.0, 40.0]
    dose = D.dose_response(default_model, prompts, v, [layer], alphas, tokens, batch_size=3, progress=False)
    for alpha in alphas:
        hooks = [] if alpha == 0 else H.add(v, alpha, [layer], scope="all")
        logp = next_token_logprobs(default_model, prompts, hooks, batch_size=3)
        lo = judges.refusal_log_odds(logp, prompts, tokens).numpy()
        kl = (base.exp() * (base - logp)).sum(-1).clamp_min(0).numpy()
        got = dose[dose["alpha"] == alpha].set_index("language")
        for lang in ("en", "sw"):
            harmful = ((frame["language"] == lang) & (frame["subset"] == "harmful")).to_numpy()
            harmless = ((frame["language"] == lang) & (frame["subset"] == "harmless")).to_numpy()
            assert got.loc[lang, "harmful_refusal"] == pytest.approx(100 * np.mean(lo[harmful] > 0))
            assert got.loc[lang, "harmless_refusal"] == pytest.approx(100 * np.mean(lo[harmless] > 0))
            assert got.loc[lang, "mean_log_odds_harmful"] == pytest.approx(lo[harmful].mean(), abs=2e-3)
            assert got.loc[lang, "kl_harmless"] == pytest.approx(kl[harmless].mean(), abs=2e-3)
    zero = dose[dose["alpha"] == 0]
    assert (zero["harmful_refusal"] != zero["harmless_refusal"]).any()  # the subsets can be told apart here


def test_alpha_at_half_is_the_hand_interpolation():
    """Catches: interpolating on the wrong side of the crossing, taking the last crossing, or reading ``level``
    as a share: 20 → 60 between α 1 and 2 crosses 50 at α = 1.75."""
    dose = pd.DataFrame({"language": ["sw"] * 4 + ["en"] * 3 + ["yo"] * 2, "layer": [3] * 9,
                         "alpha": [0.0, 1.0, 2.0, 3.0, 0.0, 1.0, 2.0, 0.0, 1.0],
                         "harmful_refusal": [0.0, 20.0, 60.0, 70.0, 55.0, 70.0, 90.0, 10.0, 20.0]})
    out = D.alpha_at_half(dose).set_index("language")["alpha_at_50"]
    assert out["sw"] == pytest.approx(1.75)
    assert out["en"] == 0.0  # already past 50 at the smallest alpha
    assert np.isnan(out["yo"])
