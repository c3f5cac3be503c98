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
