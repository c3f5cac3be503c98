"""The gate: reproducible fitting, hand-checked recalibration, persistence, bad input, PolyRefuse recovery."""

import copy

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score, f1_score

from lowres_safety import extract
from lowres_safety.activations import ActivationSet
from lowres_safety.data import PromptSet, load_polyrefuse
from lowres_safety.gate import READOUTS, Gate, balanced_f1_threshold, sample_per_class


def planted(n=40, d=16, languages=("en", "de", "sw"), shift=None, seed=0):
    """Activations with a planted harmfulness axis; ``shift`` moves a language along it."""
    g = torch.Generator().manual_seed(seed)
    axis = torch.zeros(d)
    axis[0] = 1.0
    rows, acts = [], []
    for lang in languages:
        for subset, sign in (("harmful", 1), ("harmless", -1)):
            x = torch.randn(n, d, generator=g) * 0.5 + sign * 1.5 * axis + (shift or {}).get(lang, 0.0) * axis
            acts.append(x)
            rows += [{"id": f"{lang}-{subset}-{i}", "text": "x", "language": lang, "subset": subset, "split": "demo",
                      "source_id": f"{subset}-{i}"} for i in range(n)]
    prompts = PromptSet(pd.DataFrame(rows), "planted")
    return ActivationSet(torch.cat(acts)[:, None, None], prompts, (3,), ("t_post_inst",))


@pytest.mark.parametrize("readout", ["paper", "lbfgs"])
def test_same_seed_gives_the_same_gate_bit_for_bit(readout):
    acts = planted()
    a = Gate(seed=3, readout=readout).fit(acts, 3, source_languages=["en", "de"])
    b = Gate(seed=3, readout=readout).fit(acts, 3, source_languages=["en", "de"])
    for name in ("basis_", "mean_", "scale_", "coef_"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.threshold_ == b.threshold_ and a.intercept_ == b.intercept_
    assert a.rank_ == 2  # rank=None: every source direction


def test_the_basis_is_the_svd_of_unit_per_language_directions():
    """A language with a huge raw direction must not dominate: the released code normalises first."""
    acts = planted(shift={})
    big = acts.acts.clone()
    de = torch.from_numpy(acts.prompts.mask(language="de"))
    big[de] *= 50.0
    acts = ActivationSet(big, acts.prompts, acts.layers, acts.positions)
    gate = Gate().fit(acts, 3, source_languages=["en", "de"])
    x, lang = acts.acts[:, 0, 0].double(), acts.prompts.frame["language"].to_numpy()
    y = acts.prompts.labels.astype(bool)
    units = []
    for code in ("en", "de"):
        d = x[(lang == code) & y].mean(0) - x[(lang == code) & ~y].mean(0)
        units.append(d / d.norm())
    _, _, vh = np.linalg.svd(torch.stack(units).numpy(), full_matrices=False)
    assert np.allclose(np.abs(gate.basis_.numpy() @ vh.T), np.eye(2), atol=1e-5)


def test_a_rank_above_the_number_of_source_languages_is_an_error():
    acts = planted()
    with pytest.raises(ValueError, match="rank 3 exceeds the 2 source directions"):
        Gate(rank=3).fit(acts, 3, source_languages=["en", "de"])
    assert Gate(rank=1).fit(acts, 3, source_languages=["en", "de"]).basis_.shape == (1, 16)


def _reference_balanced_f1_threshold(scores, y):
    """Brute force with scikit-learn: F1 of the harmful class with each class weighted 0.5 / its size."""
    s = np.unique(scores)
    candidates = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
    w = np.where(y == 1, 0.5 / (y == 1).sum(), 0.5 / (y == 0).sum())
    f1 = [f1_score(y, scores > t, sample_weight=w, zero_division=0) for t in candidates]
    return candidates[int(np.argmax(f1))]


def test_threshold_search_is_the_released_codes_balanced_f1():
    rng = np.random.default_rng(0)
    for n_pos, n_neg in ((3, 12), (10, 4), (1, 1), (7, 7)):
        scores = np.concatenate([rng.normal(1, 1, n_pos), rng.normal(0, 1, n_neg)])
        y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
        assert balanced_f1_threshold(scores, y) == pytest.approx(_reference_balanced_f1_threshold(scores, y))
    # by hand: 2 harmless (0.1, 0.4) and 2 harmful (0.35, 0.8); the cut at 0.225 catches both harmful prompts
    assert balanced_f1_threshold(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.225)


def _released_threshold(harmful: torch.Tensor, harmless: torch.Tensor) -> float:
    """The released operation order, rewritten in torch: ``candidate_threshold_tensor``, ``f1_curve(class_balance=
    True)`` and the first ``argmax`` of ``select_global_threshold_for_objective("balanced_macro_f1")``."""
    values = torch.unique(torch.cat([harmful.flatten(), harmless.flatten()]).to(torch.float64)).sort().values
    thresholds = torch.cat([values[:1] - 1e-6, (values[:-1] + values[1:]) / 2.0, values[-1:] + 1e-6])
    pos, neg = harmful.to(torch.float64).sort().values, harmless.to(torch.float64).sort().values
    tp = pos.numel() - torch.searchsorted(pos, thresholds, right=True).to(torch.float64)
    fp = neg.numel() - torch.searchsorted(neg, thresholds, right=True).to(torch.float64)
    fn = torch.full_like(tp, float(pos.numel())) - tp
    tp, fn, fp = tp * (0.5 / pos.numel()), fn * (0.5 / pos.numel()), fp * (0.5 / neg.numel())
    precision = torch.where(tp + fp > 0, tp / (tp + fp), torch.zeros_like(tp))
    recall = torch.where(tp + fn > 0, tp / (tp + fn), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2.0 * precision * recall / denom, torch.zeros_like(denom))
    return float(thresholds[int(torch.argmax(f1))])


def test_threshold_ties_are_broken_as_the_released_code_breaks_them():
    """Catches: the closed form 2·TPR / (1 + TPR + FPR), which rounds tied F1 values differently and then puts the
    threshold below every example (everything to addition) where the released code picks an interior one.
    Weak separation (d' = 0.5) at every budget k = 1..64 makes ties common; every draw must match exactly."""
    rng = np.random.default_rng(0)
    closed_form_differs = 0
    for k in (1, 2, 4, 8, 16, 32, 64):
        for _ in range(300):
            harmful = torch.tensor(rng.normal(0.5, 1.0, k), dtype=torch.float32)
            harmless = torch.tensor(rng.normal(0.0, 1.0, k), dtype=torch.float32)
            scores, y = torch.cat([harmful, harmless]).numpy(), np.r_[np.ones(k, int), np.zeros(k, int)]
            assert balanced_f1_threshold(scores, y) == _released_threshold(harmful, harmless), (k, scores)
            s = np.unique(scores.astype(np.float64))
            candidates = np.concatenate([[s[0] - 1e-6], (s[:-1] + s[1:]) / 2, [s[-1] + 1e-6]])
            above = scores.astype(np.float64)[None, :] > candidates[:, None]
            tpr, fpr = above[:, y == 1].mean(1), above[:, y == 0].mean(1)
            closed_form_differs += candidates[int(np.argmax(2 * tpr / (1 + tpr + fpr)))] != _released_threshold(
                harmful, harmless)
    assert closed_form_differs > 0  # the draws do contain the ties that tell the two apart


def test_the_paper_readout_is_80_adamw_steps_from_a_xavier_start():
    """Reference: the same training written with torch.nn modules (Linear, BCEWithLogitsLoss)."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=(30, 4)).astype(np.float32)
    y = (z[:, 0] + 0.3 * rng.normal(size=30) > 0.4).astype(int)
    coef, intercept = READOUTS["paper"](z, y, 7, 1.0)
    lin = torch.nn.Linear(4, 1)
    with torch.no_grad():
        torch.nn.init.xavier_uniform_(lin.weight, generator=torch.Generator().manual_seed(7))
        lin.bias.zero_()
    opt = torch.optim.AdamW(lin.parameters(), lr=0.05, weight_decay=0.01)
    t = torch.tensor(y, dtype=torch.float32)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([(y == 0).sum() / (y == 1).sum()]))
    for _ in range(80):
        opt.zero_grad()
        loss_fn(lin(torch.from_numpy(z))[:, 0], t).backward()
        opt.step()
    assert np.allclose(coef, lin.weight.detach()[0].numpy(), atol=1e-6)
    assert intercept == pytest.approx(float(lin.bias.detach()[0]), abs=1e-6)
    converged, _ = READOUTS["lbfgs"](z, y, 7, 1.0)
    assert not np.allclose(coef, converged, atol=1e-2)  # 80 steps stop short of the optimum


def test_the_gate_reads_the_planted_axis():
    acts = planted()
    gate = Gate().fit(acts, 3, source_languages=["en", "de"])
    assert abs(float(gate.basis_[0, 0])) > 0.9
    assert gate.balanced_accuracy(acts.where(language="en")) > 0.95


def test_a_logit_at_the_threshold_is_harmful():
    acts = planted()
    gate = Gate().fit(acts, 3, source_languages=["en", "de"])
    x = acts.at(3, "t_post_inst")[:3]
    gate.threshold_ = float(gate.raw_logits(x)[0])
    assert bool(gate.predict(x)[0])  # the released code's decision is logit >= threshold


def test_threshold_recalibration_keeps_the_readout_and_searches_the_threshold():
    acts = planted(shift={"sw": -2.0})  # sw sits lower on the axis: the source threshold calls it harmless
    gate = Gate().fit(acts, 3, source_languages=["en", "de"])
    sw = acts.where(language="sw")
    shots = sample_per_class(sw, 4, seed=1)
    tuned = gate.recalibrate(sw, 4, seed=1, method="threshold")
    assert tuned.threshold_ == pytest.approx(balanced_f1_threshold(gate.raw_logits(shots).numpy(),
                                                                   shots.prompts.labels))
    assert torch.equal(tuned.basis_, gate.basis_) and torch.equal(tuned.coef_, gate.coef_)
    assert gate.language_ is None and tuned.language_ == "sw" and tuned.k_ == 4 and tuned.method_ == "threshold"
    assert tuned.balanced_accuracy(sw) > gate.balanced_accuracy(sw) + 0.2


def test_paper_recalibration_refits_on_source_plus_target_then_searches():
    acts = planted(shift={"sw": -2.0})
    gate = Gate().fit(acts, 3, source_languages=["en", "de"])
    sw = acts.where(language="sw")
    shots = sample_per_class(sw, 4, seed=1)
    refit = gate.recalibrate(sw, 4, seed=1)  # method="paper" is the default
    assert torch.equal(refit.basis_, gate.basis_)
    reference = copy.deepcopy(gate)
    src = acts.where(language=["en", "de"])
    z = torch.cat([src.at(3, "t_post_inst"), shots.at(3, "t_post_inst")]) @ gate.basis_.T
    reference._fit_readout(z, np.concatenate([src.prompts.labels, shots.prompts.labels]))
    assert torch.allclose(refit.coef_, reference.coef_, atol=1e-6) and not torch.equal(refit.coef_, gate.coef_)
    assert refit.threshold_ == pytest.approx(balanced_f1_threshold(refit.raw_logits(shots).numpy(),
                                                                   shots.prompts.labels))
    assert refit.balanced_accuracy(sw) > gate.balanced_accuracy(sw) + 0.2
    with pytest.raises(ValueError, match="unknown recalibration"):
        gate.recalibrate(sw, 4, method="midpoint")


@pytest.mark.parametrize("method", ["paper", "threshold"])
def test_inverted_class_means_do_not_invert_every_decision(method):
    """When the k target harmful examples score below the harmless ones, a midpoint rule flips every call."""
    acts = planted()
    frame = acts.prompts.frame.copy()
    sw = frame["language"] == "sw"
    frame.loc[sw, "subset"] = frame.loc[sw, "subset"].map({"harmful": "harmless", "harmless": "harmful"})
    acts = ActivationSet(acts.acts, PromptSet(frame, "planted, sw inverted"), acts.layers, acts.positions)
    gate = Gate().fit(acts, 3, source_languages=["en", "de"])
    target = acts.where(language="sw")
    shots = sample_per_class(target, 1, seed=0)
    raw, y = gate.raw_logits(shots).numpy(), shots.prompts.labels
    assert raw[y == 1][0] < raw[y == 0][0]
    midpoint = raw.mean()
    flipped = balanced_accuracy_score(target.prompts.labels, gate.raw_logits(target).numpy() > midpoint)
    assert flipped < 0.1
    tuned = gate.recalibrate(target, 1, seed=0, method=method)
    assert bool(tuned.predict(shots).all())  # both examples called harmful: the lowest candidate wins
    assert tuned.balanced_accuracy(target) > flipped + 0.2


def test_save_and_load_round_trip(tmp_path):
    acts = planted()
    gate = Gate(rank=2, seed=5).fit(acts, 3, source_languages=["en", "de"]).recalibrate(acts.where(language="sw"), 2)
    loaded = Gate.load(gate.save(tmp_path / "gate.safetensors"))
    assert torch.equal(loaded.margin(acts), gate.margin(acts))
    assert (loaded.language_, loaded.k_, loaded.layer_, loaded.method_) == ("sw", 2, 3, "paper")
    again = [g.recalibrate(acts.where(language="sw"), 3, seed=4) for g in (gate, loaded)]
    assert torch.equal(again[0].coef_, again[1].coef_) and again[0].threshold_ == again[1].threshold_


def test_bad_input_is_refused():
    acts = planted()
    gate = Gate().fit(acts, 3, source_languages=["en", "de"])
    sw = acts.where(language="sw")
    with pytest.raises(ValueError, match="k=41"):
        gate.recalibrate(sw, 41)
    with pytest.raises(ValueError, match="one class"):
        gate.recalibrate(sw.where(subset="harmful"), 1)
    with pytest.raises(ValueError, match="one language"):
        gate.recalibrate(acts, 1)
    other = ActivationSet(acts.acts, acts.prompts, (5,), ("t_post_inst",))
    with pytest.raises(ValueError, match="fitted at layer 3"):
        gate.margin(other)
    with pytest.raises(ValueError, match="width"):
        gate.margin(torch.randn(4, 9))
    with pytest.raises(ValueError, match="not in the activations"):
        Gate().fit(acts, 3, source_languages=["fr"])
    with pytest.raises(RuntimeError, match="not fitted"):
        Gate().margin(torch.randn(2, 16))


def test_recalibration_helps_a_target_language_on_polyrefuse(default_model, polyrefuse_root):
    """k = 4 per class is at least as good as the source threshold on held-out target prompts."""
    layer, source = 15, ["en", "de", "fr", "zh"]
    src = load_polyrefuse(polyrefuse_root, source, split="train", n_per_class=24, seed=0)
    pool = load_polyrefuse(polyrefuse_root, ["ar"], split="train", n_per_class=12, seed=1)
    held = load_polyrefuse(polyrefuse_root, ["ar"], split="test", n_per_class=24, seed=2)
    a, p, h = (extract(default_model, s, [layer], ("t_post_inst",), progress=False) for s in (src, pool, held))
    gate = Gate(seed=0).fit(a, layer, "t_post_inst", source)
    k0 = gate.balanced_accuracy(h)
    k4 = [gate.recalibrate(p, 4, seed=s).balanced_accuracy(h) for s in range(5)]
    assert np.mean(k4) >= k0
