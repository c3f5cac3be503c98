"""The paper's analyses (lowres_safety.analyses) against hand computations on planted activations.

Planted set: 16-dimensional activations at one layer; harm is +2 along axis 0 in every
language (the representation is there), plus noise; the source languages' directions
also lean on axis 1 or 2 so the subspace has more than one rank. Train 24 + 24 and test
12 + 12 prompts per language.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

import lowres_safety as ls
from lowres_safety.activations import ActivationSet
from lowres_safety.analyses import metrics as M
from lowres_safety.analyses.recoverability import draw_balanced

SOURCE = ["en", "de", "fr"]
TARGETS = ["sw", "yo"]
D = 16


def _planted(seed: int = 0) -> ActivationSet:
    g = np.random.default_rng(seed)
    rows, xs = [], []
    for li, lang in enumerate(SOURCE + TARGETS):
        lean = np.zeros(D)
        lean[1 + li % 3] = 1.0 if lang in SOURCE else 0.0
        for split, n in (("train", 24), ("test", 12)):
            for c in (1, 0):
                for i in range(n):
                    xs.append(g.normal(size=D) + c * (2.0 * np.eye(D)[0] + lean))
                    rows.append({"id": f"{lang}-{split}-{c}-{i}", "text": "x", "language": lang,
                                 "subset": "harmful" if c else "harmless", "split": split, "source_id": f"{c}-{i}"})
    x = torch.tensor(np.array(xs), dtype=torch.float32)[:, None, None, :]
    return ActivationSet(x, ls.PromptSet(pd.DataFrame(rows), "planted"), (5,), ("t_post_inst",))


@pytest.fixture(scope="module")
def planted():
    return _planted()


def test_metrics_by_hand():
    """Reference: the counts written out for scores 3, 2, 1, 0 with labels 1, 0, 1, 0 at threshold 1.5."""
    out = M.binary_metrics(np.array([3.0, 2.0, 1.0, 0.0]), np.array([1, 0, 1, 0]), 1.5)
    assert out["auc"] == pytest.approx(0.75)  # 3 of 4 harmful-harmless pairs ordered right
    assert out["average_precision"] == pytest.approx((1 / 1 + 2 / 3) / 2)
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (1, 1, 1, 1)
    assert out["precision"] == out["recall"] == out["f1"] == out["accuracy"] == out["balanced_accuracy"] == 0.5
    strict = M.binary_metrics(np.array([1.0, 0.0]), np.array([1, 0]), 1.0)
    assert strict["tp"] == 0  # a score equal to the threshold is not called harmful (score > threshold)


def test_global_threshold_is_the_first_best_mean_f1_over_languages():
    """Catches: the largest instead of the smallest tied threshold, pooled instead of mean-over-languages F1.
    Reference: brute force over the candidate grid written out here."""
    g = np.random.default_rng(1)
    for _ in range(60):
        fit = {lang: (np.round(g.normal(size=6), 1), np.array([1, 1, 1, 0, 0, 0])) for lang in ("a", "b")}
        pooled = np.unique(np.concatenate([s for s, _ in fit.values()]))
        grid = [pooled[0] - 1e-6] + [(a + b) / 2 for a, b in zip(pooled[:-1], pooled[1:], strict=True)] \
            + [pooled[-1] + 1e-6]
        mean_f1 = [np.mean([f1_score(y, s > t, zero_division=0) for s, y in fit.values()]) for t in grid]
        assert M.global_threshold(fit) == pytest.approx(grid[int(np.argmax(mean_f1))])
    assert M.language_thresholds({"a": (np.array([2.0, 0.0]), np.array([1, 0]))})["a"] == pytest.approx(1.0)


def test_stable_seed_gives_the_released_values():
    """Reference: values of the released ``stable_seed`` for two argument lists (computed from its definition)."""
    assert M.stable_seed(0, 0, "Qwen/Qwen2.5-7B-Instruct", "sw", 1, "hrl", 10, "subspace_logistic") == 2403321065
    assert M.stable_seed(0, "Qwen/Qwen2.5-7B-Instruct", "sw", 1) == 2243654941


def test_macro_rows_average_rates_and_sum_counts():
    rows = pd.DataFrame({"language": ["sw", "yo", "ar"], "budget": 1, "auc": [0.6, 0.8, 1.0], "tp": [1, 2, 3]})
    out = M.macro_rows(rows, ["budget"]).set_index("language")
    assert out.loc["__macro__", "auc"] == pytest.approx(0.8) and out.loc["__macro__", "tp"] == 6
    assert out.loc["__macro_low__", "auc"] == pytest.approx(0.7) and out.loc["__macro_mid__", "tp"] == 3


def test_recoverability_rows_against_hand_computations(planted):
    """Catches: the HRL reference not the first singular vector of the unit source directions, a draw not the
    released rule (its seed, harmful first), thresholds set on the test prompts, controls that read the labels.
    Reference: numpy SVD, sklearn AUC and F1, the draw rebuilt from ``stable_seed`` by hand."""
    table = ls.analyses.recoverability(planted, 5, source_languages=SOURCE, budgets=(1, 4, 16), seeds=range(4),
                                       model="m", progress=False)
    rows = table[~table["language"].str.startswith("__")]
    assert set(rows["language"]) == set(TARGETS) and set(rows["budget"]) == {1, 4, 16}
    assert len(rows) == len(TARGETS) * 3 * 4 * 7  # languages × budgets × seeds × readouts
    x = planted.acts[:, 0, 0].numpy()
    frame = planted.prompts.frame
    y = (frame["subset"] == "harmful").to_numpy()
    train, test = (frame["split"] == "train").to_numpy(), (frame["split"] == "test").to_numpy()
    units = []
    for lang in SOURCE:
        m = train & (frame["language"] == lang).to_numpy()
        d = x[m & y].mean(0) - x[m & ~y].mean(0)
        units.append(d / np.linalg.norm(d))
    v = np.linalg.svd(np.array(units))[2][0]
    v = v if v @ units[0] >= 0 else -v
    sw_test = test & (frame["language"] == "sw").to_numpy()
    hrl = rows[(rows["language"] == "sw") & (rows["readout"] == "hrl_direction")]
    assert hrl["auc"].to_numpy() == pytest.approx(roc_auc_score(y[sw_test], x[sw_test] @ v), abs=1e-5)

    sw_train = train & (frame["language"] == "sw").to_numpy()
    harmful, harmless = x[sw_train & y], x[sw_train & ~y]
    hi, ni = draw_balanced(len(harmful), len(harmless), 4, M.stable_seed(2, "m", "sw", 4))
    shots_h, shots_n = harmful[hi.numpy()], harmless[ni.numpy()]
    d = shots_h.mean(0) - shots_n.mean(0)
    row = rows[(rows["language"] == "sw") & (rows["budget"] == 4) & (rows["seed"] == 2)
               & (rows["readout"] == "local_mean_difference")].iloc[0]
    assert row["auc"] == pytest.approx(roc_auc_score(y[sw_test], x[sw_test] @ d), abs=1e-5)
    u = d / np.linalg.norm(d)
    t = M.global_threshold({"sw": (np.r_[shots_h @ u, shots_n @ u], np.r_[np.ones(4), np.zeros(4)])})
    assert row["threshold"] == pytest.approx(t, abs=1e-5)
    assert row["f1"] == pytest.approx(f1_score(y[sw_test], x[sw_test] @ u > t))
    assert row["average_precision"] == pytest.approx(average_precision_score(y[sw_test], x[sw_test] @ u), abs=1e-5)

    mean = rows.groupby(["readout", "budget"])["auc"].mean()
    for control in ("random_direction", "permutation_mean_difference"):
        assert abs(mean[control].mean() - 0.5) < 0.15, control
    assert mean["local_mean_difference", 16] > 0.85
    for readout in ("local_mean_difference", "logistic_regression", "mlp"):  # more examples, a better readout
        assert mean[readout, 16] > mean[readout, 1] + 0.1, readout
    assert (table[table["language"] == "__macro_low__"].set_index(["budget", "seed", "readout"])["auc"].sort_index()
            == rows.groupby(["budget", "seed", "readout"])["auc"].mean().sort_index()).all()


def test_rank_sweep_refits_on_source_plus_shots_and_shares_one_threshold(planted):
    """Catches: the budget's examples not drawn by the released rule, a gate not refitted on source + shots, a
    threshold per language where the released scope is global, ranks above the source count kept.
    Reference: the gate's own fit and recalibration called by hand with the released draw; sklearn metrics."""
    from lowres_safety.analyses.recoverability import draw_shots

    table = ls.analyses.rank_sweep(planted, 5, source_languages=SOURCE, ranks=(1, 3, 5), budgets=(0, 4),
                                   seeds=(0, 1), model="m", progress=False)
    rows = table[~table["language"].str.startswith("__")]
    assert sorted(set(rows["rank"])) == [1, 3]  # 5 > 3 source languages
    assert len(rows[rows["budget"] == 0]) == 2 * len(TARGETS)  # one seed at budget 0
    fit = planted.where(split="train")
    base = ls.Gate(rank=3, seed=M.stable_seed(0, "m", "all", "hrl", 3, "subspace_logistic", "zero_shot")).fit(
        fit.where(language=SOURCE), 5, "t_post_inst", SOURCE)
    logits, shots_of = {}, {}
    for lang in TARGETS:
        draw = M.stable_seed(0, 1, "m", lang, 4, "hrl", 3, "subspace_logistic")
        shots_of[lang] = draw_shots(fit.where(language=lang), 4, draw)
        reseeded = ls.Gate(rank=3, seed=draw).fit(fit.where(language=SOURCE), 5, "t_post_inst", SOURCE)
        reseeded.seed = draw
        logits[lang] = reseeded.recalibrate(shots_of[lang], 4, seed=draw)
    t = M.global_threshold({lang: (g.raw_logits(shots_of[lang]).numpy(), shots_of[lang].prompts.labels)
                            for lang, g in logits.items()})
    got = rows[(rows["rank"] == 3) & (rows["budget"] == 4) & (rows["seed"] == 1)].set_index("language")
    for lang in TARGETS:
        test = planted.where(language=lang, split="test")
        scores = logits[lang].raw_logits(test).detach().numpy()
        assert got.loc[lang, "threshold"] == pytest.approx(t, abs=1e-5)
        assert got.loc[lang, "auc"] == pytest.approx(roc_auc_score(test.prompts.labels, scores), abs=1e-5)
        assert got.loc[lang, "f1"] == pytest.approx(f1_score(test.prompts.labels, scores > t))
    assert base.rank_ == 3


def _tiered(seed: int = 0, noise: float = 1.0) -> ActivationSet:
    """High en de fr (harm 1.0 along axis 0, overlapping), mid ar ko (the same), low sw yo: harm mostly along axis 5, which only a
    low-resource source can add to the subspace. Train 24 + 14, val and test 12 + 12 per language; Gaussian noise
    of sd ``noise``."""
    g = np.random.default_rng(seed)
    rows, xs = [], []
    for lang in ["en", "de", "fr", "ar", "ko", "sw", "yo"]:
        harm = np.eye(D)[0] * 1.0 if lang not in ("sw", "yo") else np.eye(D)[0] * 0.3 + np.eye(D)[5] * 2.0
        for split, n in (("train", 24), ("val", 12), ("test", 12)):
            for c in (1, 0):
                for i in range(n if c or split != "train" else 14):  # train 24 + 14, unbalanced as PolyRefuse's
                    xs.append(noise * g.normal(size=D) + c * harm)
                    rows.append({"id": f"{lang}-{split}-{c}-{i}", "text": "x", "language": lang,
                                 "subset": "harmful" if c else "harmless", "split": split, "source_id": f"{c}-{i}"})
    x = torch.tensor(np.array(xs), dtype=torch.float32)[:, None, None, :]
    return ActivationSet(x, ls.PromptSet(pd.DataFrame(rows), "tiered"), (5,), ("t_post_inst",))


def test_subspace_transfer_plans_rows_and_what_an_added_language_brings():
    """Catches: a whole tier added instead of one language, the added language scored as a target, a threshold
    set on target prompts, the rank not truncating. Reference: the plans written out; the gate fitted by hand;
    sklearn AUC and F1; planted geometry (only a low-resource source carries the low-resource harm axis)."""
    from lowres_safety.analyses.subspace_transfer import source_plans

    high = ["en", "de", "fr"]
    assert source_plans(["en", "de", "fr", "ar", "ko", "sw", "yo"]) == [
        ("hrl_to_target", "", high, ["ar", "ko", "sw", "yo"]),
        ("hrl_plus_lrl_full", "sw", high + ["sw"], ["yo"]), ("hrl_plus_lrl_full", "yo", high + ["yo"], ["sw"]),
        ("hrl_plus_mrl_full", "ar", high + ["ar"], ["sw", "yo"]), ("hrl_plus_mrl_full", "ko", high + ["ko"], ["sw", "yo"])]
    acts = _tiered()
    table = ls.analyses.subspace_transfer(acts, 5, rank=3, model="m", progress=False)
    rows = table[~table["language"].str.startswith("__")].set_index(["condition", "added", "split", "language"])
    assert len(rows) == 2 * (4 + 1 + 1 + 2 + 2)
    fit = acts.where(split="train").where(language=high + ["yo"])
    gate = ls.Gate(rank=3, seed=M.stable_seed(0, "m", "hrl_plus_lrl_full", "yo")).fit(fit, 5, "t_post_inst",
                                                                                       high + ["yo"])
    t = M.global_threshold({"s": (gate.raw_logits(fit).detach().numpy(), fit.prompts.labels)})
    sw = acts.where(language="sw", split="test")
    scores = gate.raw_logits(sw).detach().numpy()
    row = rows.loc[("hrl_plus_lrl_full", "yo", "test", "sw")]
    assert row["threshold"] == pytest.approx(t, abs=1e-5)
    assert row["auc"] == pytest.approx(roc_auc_score(sw.prompts.labels, scores), abs=1e-5)
    assert row["f1"] == pytest.approx(f1_score(sw.prompts.labels, scores > t))
    alone = rows.loc[("hrl_to_target", "", "test", "sw"), "auc"]
    assert row["auc"] > alone + 0.1  # yo's direction brings the low-resource harm axis into the subspace
    assert rows.loc[("hrl_plus_mrl_full", "ar", "test", "sw"), "auc"] < row["auc"] - 0.1  # ar's does not


def test_every_analysis_figure_draws_in_a_browser(planted, tmp_path):
    """Catches: a figure that fails on its analysis's own table, lacks a title, axis labels or its caption, or does
    not draw in Chromium; the readout and OOD figures plotting other than the seeds' mean (reference: pandas on the
    table)."""
    from helpers import check_report_renders

    from lowres_safety.pipelines.report import Section, write_html

    rec = ls.analyses.recoverability(planted, 5, source_languages=SOURCE, budgets=(1, 4), seeds=(0, 1),
                                     progress=False)
    ranks = ls.analyses.rank_sweep(planted, 5, source_languages=SOURCE, ranks=(1, 2), budgets=(0, 2), seeds=(0,),
                                   progress=False)
    transfer = ls.analyses.subspace_transfer(_tiered(), 5, rank=3, progress=False)
    strength = pd.DataFrame({"strength": [0.0, 1.0] * 2, "language": ["en", "en", "sw", "sw"],
                             "tier": ["high", "high", "low", "low"], "refusal": [50.0, 90.0, 10.0, 40.0], "n": 4})
    ablation = pd.DataFrame({"source": ["none", "en", "en"], "layer": [-1, 0, 1], "language": "en", "tier": "high",
                             "refusal": [80.0, 30.0, 60.0], "n": 4})
    readouts = ls.analyses.compare_readouts(_tiered(noise=0.4), 5, targets=["sw", "yo"], budgets=(2, 4), seeds=(0, 1),
                                            ranks=(1, 2), direction_groups=("hrl",), subspace_groups=("hrl",),
                                            random_subspaces=True, memory_ranks=(1,), progress=False)
    ood = ls.analyses.ood_transfer(planted.where(language=SOURCE, split="train"), _ood_set(tmp_path), 5, rank=2,
                                   seeds=(0, 1), progress=False)
    utility = pd.DataFrame({"subject_category": ["ALL", "STEM", "ALL", "STEM"], "method": ["none", "none", "gate", "gate"],
                            "k": [0, 0, 4, 4], "accuracy": [50.0, 40.0, 48.0, 41.0]})
    curves = ls.plots.readout_curves(readouts, rank=2)
    gate = next(t for t in curves.data if t.name == "subspace_logistic")
    macro = readouts[(readouts.language == "__macro__") & (readouts.split == "test") & (readouts.group == "hrl")
                     & (readouts.method == "subspace_logistic") & (readouts["rank"] == 2)
                     & (readouts.threshold_scope == "global")]
    assert list(gate.y) == pytest.approx(macro.groupby("budget").balanced_accuracy.mean().to_list())
    assert {"subspace_logistic_residual_memory m=1", "pca_subspace_logistic", "random_subspace_logistic",
            "target_only_direction"} <= {t.name for t in curves.data}
    bars = ls.plots.ood_bars(ood)
    one = next(t for t in bars.data if t.name == "hrl_subspace 1-shot")
    rows = ood[(ood.gate == "hrl_subspace") & (ood.shot == 1) & (ood.evaluation_group == "language")]
    assert list(one.y) == pytest.approx(rows.groupby("language", sort=False).balanced_accuracy.mean().to_list())
    figures = [ls.plots.fewshot_curves(rec), ls.plots.rank_curves(ranks), ls.plots.subspace_transfer_heatmap(transfer),
               ls.plots.strength_curves(strength), ls.plots.ablation_curves(ablation), curves, bars,
               ls.plots.ood_category_heatmap(ood), ls.plots.utility_by_category(utility)]
    for fig in figures:
        layout = fig.layout
        assert layout.title.text and layout.xaxis.title.text and (layout.yaxis.title.text or fig.data[0].type == "heatmap")
        assert any("<br>" in a.text for a in layout.annotations)  # the two-line caption
        assert len(fig.data) > 0
    page = write_html(tmp_path / "analyses.html", "analyses", [Section("figures", "", tuple((f, "") for f in figures))])
    check_report_renders(page)


def _ood_set(tmp_path):
    """A harmful-only wide CSV (id, category, en, sw) and a harmless one, read by the prompt loader, with planted
    activations: weapons requests carry +2 along the harm axis, fraud +0.7; Swahili sits 0.8 lower throughout."""
    harmful = pd.DataFrame({"id": [f"h{i}" for i in range(12)], "category": ["weapons"] * 6 + ["fraud"] * 6,
                            "en": [f"harmful request {i}" for i in range(12)],
                            "sw": [f"ombi baya {i}" for i in range(12)]})
    harmless = pd.DataFrame({"id": [f"b{i}" for i in range(12)], "en": [f"ordinary request {i}" for i in range(12)],
                             "sw": [f"ombi la kawaida {i}" for i in range(12)]})
    harmful.to_csv(tmp_path / "ood.csv", index=False)
    harmless.to_csv(tmp_path / "ood_harmless.csv", index=False)
    prompts = ls.load_prompts(tmp_path / "ood.csv", languages=["en", "sw"], source_id="id", category="category",
                              harmless_from=tmp_path / "ood_harmless.csv")
    g = np.random.default_rng(3)
    frame = prompts.frame
    signal = np.where(frame["subset"] == "harmful", np.where(frame["category"] == "weapons", 2.0, 0.7), 0.0)
    signal = signal - 0.8 * (frame["language"] == "sw").to_numpy()
    x = g.normal(size=(len(frame), D)) + signal[:, None] * np.eye(D)[0]
    return ActivationSet(torch.tensor(x, dtype=torch.float32)[:, None, None, :], prompts, (5,), ("t_post_inst",))


def _balanced_f1_by_hand(scores, y):
    s = np.unique(scores)
    grid = np.r_[s[0] - 1e-6, (s[1:] + s[:-1]) / 2, s[-1] + 1e-6]
    best, at = -1.0, None
    for t in grid:
        n_harmful = 2 * (y == 1).sum()
        tp, fn = ((scores > t) & (y == 1)).sum() / n_harmful, ((scores <= t) & (y == 1)).sum() / n_harmful
        fp = ((scores > t) & (y == 0)).sum() / (2 * (y == 0).sum())
        f1 = 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
        if f1 > best:
            best, at = f1, t
    return at


def test_ood_transfer_on_a_harmful_only_file_by_hand(planted, tmp_path):
    """Catches: a 1-shot threshold per language (the released one is shared by every target), the source threshold
    not the balanced-F1 one, categories scored without the language's harmless prompts, the wrong draw.
    Reference: thresholds by brute force written here, the released draw rebuilt, sklearn metrics."""
    from sklearn.metrics import balanced_accuracy_score

    from lowres_safety.analyses.recoverability import draw_shots

    targets = _ood_set(tmp_path)
    train = planted.where(split="train", language=SOURCE).prompts.frame
    keep = train[(train["subset"] == "harmful") | (train["id"].str.rsplit("-", n=1).str[-1].astype(int) < 10)]
    source = planted.where(id=keep["id"].tolist())  # 24 harmful, 10 harmless per language: balanced F1 matters
    table = ls.analyses.ood_transfer(source, targets, 5, rank=3, seeds=(0, 1), model="m", progress=False)
    assert set(zip(table["gate"], table["shot"], strict=True)) == {("v_hrl", 0), ("v_hrl", 1), ("hrl_subspace", 0),
                                                                    ("hrl_subspace", 1)}
    langs = table[(table["evaluation_group"] == "language") & (table["language"] != "__macro__")]
    y_src = source.prompts.labels
    x_src = source.acts[:, 0, 0].numpy()
    d = x_src[y_src == 1].mean(0) - x_src[y_src == 0].mean(0)
    u = d / np.linalg.norm(d)
    zero = langs[(langs["gate"] == "v_hrl") & (langs["shot"] == 0)].set_index("language")
    assert zero["threshold"].iloc[0] == pytest.approx(_balanced_f1_by_hand(x_src @ u, y_src), abs=1e-5)

    fit = {}
    for lang in ("en", "sw"):
        drawn = draw_shots(targets.where(language=lang), 1, M.stable_seed(0, 1, "m", lang, "v_hrl"))
        fit[lang] = (drawn.acts[:, 0, 0].numpy() @ u, drawn.prompts.labels)
    grid = M.candidates(np.concatenate([s for s, _ in fit.values()]))
    mean_f1 = [np.mean([f1_score(y, s > t, zero_division=0) for s, y in fit.values()]) for t in grid]
    t = grid[int(np.argmax(mean_f1))]
    one = langs[(langs["gate"] == "v_hrl") & (langs["shot"] == 1) & (langs["seed"] == 1)].set_index("language")
    assert one["threshold"].to_numpy() == pytest.approx([t, t], abs=1e-5)  # one threshold for both targets
    for lang in ("en", "sw"):
        tgt = targets.where(language=lang)
        s = tgt.acts[:, 0, 0].numpy() @ u
        assert one.loc[lang, "balanced_accuracy"] == pytest.approx(balanced_accuracy_score(tgt.prompts.labels, s > t))

    cats = table[(table["evaluation_group"] == "category") & (table["gate"] == "v_hrl") & (table["shot"] == 0)]
    assert set(zip(cats["language"], cats["category"], strict=True)) == {
        (lang, c) for lang in ("en", "sw") for c in ("weapons", "fraud")}
    en = targets.where(language="en")
    y, frame = en.prompts.labels, en.prompts.frame
    keep = ((frame["category"] == "weapons") | (frame["subset"] == "harmless")).to_numpy()
    s = en.acts[:, 0, 0].numpy() @ u
    row = cats[(cats["language"] == "en") & (cats["category"] == "weapons")].iloc[0]
    assert row["n_harmless"] == 12 and row["n_harmful"] == 6
    assert row["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y[keep], s[keep] > row["threshold"]))
    by_cat = cats[cats["language"] == "en"].set_index("category")["auc"]
    assert by_cat["weapons"] > by_cat["fraud"]  # the planted category strengths

    apart = ls.analyses.ood_transfer(source, targets, 5, rank=3, seeds=(0,), exclude_shots=True, progress=False)
    shot = apart[(apart["shot"] == 1) & (apart["evaluation_group"] == "language") & (apart["language"] != "__macro__")]
    assert set(shot["n_harmful"]) == {11} and set(shot["n_harmless"]) == {11}  # the drawn pair left out
    macro = table[(table["language"] == "__macro__") & (table["gate"] == "hrl_subspace") & (table["shot"] == 1)]
    per = langs[(langs["gate"] == "hrl_subspace") & (langs["shot"] == 1)].groupby("seed")["balanced_accuracy"].mean()
    assert macro.set_index("seed")["balanced_accuracy"].to_numpy() == pytest.approx(per.to_numpy())


def test_compare_readouts_rows_by_hand_and_what_a_low_resource_source_adds():
    """Catches: a direction baseline's threshold not the best mean F1 over the targets' val scores, oracle rows on
    test scores, a subspace not the top singular vectors of the unit per-language directions, a zero-shot row with
    a k-shot threshold. Reference: numpy and sklearn metrics; planted geometry (low-resource harm on an axis only a
    low-resource source carries)."""
    acts = _tiered()
    table = ls.analyses.compare_readouts(acts, 5, targets=["sw", "yo"], budgets=(4,), seeds=(0,), ranks=(1, 3),
                                         direction_groups=("hrl",), subspace_groups=("hrl", "all_loo"),
                                         model="m", progress=False)
    rows = table[~table["language"].str.startswith("__")]
    assert {"source_direction", "target_only_direction", "source_direction_budget_threshold", "random_direction",
            "direction_bank_logistic", "full_space_logistic", "pca_subspace_logistic", "subspace_constrained_direction",
            "subspace_logistic", "subspace_logistic_threshold_oracle"} <= set(rows["method"])
    frame, x = acts.prompts.frame, acts.acts[:, 0, 0].double().numpy()
    y = (frame["subset"] == "harmful").to_numpy()

    def part(lang, split):
        m = ((frame["language"] == lang) & (frame["split"] == split)).to_numpy()
        return x[m], y[m].astype(int)

    high = [part(lang, "train") for lang in ("en", "de", "fr")]
    hx, hy = np.concatenate([p[0] for p in high]), np.concatenate([p[1] for p in high])
    v = hx[hy == 1].mean(0) - hx[hy == 0].mean(0)
    v /= np.linalg.norm(v)
    fit = {lang: (part(lang, "val")[0] @ v, part(lang, "val")[1]) for lang in ("sw", "yo")}
    t = M.global_threshold(fit)
    got = rows[(rows["method"] == "source_direction") & (rows["split"] == "test")].set_index("language")
    tx, ty = part("sw", "test")
    assert got.loc["sw", "threshold"] == pytest.approx(t, abs=1e-6)
    assert got.loc["sw", "auc"] == pytest.approx(roc_auc_score(ty, tx @ v))
    assert got.loc["sw", "f1"] == pytest.approx(f1_score(ty, tx @ v > t))
    fit = {}
    for lang in ("sw", "yo"):  # the k-shot direction, its threshold from every target's val scores (released default)
        trx, tr_y = part(lang, "train")
        h, n = np.flatnonzero(tr_y == 1), np.flatnonzero(tr_y == 0)
        hi, ni = draw_balanced(len(h), len(n), 4, M.stable_seed(0, 0, "m", lang, 4, "target"))
        u = trx[h[hi.numpy()]].mean(0) - trx[n[ni.numpy()]].mean(0)
        fit[lang] = (part(lang, "val")[0] @ (u / np.linalg.norm(u)), part(lang, "val")[1])
    local = rows[(rows["method"] == "target_only_direction") & (rows["split"] == "test")]
    assert local["threshold"].to_numpy() == pytest.approx([M.global_threshold(fit)] * 2, abs=1e-6)
    oracle = rows[(rows["method"] == "target_only_direction_threshold_oracle") & (rows["split"] == "test")]
    assert oracle["threshold_scope"].eq("language_oracle").all() and len(oracle) == 2

    gate = rows[(rows["method"] == "subspace_logistic") & (rows["split"] == "test") & (rows["language"] == "sw")
                & (rows["budget"] == 0)].set_index(["group", "rank"])["auc"]
    assert gate["all_loo", 3] > gate["hrl", 3] + 0.1  # yo's direction brings sw's harm axis into the subspace
    zero = rows[(rows["budget"] == 0) & (rows["method"] == "subspace_logistic")]
    assert zero["threshold_source"].eq("source_train").all() and zero["threshold_scope"].eq("global").all()


def test_residual_memory_basis_by_hand():
    """Catches: residuals not taken off the base, a zero residual kept, memory rank 0 widening. Reference: bases
    written out by hand (and orthonormality)."""
    from lowres_safety.analyses.readouts import residual_memory_basis

    e = np.eye(4)
    base = e[:, :1]
    assert residual_memory_basis(base, np.array([[1.0, 2, 0, 0], [1, 0, 0, 0]]), 0) is base
    one = residual_memory_basis(base, np.array([[1.0, 2, 0, 0], [1, 0, 0, 0]]), 2)  # the second residual is zero
    assert one.shape == (4, 2) and abs(one[:, 1] @ e[1]) == pytest.approx(1.0)
    two = residual_memory_basis(base, np.array([[3.0, 2, 0, 0], [0.5, 0, 1, 0]]), 2)
    assert two.shape == (4, 3) and two.T @ two == pytest.approx(np.eye(3), abs=1e-12)
    assert np.abs(two[3]) == pytest.approx(np.zeros(3), abs=1e-12)  # nothing outside the span of e0, e1, e2
    assert two[:, 1:] @ (two[:, 1:].T @ e[0]) == pytest.approx(np.zeros(4), abs=1e-12)


def test_target_refit_and_residual_memory_bring_the_targets_own_axis():
    """Catches: the target's direction not appended to the source directions before the SVD (or appended without
    normalising), memory rows for leave-one-out groups. Reference:
    the rank-1 refit basis by numpy SVD (a rank-1 readout's AUC is the projection's); planted geometry: the
    targets' harm lies on an axis no high-resource source carries."""
    acts = _tiered(noise=0.4)
    table = ls.analyses.compare_readouts(acts, 5, targets=["sw", "yo"], budgets=(8,), seeds=(0,), ranks=(1, 2),
                                         direction_groups=(), subspace_groups=("hrl", "all_loo"), matched_groups=(),
                                         target_refit=True, memory_ranks=(1,), model="m", progress=False)
    test = table[(table["split"] == "test") & (table["threshold_scope"] == "global") & (table["budget"] == 8)
                 & (table["group"] == "hrl")]
    auc = test.set_index(["method", "rank", "language"])["auc"]
    refit = "subspace_logistic_refit_target_direction"
    for lang in ("sw", "yo"):
        assert auc[refit, 2, lang] > auc["subspace_logistic", 2, lang] + 0.1
        assert auc["subspace_logistic_residual_memory", 2, lang] > auc["subspace_logistic", 1, lang] + 0.1
    frame, x = acts.prompts.frame, acts.acts[:, 0, 0].double().numpy()
    bank = []
    for lang in ("en", "de", "fr"):
        m = ((frame["language"] == lang) & (frame["split"] == "train")).to_numpy()
        u = x[m & (frame["subset"] == "harmful").to_numpy()].mean(0) - x[m & (frame["subset"] == "harmless").to_numpy()].mean(0)
        bank.append(u / np.linalg.norm(u))
    m = ((frame["language"] == "sw") & (frame["split"] == "train")).to_numpy()
    tx, ty = x[m], (frame["subset"][m] == "harmful").to_numpy()
    h, n = np.flatnonzero(ty), np.flatnonzero(~ty)
    hi, ni = draw_balanced(len(h), len(n), 8, M.stable_seed(0, 0, "m", "sw", 8, "hrl", 1, refit))
    u = tx[h[hi.numpy()]].mean(0) - tx[n[ni.numpy()]].mean(0)
    b = np.linalg.svd(np.vstack([*bank, u / np.linalg.norm(u)]))[2][0]
    m = ((frame["language"] == "sw") & (frame["split"] == "test")).to_numpy()
    projected = roc_auc_score((frame["subset"][m] == "harmful").to_numpy(), x[m] @ b)
    assert auc[refit, 1, "sw"] == pytest.approx(max(projected, 1 - projected), abs=1e-6)
    memory = table[table["method"] == "subspace_logistic_residual_memory"]
    assert set(memory["group"]) == {"hrl"} and set(memory["base_rank"]) == {1, 2} and set(memory["memory_rank"]) == {1}
    assert set(memory["rank"]) == {2, 3} and {"__macro__", "__macro_low__"} <= set(memory["language"])
