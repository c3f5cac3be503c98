"""The gate: reproducible fitting, hand-checked recalibration, persistence, bad input, PolyRefuse recovery."""

import numpy as np
import pandas as pd
import pytest
import torch

from lowres_safety import extract
from lowres_safety.activations import ActivationSet
from lowres_safety.data import PromptSet, load_polyrefuse
from lowres_safety.gate import Gate, sample_per_class


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


def test_same_seed_gives_the_same_gate_bit_for_bit():
    acts = planted()
    a = Gate(seed=3).fit(acts, 3, source_languages=["en", "de"])
    b = Gate(seed=3).fit(acts, 3, source_languages=["en", "de"])
    for name in ("basis_", "mean_", "scale_", "coef_"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert a.threshold_ == b.threshold_ and a.intercept_ == b.intercept_
    assert a.rank_ == 2  # two source languages span at most two axes


def test_the_gate_reads_the_planted_axis():
    acts = planted()
    gate = Gate().fit(acts, 3, source_languages=["en", "de"])
    assert abs(float(gate.basis_[0, 0])) > 0.9
    assert gate.balanced_accuracy(acts.where(language="en")) > 0.95


def test_recalibration_sets_the_threshold_at_the_midpoint_of_class_means():
    acts = planted(shift={"sw": -2.0})  # sw sits lower on the axis: the source threshold calls it harmless
    gate = Gate().fit(acts, 3, source_languages=["en", "de"])
    sw = acts.where(language="sw")
    shots = sample_per_class(sw, 4, seed=1)
    raw = gate.raw_logits(shots).numpy()
    y = shots.prompts.labels
    tuned = gate.recalibrate(sw, 4, seed=1)
    assert tuned.threshold_ == pytest.approx((raw[y == 1].mean() + raw[y == 0].mean()) / 2)
    assert torch.equal(tuned.basis_, gate.basis_) and torch.equal(tuned.coef_, gate.coef_)
    assert gate.language_ is None and tuned.language_ == "sw" and tuned.k_ == 4
    assert tuned.balanced_accuracy(sw) > gate.balanced_accuracy(sw) + 0.2


def test_refit_changes_the_readout_but_not_the_subspace():
    acts = planted(shift={"sw": -2.0})
    gate = Gate().fit(acts, 3, source_languages=["en", "de"])
    sw = acts.where(language="sw")
    refit = gate.recalibrate(sw, 4, seed=1, refit=True, source=acts)
    assert torch.equal(refit.basis_, gate.basis_)
    assert not torch.equal(refit.coef_, gate.coef_)
    with pytest.raises(ValueError, match="source"):
        gate.recalibrate(sw, 4, refit=True)


def test_save_and_load_round_trip(tmp_path):
    acts = planted()
    gate = Gate(rank=2, seed=5).fit(acts, 3, source_languages=["en", "de"]).recalibrate(acts.where(language="sw"), 2)
    loaded = Gate.load(gate.save(tmp_path / "gate.safetensors"))
    assert torch.equal(loaded.margin(acts), gate.margin(acts))
    assert (loaded.language_, loaded.k_, loaded.layer_) == ("sw", 2, 3)


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
