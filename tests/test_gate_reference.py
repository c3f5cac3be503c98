"""``Gate.fit`` end to end against an independent reimplementation of the released recipe.

The reference is written from the released code's description (``probe_evaluation.py``:
``subspace_basis``, ``fit_logistic_probe``, ``f1_curve``), not from ``gate.py``: numpy's SVD
of the unit per-language directions, a population-std standardiser, ``torch.nn.Linear`` with
``BCEWithLogitsLoss(pos_weight)`` and AdamW for 80 steps, and a brute-force balanced-F1
threshold through scikit-learn's weighted ``f1_score``. The data are unbalanced and unequally
scaled, so a wrong standardiser, a missing ``pos_weight`` or a threshold left at 0 all move
the result.
"""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import f1_score

from lowres_safety.activations import ActivationSet
from lowres_safety.data import PromptSet
from lowres_safety.gate import Gate

SIZES = {"en": (30, 18), "de": (20, 26), "sw": (25, 15)}  # (harmful, harmless): unbalanced
SCALES = np.array([1.0, 10.0, 0.1, 3.0, 0.5, 5.0, 1.0, 2.0])  # unequally scaled features
LAYER = 7


def _planted(seed=0):
    rng = np.random.default_rng(seed)
    rows, xs = [], []
    for i, (lang, (n_harmful, n_harmless)) in enumerate(SIZES.items()):
        shift = np.zeros(len(SCALES))
        shift[i], shift[3] = 1.5, 0.8  # a shared axis and one of the language's own
        for subset, n in (("harmful", n_harmful), ("harmless", n_harmless)):
            xs.append((rng.normal(size=(n, len(SCALES))) + (shift if subset == "harmful" else 0) + 0.4) * SCALES)
            rows += [{"id": f"{lang}-{subset}-{j}", "text": "t", "language": lang, "subset": subset, "split": "x",
                      "source_id": f"{lang}-{subset}-{j}"} for j in range(n)]
    x = torch.tensor(np.concatenate(xs), dtype=torch.float32)[:, None, None]
    return ActivationSet(x, PromptSet(pd.DataFrame(rows), "planted"), (LAYER,), ("t_post_inst",))


def _reference(acts: ActivationSet, basis_signs_from: torch.Tensor, rank: int, seed: int):
    frame = acts.prompts.frame
    x = acts.acts[:, 0, 0].double().numpy()
    y = (frame["subset"] == "harmful").to_numpy()
    units = []
    for lang in SIZES:
        own = (frame["language"] == lang).to_numpy()
        d = x[own & y].mean(0) - x[own & ~y].mean(0)
        units.append(d / np.linalg.norm(d))
    _, _, vh = np.linalg.svd(np.stack(units), full_matrices=False)
    basis = vh[:rank]
    signs = np.sign(np.sum(basis * basis_signs_from.double().numpy(), axis=1))  # an SVD's rows are defined up to sign
    basis = basis * signs[:, None]
    z = x @ basis.T
    mean, std = z.mean(0), np.maximum(z.std(0), 1e-6)  # population std
    zt = torch.tensor((z - mean) / std, dtype=torch.float32)
    t = torch.tensor(y, dtype=torch.float32)
    linear = torch.nn.Linear(rank, 1)
    with torch.no_grad():
        torch.nn.init.xavier_uniform_(linear.weight, generator=torch.Generator().manual_seed(seed))
        linear.bias.zero_()
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([(1 - t).sum() / t.sum()]))
    opt = torch.optim.AdamW(linear.parameters(), lr=0.05, weight_decay=0.01)
    for _ in range(80):
        opt.zero_grad()
        loss_fn(linear(zt)[:, 0], t).backward()
        opt.step()
    with torch.no_grad():
        logits = linear(zt)[:, 0].double().numpy()
    values = np.unique(logits)
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    weights = np.where(y, 1 / y.sum(), 1 / (~y).sum())
    scores = [f1_score(y, logits > c, sample_weight=weights, zero_division=0) for c in candidates]
    return basis, logits, float(candidates[int(np.argmax(scores))])


@pytest.mark.parametrize("rank", [3, 2])
def test_gate_fit_equals_an_independent_reimplementation_of_the_released_recipe(rank):
    acts = _planted()
    gate = Gate(rank=rank, seed=4).fit(acts, LAYER, source_languages=list(SIZES))
    basis, logits, threshold = _reference(acts, gate.basis_, rank, seed=4)
    np.testing.assert_allclose(gate.basis_.double().numpy(), basis, atol=1e-5)
    np.testing.assert_allclose(gate.raw_logits(acts).double().numpy(), logits, atol=1e-4)
    assert gate.threshold_ == pytest.approx(threshold, abs=1e-4)
    assert abs(gate.threshold_) > 0.05  # pinned where it lies, not at a convenient 0
    assert (gate.predict(acts).numpy() == (logits >= threshold)).all()
