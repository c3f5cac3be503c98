"""Few-shot recoverability and cross-lingual transfer on real PolyRefuse activations."""

import numpy as np
import pytest

from lowres_safety import directions as dirs
from lowres_safety import probing, recoverability
from lowres_safety.activations import extract
from lowres_safety.data import load_polyrefuse
from lowres_safety.gate import Gate

LAYER = 15


@pytest.fixture(scope="module")
def acts(default_model, polyrefuse_root):
    prompts = load_polyrefuse(polyrefuse_root, ["en", "de", "fr"], split="train", n_per_class=24, seed=0)
    return extract(default_model, prompts, [LAYER], ("t_post_inst",), progress=False)


def test_controls_behave_on_polyrefuse_english(acts):
    """Direction and gate beat the random direction; the permuted-label probe stays near chance."""
    source = ["de", "fr"]
    v = dirs.pooled(acts, source)
    gate = Gate(seed=0).fit(acts, LAYER, "t_post_inst", source)
    rec = recoverability.recoverability(acts.where(language="en"), v, gate, budgets=(2, 4, 8), seeds=(0, 1, 2, 3))
    mean = rec.groupby("method")["balanced_accuracy"].mean()
    assert mean["direction"] > mean["random_direction"] + 0.15
    assert mean["gate"] > mean["random_direction"] + 0.15
    assert abs(mean["permuted_probe"] - 0.5) < 0.12
    assert set(rec["budget"]) == {2, 4, 8} and (rec["n_eval"] == 24).all()  # 12 held out per class
    # the direction's AUROC does not depend on the budget, only its threshold does
    assert rec[rec["method"] == "direction"].groupby("seed")["auroc"].nunique().max() == 1


def test_budgets_beyond_the_pool_are_skipped_and_bad_holdouts_refused(acts):
    v = dirs.pooled(acts, ["de"])
    gate = Gate(seed=0).fit(acts, LAYER, "t_post_inst", ["de"])
    rec = recoverability.recoverability(acts.where(language="fr"), v, gate, budgets=(4, 64), seeds=(0,))
    assert set(rec["budget"]) == {4}
    assert set(rec["method"]) == set(recoverability.RECOVERY_METHODS)
    with pytest.raises(ValueError, match="no calibration prompts"):
        recoverability.recoverability(acts.where(language="fr"), v, gate, n_eval=24)


def test_transfer_matrix_diagonal_is_each_languages_own_auroc(acts):
    tm = probing.transfer_matrix(acts, LAYER)
    assert len(tm) == 9
    for lang in ("en", "de", "fr"):
        sub = acts.where(language=lang)
        own = probing.auroc(probing.project(sub, dirs.diff_of_means(sub)).numpy()[:, :, 0], sub.prompts.labels)[0]
        got = tm[(tm["direction_language"] == lang) & (tm["target_language"] == lang)]["auroc"].iloc[0]
        assert got == pytest.approx(float(own))
    assert tm["auroc"].between(0, 1).all() and np.isfinite(tm["auroc"]).all()


def _planted(n=16, d=6, seed=0):
    """Source languages en, de around 0 on axis 0; the target sw shifted +6 on it: separable but miscalibrated."""
    import pandas as pd
    import torch

    from lowres_safety.activations import ActivationSet
    from lowres_safety.data import PromptSet

    rng = np.random.default_rng(seed)
    rows, xs = [], []
    for lang, shift in (("en", 0.0), ("de", 0.0), ("sw", 6.0)):
        for subset, sign in (("harmful", 1.0), ("harmless", -1.0)):
            x = rng.normal(size=(n, d))
            x[:, 0] += sign * 2.0 + shift
            xs.append(x)
            rows += [{"id": f"{lang}-{subset}-{j}", "text": "t", "language": lang, "subset": subset, "split": "x",
                      "source_id": f"{subset}-{j}"} for j in range(n)]
    acts = ActivationSet(torch.tensor(np.concatenate(xs), dtype=torch.float32)[:, None, None],
                         PromptSet(pd.DataFrame(rows), "planted"), (LAYER,), ("t_post_inst",))
    return acts


def test_the_split_holds_out_n_eval_per_class_and_calibrates_on_the_rest_nested():
    """Catches: calibration examples drawn from the held-out prompts, or budgets that are not nested."""
    labels = np.repeat([1, 0, 1, 0], [7, 9, 3, 4])
    order, test = recoverability.recovery_split(labels, 4, np.random.default_rng(3))
    assert sorted(order[1]) == list(np.flatnonzero(labels == 1)) and sorted(order[0]) == list(np.flatnonzero(labels == 0))
    assert len(test) == 8 and set(labels[test[:4]]) == {0} and set(labels[test[4:]]) == {1}
    for b in range(1, 7):  # the smaller class has 10, 4 of them held out
        calib = np.concatenate([order[c][:b] for c in (0, 1)])
        assert not set(calib) & set(test)
        assert set(np.concatenate([order[c][:b - 1] for c in (0, 1)])) <= set(calib)


def test_each_method_equals_a_hand_computation_on_its_split():
    """Catches: calibration examples overlapping the held-out prompts, an un-recalibrated gate (the shifted target
    needs a new threshold), a direction thresholded at 0 instead of the class midpoint, or a probe fitted on the
    held-out prompts. Each value is recomputed from the split with numpy and scikit-learn."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    acts = _planted()
    v = dirs.pooled(acts, ["en", "de"])
    gate = Gate(seed=0).fit(acts, LAYER, "t_post_inst", ["en", "de"])
    target = acts.where(language="sw")
    rec = recoverability.recoverability(target, v, gate, budgets=(1, 3, 8), seeds=(0, 1), n_eval=6)
    x, y = target.at(LAYER, "t_post_inst").double().numpy(), target.prompts.labels
    u = v[0, 0].double().numpy() / np.linalg.norm(v[0, 0].double().numpy())
    proj = x @ u
    for seed in (0, 1):
        order, test = recoverability.recovery_split(y, 6, np.random.default_rng(seed))
        for b in (1, 3, 8):
            calib = np.concatenate([order[c][:b] for c in (0, 1)])
            got = rec[(rec["seed"] == seed) & (rec["budget"] == b)].set_index("method")["balanced_accuracy"]
            cut = (proj[calib][y[calib] == 1].mean() + proj[calib][y[calib] == 0].mean()) / 2
            assert got["direction"] == pytest.approx(balanced_accuracy_score(y[test], proj[test] > cut))
            probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[calib], y[calib])
            assert got["target_probe"] == pytest.approx(
                balanced_accuracy_score(y[test], probe.decision_function(x[test]) > 0))
            ids = target.prompts.frame["id"].iloc[calib].tolist()
            recalibrated = gate.recalibrate(target.where(id=ids), b, seed=seed)
            assert got["gate"] == pytest.approx(
                balanced_accuracy_score(y[test], recalibrated.predict(target.at(LAYER, "t_post_inst")[test]).numpy()))
    # the shift is what makes these checks bite: unrecalibrated, the gate and a threshold at 0 call everything harmful
    assert balanced_accuracy_score(y, gate.predict(target.at(LAYER, "t_post_inst")).numpy()) == 0.5
    assert balanced_accuracy_score(y, proj > 0) == 0.5
    assert rec[rec["method"].isin(["direction", "gate"])]["balanced_accuracy"].mean() > 0.8
