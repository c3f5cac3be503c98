"""AdaSteer and CAST as the released code runs them: hand-computed coefficients and conditions, hook placement."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import build_model, chat_batch

from lowres_safety import hooks as H
from lowres_safety.activations import ActivationSet
from lowres_safety.data import PromptSet
from lowres_safety.methods import adasteer as A
from lowres_safety.methods import cast as C
from lowres_safety.presets import PRESETS, ClampedLinear, preset_for
from lowres_safety.shipped import adapter_dir


@pytest.fixture(scope="module")
def tiny():
    return build_model("qwen2")


def test_presets_are_the_released_codes_layers_and_match_names():
    assert {k: p.gate_layer for k, p in PRESETS.items()} == {
        "Qwen/Qwen2.5-7B-Instruct": 15, "google/gemma-2-9b-it": 20, "meta-llama/Llama-3.1-8B-Instruct": 10}
    assert preset_for("/models/Qwen2.5-7B-Instruct/").gate_layer == 15
    assert preset_for("meta-llama/llama-3.1-8b-instruct").gate_layer == 10
    shipped = json.loads((adapter_dir("organism") / "ground_truth.json").read_text())
    assert preset_for("organism").gate_layer == preset_for("x+organism").gate_layer == shipped["layer"]


def test_an_organism_with_a_ground_truth_gets_its_rule_layer_as_gate_layer(tmp_path):
    (tmp_path / "ground_truth.json").write_text('{"layer": 7, "threshold": 1.0, "gap": 2.0, "source": ["en"]}')
    assert preset_for(str(tmp_path)).gate_layer == 7
    assert "ground_truth.json" in preset_for(str(tmp_path)).source


def test_adasteer_coefficient_by_hand():
    """s = 100·(h − μa)·u/‖μb − μa‖, then clamp(slope·(s + offset) + bias): Llama-3.1's alpha rule."""
    mu_a, mu_b = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([4.0, 0.0, 3.0])  # ‖μb − μa‖ = 5
    h = torch.tensor([[2.0, 7.0, 1.5], [-1.0, 0.0, 0.0], [8.0, 1.0, 6.0]])
    s = A.scaled_distance(h, mu_a, mu_b)
    torch.testing.assert_close(s, torch.tensor([50.0, -16.0, 200.0]))  # (8+4.5)/25, −4/25, (32+18)/25 (×100)
    rule = PRESETS["meta-llama/Llama-3.1-8B-Instruct"].adasteer_alpha  # clamp(0.02(s+60), −0.22, −0.08)
    torch.testing.assert_close(rule(s), torch.tensor([-0.08, -0.08, -0.08]))
    torch.testing.assert_close(rule(torch.tensor([-70.0, -65.0])), torch.tensor([-0.2, -0.1]))
    beta = PRESETS["meta-llama/Llama-3.1-8B-Instruct"].adasteer_beta  # clamp(−0.05(s+5) − 0.5, min −0.75)
    torch.testing.assert_close(beta(torch.tensor([0.0, 100.0, -20.0])), torch.tensor([-0.75, -0.75, 0.25]))
    torch.testing.assert_close(ClampedLinear(2.0)(torch.tensor([1.5])), torch.tensor([3.0]))  # no bounds


def _planted_all_layers(model, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    layers = model.cfg.n_layers
    y = np.array([1] * n + [0] * n)
    x = torch.randn(2 * n, layers, 1, model.cfg.d_model, generator=g)
    x[y == 1] += 2.0
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(2 * n)], "text": "x", "language": "en",
                          "subset": np.where(y == 1, "harmful", "harmless"), "split": "demo",
                          "source_id": [f"s{i}" for i in range(2 * n)]})
    return ActivationSet(x, PromptSet(frame, "planted"), tuple(range(layers)), ("t_post_inst",))


def _capture_all(model, store):
    def grab(layer):
        def fn(act, hook):
            store.setdefault(layer, []).append(act.detach().clone())
            return act
        return fn
    return [(f"blocks.{l}.hook_resid_post", grab(l)) for l in range(model.cfg.n_layers)]


def test_adasteer_steers_every_layer_on_generated_tokens_only(tiny):
    acts = _planted_all_layers(tiny)
    vectors = A.AdaSteerVectors.from_acts(acts)
    torch.testing.assert_close(vectors.rd[1], acts.acts[:6, 1, 0].mean(0) - acts.acts[6:, 1, 0].mean(0))
    alpha, beta = ClampedLinear(0.0, bias=0.3), ClampedLinear(0.0, bias=0.2)  # constant coefficients
    ids, mask = chat_batch(tiny, ["Hello there", "How to bake bread?"])
    base, steered = {}, {}
    with torch.no_grad():
        for hooks, store in (([], base), (A.adasteer_hooks(vectors, 0, alpha, 1, beta), steered)):
            with tiny.hooks(fwd_hooks=hooks + _capture_all(tiny, store)):
                _, cache = tiny(ids, attention_mask=mask, return_type="logits_and_cache")
                with H.decoding():
                    tiny(torch.tensor([[9], [9]]), attention_mask=torch.cat([mask, torch.ones(2, 1, dtype=mask.dtype)], 1),
                         past_key_values=cache)
    torch.testing.assert_close(steered[0][0], base[0][0])  # prefill untouched at every position
    # decode step at layer 0: exactly (α + β)·RD[0] added (earlier layers feed nothing else into it)
    torch.testing.assert_close(steered[0][1] - base[0][1], 0.5 * vectors.rd[0].expand(2, 1, -1), atol=1e-4, rtol=0)


def test_cast_condition_and_pairwise_pc_by_hand():
    h = torch.tensor([[3.0, 4.0], [1.0, -1.0]])
    c = torch.tensor([1.0, 0.0])
    expected = []
    for row in h:
        t = torch.tanh((row @ c) / (c @ c) * c)
        expected.append(float(row @ t / (row.norm() * t.norm())))
    torch.testing.assert_close(C.condition_similarity(h, c), torch.tensor(expected))  # 0.6 and cos 45°
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.randn(10, 5, generator=g) + 1.0, torch.randn(12, 5, generator=g)
    mid = (pos[:10] + neg[:10]) / 2
    rows = torch.cat([pos[:10] - mid, neg[:10] - mid]).double().numpy()
    top = np.linalg.svd(rows, full_matrices=False)[2][0]
    v = C.pairwise_pc(pos, neg).double().numpy()
    assert abs(abs(v @ top) - 1) < 1e-6  # the top right-singular vector of the pair-centred rows
    assert (pos.double().numpy() @ v).mean() > (neg[:10].double().numpy() @ v).mean()  # oriented to harmful


def test_cast_grid_search_takes_the_first_strict_optimum():
    y = np.array([1, 1, 0, 0])
    sims = {3: np.array([0.01, 0.02, 0.05, 0.04]),   # "larger" (fires below τ) separates for τ in (0.02, 0.04]
            5: np.array([0.05, 0.06, 0.0, 0.01])}    # "smaller" separates too, but layer 3 comes first
    rule = C.select_condition(sims, y)
    assert (rule.layer, rule.comparator, rule.f1) == (3, "larger", 1.0)
    assert rule.threshold == pytest.approx(0.0201)  # the lowest τ that fires on both harmful prompts


def test_cast_adds_strength_times_the_unit_behaviour_vector_where_the_condition_fires(tiny):
    ids, mask = chat_batch(tiny, ["Hello there", "How to bake bread?", "Hi"])
    c = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(1))
    seen = {}
    with torch.no_grad(), tiny.hooks(fwd_hooks=_capture_all(tiny, seen)):
        tiny(ids, attention_mask=mask)
    sims = C.condition_similarity(seen[0][0].float().mean(1), c)  # the released code's unmasked mean
    tau = float(sims.median())
    fire = (sims > tau).numpy()
    assert 0 < fire.sum() < 3
    b = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(2))
    hooks = C.cast_hooks(c, C.CastRule(0, tau, "smaller", 1.0), {2: b})
    after = {}
    with torch.no_grad(), tiny.hooks(fwd_hooks=_capture_all(tiny, after) + hooks):
        tiny(ids, attention_mask=mask)
    # the capture hook runs before CAST's at layer 2, so compare layer 2 outputs by re-adding
    with torch.no_grad(), tiny.hooks(fwd_hooks=hooks + _capture_all(tiny, after)):
        tiny(ids, attention_mask=mask)
    delta = after[2][1] - after[2][0]
    expected = torch.zeros_like(delta)
    expected[torch.from_numpy(fire)] = 1.5 * b / b.norm()
    torch.testing.assert_close(delta, expected, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="before the behaviour"):
        C.cast_hooks(c, C.CastRule(2, tau, "smaller", 1.0), {1: b})


def test_vectorised_grid_search_equals_the_released_loop():
    """Reference: the released loop, strict improvement over layer, τ, comparator, with scikit-learn's F1."""
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30)
    sims = {layer: rng.uniform(-0.01, 0.07, 30) for layer in (1, 2, 3)}
    taus = C.THRESHOLDS[::20]
    best = (-1.0, None)
    for layer in sorted(sims):
        for tau in taus:
            for comparator in C.COMPARATORS:
                fire = sims[layer] < tau if comparator == "larger" else sims[layer] > tau
                f1 = f1_score(y, fire, zero_division=0)
                if f1 > best[0]:
                    best = (f1, (layer, float(tau), comparator))
    rule = C.select_condition(sims, y, taus)
    assert (rule.layer, rule.threshold, rule.comparator) == best[1] and rule.f1 == pytest.approx(best[0])
