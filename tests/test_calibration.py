"""Calibration-gap diagnostics against hand computations and synthetic ground truth."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from lowres_safety import calibration as C
from lowres_safety import dose_response as D
from lowres_safety import evaluation as E
from lowres_safety.data import load_builtin
from lowres_safety.directions import unit


def test_threshold_shift_recovers_a_known_shift():
    """Synthetic refusals with p50 = 1.0 in en and 3.5 in sw: the fitted shift is 2.5."""
    rng = np.random.default_rng(0)
    rows = []
    for lang, p50 in (("en", 1.0), ("de", 1.0), ("sw", 3.5)):
        x = rng.uniform(-4, 8, 3000)
        refused = rng.random(3000) < expit(2.0 * (x - p50))
        rows.append(pd.DataFrame({"language": lang, "projection": x, "refused": refused}))
    out = C.threshold_shift(pd.concat(rows), ["en", "de"]).set_index("language")
    assert out.loc["sw", "shift"] == pytest.approx(2.5, abs=0.15)
    assert out.loc["en", "shift"] == pytest.approx(0.0, abs=0.15)
    assert out["slope"].iloc[0] == pytest.approx(2.0, rel=0.15)


def test_threshold_shift_refuses_a_direction_that_does_not_drive_refusal():
    frame = pd.DataFrame({"language": "en", "projection": np.arange(10.0), "refused": np.arange(10) < 5})
    with pytest.raises(ValueError, match="does not rise"):
        C.threshold_shift(frame, ["en"])
    with pytest.raises(ValueError, match="both refused and answered"):
        C.threshold_shift(frame.assign(refused=False), ["en"])


def test_a_language_that_never_refuses_gets_a_finite_larger_threshold():
    rng = np.random.default_rng(1)
    x = rng.uniform(-3, 3, 400)
    frame = pd.concat([pd.DataFrame({"language": "en", "projection": x, "refused": x > 0}),
                       pd.DataFrame({"language": "yo", "projection": x, "refused": False})])
    out = C.threshold_shift(frame, ["en"]).set_index("language")
    assert np.isfinite(out.loc["yo", "p50"]) and out.loc["yo", "shift"] > 2


def _prompts(lang, separated, harmful_refused, harmless_refused, n=20):
    """``n`` + ``n`` prompts: projections separated (or interleaved), the first k of each class refused."""
    pos = np.arange(n) + (n if separated else 0.5)
    return pd.DataFrame({"language": lang, "subset": ["harmful"] * n + ["harmless"] * n,
                         "projection": np.r_[pos, np.arange(n)],
                         "refused": np.r_[np.arange(n) < harmful_refused, np.arange(n) < harmless_refused]})


def test_gap_table_labels_failure_types_in_either_direction_with_intervals():
    table = pd.concat([_prompts("en", True, 19, 0), _prompts("sw", True, 2, 0), _prompts("th", True, 20, 16),
                       _prompts("yo", False, 2, 0), _prompts("ar", True, 10, 0)])
    gap = C.gap_table(table, seed=0).set_index("language")
    assert gap.loc["en", "failure_type"] == "acted on" and gap.loc["en", "decided"]
    assert (gap.loc["sw", "failure_type"], gap.loc["sw", "failure_direction"]) == ("action failure", "under-refusal")
    assert (gap.loc["th", "failure_type"], gap.loc["th", "failure_direction"]) == ("action failure", "over-refusal")
    assert gap.loc["yo", "failure_type"] == "representation failure"
    assert gap.loc["yo", "auroc"] == pytest.approx(roc_auc_score(np.r_[np.ones(20), np.zeros(20)],
                                                                 _prompts("yo", False, 0, 0)["projection"]))
    assert gap.loc["sw", "action_gap"] == pytest.approx(95 - 10)  # the high-resource mean (en: 95%) minus sw's
    # 10 of 20 refused: the point says "acted on" (not under 50%), the interval reaches both sides
    assert gap.loc["ar", "failure_type"] == "acted on" and not gap.loc["ar", "decided"]
    assert gap.loc["ar", "harmful_low"] < 50 < gap.loc["ar", "harmful_high"]
    # perfectly separated and never refused: degenerate intervals
    assert gap.loc["sw", ["auroc_low", "auroc_high", "harmless_low", "harmless_high"]].tolist() == [1, 1, 0, 0]
    assert (gap["auroc_low"] <= gap["auroc"]).all() and (gap["auroc"] <= gap["auroc_high"]).all()
    assert C.gap_table(table, seed=0).equals(C.gap_table(table, seed=0))
    stricter = C.gap_table(table, auroc_threshold=1.01).set_index("language")
    assert (stricter["failure_type"] == "representation failure").all() and (stricter["auroc_threshold"] == 1.01).all()


def test_gap_table_rejects_a_language_without_both_classes():
    table = _prompts("en", True, 19, 0)
    with pytest.raises(ValueError, match="'en' needs harmful and harmless"):
        C.gap_table(table[table["subset"] == "harmful"])


def test_alpha_at_half_interpolates_the_first_crossing():
    dose = pd.DataFrame({"language": "sw", "layer": 3, "alpha": [0, 1, 2, 4], "harmful_refusal": [0, 20, 60, 100]})
    never = dose.assign(language="yo", harmful_refusal=[0, 0, 10, 40])
    out = D.alpha_at_half(pd.concat([dose, never])).set_index("language")
    assert out.loc["sw", "alpha_at_50"] == pytest.approx(1.75)
    assert np.isnan(out.loc["yo", "alpha_at_50"])


def test_loophole_rates_by_hand():
    comp = pd.DataFrame({
        "language": ["en"] * 4 + ["sw"] * 4, "subset": "harmful", "text": "x", "source_id": list("abcd") * 2,
        "completion": ["I'm sorry", "I'm sorry", "I'm sorry", "Sure", "Samahani", "Sure", "Sure", "Samahani"],
    })
    out = C.loophole_rates(comp).set_index("language")
    assert out.loc["sw", "n_pairs"] == 4 and out.loc["sw", "n_reference_refused"] == 3
    assert out.loc["sw", "loophole_rate"] == pytest.approx(200 / 3)  # b, c answered of a, b, c
    assert out.loc["sw", "reverse_rate"] == 100  # d: en answered, sw refused


def test_dose_response_at_zero_is_the_unsteered_model(default_model):
    prompts = load_builtin(["en", "sw"], n_per_class=2)
    tokens = E.first_token_ids(default_model.tokenizer, E.DEFAULT_OPENINGS)
    v = unit(torch.randn(default_model.cfg.d_model))
    dose = D.dose_response(default_model, prompts, v, [3], [0.0, 20.0], tokens, batch_size=4, progress=False)
    zero, strong = dose[dose["alpha"] == 0].set_index("language"), dose[dose["alpha"] == 20].set_index("language")
    score = E.refusal_score(default_model, prompts, tokens)
    for lang in ("en", "sw"):
        mask = (prompts.frame["language"] == lang) & (prompts.frame["subset"] == "harmful")
        assert zero.loc[lang, "mean_log_odds_harmful"] == pytest.approx(float(score[np.flatnonzero(mask)].mean()), abs=1e-4)
        assert zero.loc[lang, "kl_harmless"] == pytest.approx(0.0, abs=1e-6)
        assert strong.loc[lang, "kl_harmless"] > 1e-3
    assert set(dose.columns) >= {"harmful_refusal", "harmless_refusal", "kl_harmless", "n_harmful"}


def test_dose_response_scope_matters_only_before_the_last_layer(default_model):
    """At the last layer only the last position reaches the next-token logits, so "all" and
    "from_last" agree there; at an early layer the added prompt positions feed attention."""
    prompts = load_builtin(["en"], n_per_class=2)
    tokens = E.first_token_ids(default_model.tokenizer, E.DEFAULT_OPENINGS)
    v = unit(torch.randn(default_model.cfg.d_model))
    last = default_model.cfg.n_layers - 1
    def run(scope):
        return D.dose_response(default_model, prompts, v, [2, last], [30.0], tokens, scope=scope,
                                            batch_size=4, progress=False).set_index("layer")
    every, final = run("all"), run("from_last")
    cols = ["mean_log_odds_harmful", "kl_harmless"]
    np.testing.assert_allclose(every.loc[last, cols].astype(float), final.loc[last, cols].astype(float), rtol=1e-4,
                               atol=1e-5)
    assert abs(every.loc[2, "kl_harmless"] - final.loc[2, "kl_harmless"]) > 1e-3


def test_rate_interval_matches_scipys_percentile_bootstrap_and_collapses_on_a_constant():
    from scipy.stats import bootstrap

    refused = np.r_[np.ones(5, bool), np.zeros(11, bool)]
    rate, low, high = C.rate_interval(refused, n_boot=20000)
    reference = bootstrap((100 * refused.astype(float),), np.mean, n_resamples=20000, method="percentile",
                          random_state=1).confidence_interval
    assert rate == pytest.approx(100 * 5 / 16)
    assert low == pytest.approx(reference.low, abs=3.2)
    assert high == pytest.approx(reference.high, abs=3.2)  # half a prompt: 1 of 16 is 6.25
    assert C.rate_interval(np.ones(16, bool)) == (100.0, 100.0, 100.0)
    with pytest.raises(ValueError, match="non-empty"):
        C.rate_interval([])


def _brute_ceiling(score, harmful, max_misrouted):
    """Reference: every cut between sorted distinct scores (and none), rates counted by hand."""
    best = 0.0
    for t in np.r_[np.unique(score), np.inf]:
        routed = score >= t
        fpr, tpr = routed[~harmful].mean(), routed[harmful].mean()
        if fpr <= max_misrouted + 1e-12:
            best = max(best, 100 * (tpr - fpr))
    return best


def test_selectivity_ceiling_is_the_best_allowed_threshold_by_hand_and_by_brute_force():
    score = np.array([5, 4, 3, 1, 3.5, 0, -1, -2])
    harmful = np.r_[np.ones(4, bool), np.zeros(4, bool)]
    # nothing misrouted: cut above 3.5, two of four harmful routed; one misrouted: cut at 1, 4/4 − 1/4
    assert C.selectivity_ceiling(score, harmful, max_misrouted=0.0)[0] == 50.0
    assert C.selectivity_ceiling(score, harmful, max_misrouted=0.25)[0] == 75.0
    rng = np.random.default_rng(3)
    for _ in range(20):
        harmful = rng.random(30) < 0.5
        harmful[:2] = True, False
        score = np.round(rng.normal(size=30) + 1.2 * harmful, 1)  # rounded: ties across classes too
        budgets = [0.0, 0.05, 0.2, 1.0]
        ceilings = [C.selectivity_ceiling(score, harmful, max_misrouted=f, n_boot=10)[0] for f in budgets]
        assert ceilings == pytest.approx([_brute_ceiling(score, harmful, f) for f in budgets])
        assert ceilings == sorted(ceilings)  # a larger budget never lowers the ceiling


def test_selectivity_ceiling_interval_brackets_it_and_collapses_on_perfect_separation():
    rng = np.random.default_rng(0)
    harmful = np.r_[np.ones(16, bool), np.zeros(16, bool)]
    score = rng.normal(size=32) + 1.5 * harmful
    ceiling, low, high = C.selectivity_ceiling(score, harmful, max_misrouted=0.1, n_boot=500)
    assert low <= ceiling <= high and high - low > 10
    assert C.selectivity_ceiling(harmful * 2.0, harmful, max_misrouted=0.0) == (100.0, 100.0, 100.0)
    with pytest.raises(ValueError, match="both classes"):
        C.selectivity_ceiling(np.ones(4), np.ones(4, bool), max_misrouted=0.0)


def test_misrouting_budget_solves_the_mean_kl_by_hand():
    # f·11 + (1 − f)·0.1 = 0.3  ->  f = 0.2 / 10.9
    assert C.misrouting_budget(0.3, 11.0, 0.1) == pytest.approx(0.2 / 10.9)
    assert C.misrouting_budget(0.3, 11.0, 0.45) == 0.0  # correctly routed prompts alone exceed the budget
    assert C.misrouting_budget(20.0, 11.0, 0.1) == 1.0
    with pytest.raises(ValueError):
        C.misrouting_budget(0.3, 0.1, 0.2)


def test_the_ceiling_is_zero_where_the_erased_organism_cannot_read_a_language(polyrefuse_root):
    """organism-erased reads every Korean prompt as the same input: no threshold on v̂ routes anything apart,
    so even an oracle gains nothing (a representation failure); Arabic, untouched, keeps a high ceiling."""
    import lowres_safety as ls
    from lowres_safety.organisms.ground_truth import GroundTruth
    from lowres_safety.shipped import organism_folder

    model = ls.load_model("organism-erased")
    truth = GroundTruth.load(organism_folder("organism-erased"))
    prompts = ls.data.load_polyrefuse(polyrefuse_root, ["ar", "ko"], split="test", n_per_class=8, seed=0)
    score = truth.project(ls.extract(model, prompts, [truth.layer], ("t_post_inst",), progress=False))
    harmful, ceiling = (prompts.frame.subset == "harmful").to_numpy(), {}
    for lang in ("ar", "ko"):
        here = (prompts.frame.language == lang).to_numpy()
        ceiling[lang] = C.selectivity_ceiling(score[here], harmful[here], max_misrouted=1.0, n_boot=50)
    assert ceiling["ko"] == (0.0, 0.0, 0.0)
    assert ceiling["ar"][0] >= 50
