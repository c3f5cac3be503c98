"""The portable fix: saved and loaded, it routes exactly as the fitted method did, and only on its own model."""

import json

import pytest
import torch
from helpers import build_model

import lowres_safety as ls
from lowres_safety.activations import extract
from lowres_safety.data import load_builtin
from lowres_safety.methods import GateRouting, NoIntervention, Target
from lowres_safety.pipelines import steering

LAYER = 1


@pytest.fixture(scope="module")
def fitted():
    model = build_model("qwen2")
    prompts = load_builtin(["en", "de", "sw"], n_per_class=6)
    acts = extract(model, prompts, "all", ("t_post_inst",), cache=False, progress=False)
    f = steering.fit_methods(model, acts.where(language=["en", "de"]), ["en", "de"], layer=LAYER, lam=3.0,
                             methods=(NoIntervention, GateRouting))
    routing = f.methods["gate"]
    sw = acts.where(language="sw")
    routing.gate_for(Target("sw", sw, sw), 2)
    return model, prompts.where(language="sw"), routing, Target("sw", sw, sw)


def test_a_saved_fix_routes_exactly_as_the_fitted_method(fitted, tmp_path):
    """Catches: a gate, threshold, direction or α lost or changed on the way to disk and back (the loaded hooks
    would decide or steer some prompt differently), or the language's recalibrated gate swapped for the source
    gate."""
    model, prompts, routing, target = fitted
    fix = ls.Fix.from_routing(routing, model)
    assert sorted(fix.gates) == ["source", "sw-k2"]
    loaded = ls.load_fix(fix.save(tmp_path / "fix"))
    meta = json.loads((tmp_path / "fix" / "fix.json").read_text())
    assert meta["layer"] == LAYER and meta["model"]["weights"] == fix.model["weights"]
    for k in (0, 2):
        before = ls.generate(model, prompts, routing.hooks(target, k), max_new_tokens=4,
                             progress=False)
        after = ls.generate(model, prompts, loaded.hooks(model, "sw", k), max_new_tokens=4, progress=False)
        assert before["completion"].tolist() == after["completion"].tolist()
        torch.testing.assert_close(torch.tensor(after["gate_score"].tolist()), torch.tensor(before["gate_score"].tolist()))
        assert before["ablated"].tolist() == after["ablated"].tolist()
    assert loaded.gate("sw").threshold_ == routing.gate_for(target, 2).threshold_
    assert loaded.gate("sw").threshold_ != loaded.gate().threshold_  # the recalibration moved it: the test can see a swap


def test_a_fix_refuses_another_model(fitted, tmp_path):
    """Catches: a fix hooked into a model it was not fitted on — same architecture, other weights included."""
    model, _, routing, _ = fitted
    fix = ls.load_fix(ls.Fix.from_routing(routing, model).save(tmp_path / "fix"))
    for other in (build_model("qwen2", seed=1), build_model("llama")):
        with pytest.raises(ValueError, match="this fix was fitted on"):
            fix.hooks(other, "sw")
    with pytest.raises(FileNotFoundError, match="no fix.json"):
        ls.load_fix(tmp_path)
    with pytest.raises(KeyError, match="k=\\[2\\]"):
        fix.gate("sw", 4)
